"""A LlamaIndex FunctionAgent that delegates questions to confroute through its tool, offline.

The agent's LLM plans and answers the user; for a question about the notes it calls the tool
``ask_local`` (``confroute_tool(router, mode="local")``): the bundled 0.5B answers from the
notes and reports how sure it is. Each ``ToolCallResult`` event's ``tool_output.raw_output`` is
the decision (confidence, would_escalate, answered_by, cost), printed below.

The agent's LLM is a ``ConfRouteLLM`` here (the bundled 0.5B, escalating to the bundled 1.5B);
in production it would be your strong model.

Run: python examples/llamaindex_tool_agent.py ["How long does the K7 battery last?"]
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from llama_index.core.agent.workflow import FunctionAgent, ToolCallResult

from llamaindex_confroute import ConfRouteLLM, ConfRouteQueryTool, confroute_tool

NOTES = (
    "The Larkspur K7 is a warehouse robot. Its battery lasts 14 hours on a full charge and "
    "recharges in 90 minutes. It carries up to 320 kilograms."
)
SYSTEM_PROMPT = (
    "You are an assistant with one tool, `ask_local`, which answers questions about the "
    "user's notes. Call it with the user's question as `question` and the notes as `context`. "
    "When the tool has answered, do not call it again: reply to the user in one short sentence "
    "that states its answer."
)


def user_message(question: str, notes: str = NOTES) -> str:
    """The user's turn: the notes, then the question (the agent passes the notes on)."""
    return f"Notes: {notes}\n\nQuestion: {question}"


def build_agent(llm: ConfRouteLLM, tool: ConfRouteQueryTool | None = None) -> FunctionAgent:
    """A FunctionAgent on ``llm`` whose one tool asks the local model (sharing llm's router)."""
    ask_local = tool or confroute_tool(llm.router, mode="local", name="ask_local", max_tokens=48)
    return FunctionAgent(tools=[ask_local], llm=llm, system_prompt=SYSTEM_PROMPT)


async def run(
    agent: FunctionAgent, question: str, notes: str = NOTES
) -> tuple[str, list[dict[str, Any]]]:
    """Run one question about ``notes``; return the answer and every tool call's decision."""
    handler = agent.run(user_msg=user_message(question, notes), max_iterations=4)
    decisions: list[dict[str, Any]] = []
    async for event in handler.stream_events():
        if isinstance(event, ToolCallResult):
            print(f"   tool {event.tool_name}({event.tool_kwargs}) -> {event.tool_output.content}")
            if isinstance(event.tool_output.raw_output, dict):
                decisions.append(event.tool_output.raw_output)
    return str(await handler), decisions


async def main(argv: list[str]) -> None:
    question = argv[0] if argv else "How long does the K7 battery last?"
    agent = build_agent(ConfRouteLLM(max_tokens=96))
    answer, decisions = await run(agent, question)
    for decision in decisions:
        verdict = "unsure: check it" if decision["would_escalate"] else "sure"
        print(f"   ask_local: confidence {decision['confidence']:.2f} ({verdict})")
    print(f"{question}\n-> {answer}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
