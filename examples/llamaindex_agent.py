"""LlamaIndex agents on confroute, fully offline: a FunctionAgent (and a ReActAgent) with two tools.

The bundled 0.5B model writes the tool calls; a malformed or unsure one escalates to the bundled
1.5B model. Each step's routing decision is printed. After a tool's result the 0.5B does not
write the answer: it echoes the call (escalated as ``repeated_tool_call``) or starts another
call and runs out of tokens (``malformed_tool_call``), so the 1.5B writes the answer from the
result. The system prompt tells the models to answer once a tool has answered (without it the
1.5B, too, calls a tool again).

With ``--react`` a ReActAgent runs too. The 0.5B cannot follow ReAct's text protocol: it copies
the argument names of the prompt's format example, the tool call fails, and it answers from the
error; use a larger local model for ReAct.

Run: python examples/llamaindex_agent.py            (FunctionAgent)
     python examples/llamaindex_agent.py --react    (ReActAgent too: slower, fails with the 0.5B)
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from llama_index.core.agent.workflow import FunctionAgent, ReActAgent, ToolCallResult
from llama_index.core.instrumentation import (  # type: ignore[attr-defined]
    get_dispatcher,  # re-exported without __all__, which strict mypy treats as private
)
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.tools import FunctionTool

from llamaindex_confroute import ConfRouteLLM, RoutingDecisionEvent

STOCK = {"apples": 42, "pears": 17, "plums": 0}
PRICES = {"apples": 0.5, "pears": 0.8, "plums": 1.2}


def stock_level(fruit: str) -> int:
    """How many units of a fruit (apples, pears or plums) are in stock."""
    return STOCK.get(fruit.lower().rstrip("s") + "s", 0)


def unit_price(fruit: str) -> float:
    """Price in euro of one unit of a fruit (apples, pears or plums)."""
    return PRICES.get(fruit.lower().rstrip("s") + "s", 0.0)


TOOLS = [FunctionTool.from_defaults(fn=stock_level), FunctionTool.from_defaults(fn=unit_price)]

SYSTEM_PROMPT = (
    "You are a helpful assistant with tools. Call a tool to look facts up. When a tool response "
    "is given, do not call the tool again: answer the user in one sentence that states the result."
)


class PrintDecisions(BaseEventHandler):
    """Print every routing decision."""

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, RoutingDecisionEvent):
            d = event.decision
            route = f"escalated ({d.reason})" if d.escalated else "local"
            print(f"   [{route}] {d.estimator} confidence={d.confidence} threshold={d.threshold}")


async def run(agent: FunctionAgent | ReActAgent, question: str) -> str:
    """Run one question, printing each tool call and its result."""
    handler = agent.run(user_msg=question, max_iterations=4)
    async for event in handler.stream_events():
        if isinstance(event, ToolCallResult):
            print(f"   tool {event.tool_name}({event.tool_kwargs}) -> {event.tool_output.content}")
    return str(await handler)


async def main(react: bool) -> None:
    get_dispatcher().add_event_handler(PrintDecisions())
    # A step whose answer is a tool call is decided by the tool estimator (`tool_call`: the
    # product of the probabilities of the call/no-call decision, the function name and each
    # argument value) against its own threshold, 0.44 (chosen on BFCL's development split);
    # the decision then reports estimator="tool_call", and "confident" means the 0.5B's call
    # is sent to the tool as written. A plain-text step keeps the primary estimator
    # (perplexity) and its threshold. tool_estimator=None would score calls by perplexity.
    llm = ConfRouteLLM(max_tokens=48, tool_estimator="tool_call")
    agents: list[FunctionAgent | ReActAgent] = [
        FunctionAgent(tools=TOOLS, llm=llm, system_prompt=SYSTEM_PROMPT)
    ]
    if react:
        agents.append(ReActAgent(tools=TOOLS, llm=llm))
    for agent in agents:
        for question in ("How many pears are in stock?", "What does one plum cost?"):
            print(f"{type(agent).__name__}: {question}")
            print(f"-> {await run(agent, question)}")


if __name__ == "__main__":
    asyncio.run(main(react="--react" in sys.argv))
