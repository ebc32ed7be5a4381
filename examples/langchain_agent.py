"""LangChain's own agent (``create_agent``) on ChatConfRoute, offline.

``langchain.agents.create_agent`` (LangChain 1.x, on LangGraph) runs the model-tool loop with a
``ChatConfRoute`` as its model and two tools (an inventory lookup and a multiplier). The agent's
steps are streamed as they finish (``agent.stream(..., stream_mode="updates")``), and a callback
handler in the run's callbacks collects the routing decision of every model call: a confident,
well-formed local tool call stays on the 0.5B; a malformed, repeated or unsure one escalates to
the bundled 1.5B with the same tools. Needs ``pip install 'confroute[langchain]'``. Run::

    python examples/langchain_agent.py ["How many widgets are in stock?"]
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from langchain.agents import create_agent
from langchain.agents.middleware import ModelRequest, ModelResponse, wrap_model_call
from langchain_core.callbacks import BaseCallbackHandler, BaseCallbackManager
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, tool
from langgraph.graph.state import CompiledStateGraph

from langchain_confroute import ChatConfRoute, DecisionCollector

INVENTORY = {"widget": 42, "gadget": 7, "sprocket": 1300}


@tool
def get_stock_level(item: str) -> int:
    """Return how many units of an item (singular, e.g. 'widget') are in stock."""
    return INVENTORY.get(item.lower().rstrip("s"), 0)


@tool
def multiply(a: float, b: float) -> float:
    """Multiply two numbers."""
    return a * b


TOOLS: list[BaseTool] = [get_stock_level, multiply]
Agent = CompiledStateGraph[Any, Any, Any, Any]
"""What ``create_agent`` returns: a compiled LangGraph graph."""
SYSTEM = (
    "You are an inventory assistant. Use the tools to look facts up; never guess numbers. "
    "Once a tool has answered, reply to the user in one short sentence that states the result."
)


class AgentRun(NamedTuple):
    """What one agent run gave: the answer, the transcript, the steps, the decisions."""

    answer: AIMessage
    messages: list[BaseMessage]
    steps: list[str]
    """The graph node of each streamed step, in order (``model``, ``tools``, ...)."""
    decisions: list[dict[str, Any]]
    """The routing decision of each model call, in order (the ``confroute_decision`` data)."""


ANSWER_NOW = "Answer my question from the tool results, in one sentence."


def unfinished_call(message: BaseMessage) -> bool:
    """A text reply that is a tool call the model could not finish writing (small models do)."""
    text = str(message.content).lstrip()
    return (
        isinstance(message, AIMessage) and not message.tool_calls and text.startswith(("{", "```"))
    )


def answer_from_results(tool_rounds: int) -> Any:
    """Middleware: ask for the answer in text once the tools have said what they know.

    After ``tool_rounds`` rounds of tool calls, or when a reply is a tool call written as
    unfinished text, the model is called (again) with no tools offered (``tool_choice="none"``)
    and asked to answer from the tool results. A repeated call needs no rule here: the router
    escalates it (``reason="repeated_tool_call"``).
    """

    @wrap_model_call
    def answer_in_text(
        request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]
    ) -> ModelResponse:
        answer_now = request.override(
            tool_choice="none", messages=[*request.messages, HumanMessage(ANSWER_NOW)]
        )
        rounds = sum(isinstance(m, AIMessage) and bool(m.tool_calls) for m in request.messages)
        if rounds >= tool_rounds:
            return handler(answer_now)
        response = handler(request)
        if rounds and any(unfinished_call(m) for m in response.result):
            return handler(answer_now)
        return response

    return answer_in_text


def build_agent(model: BaseChatModel | None = None, tool_rounds: int = 2) -> Agent:
    """``create_agent`` with the inventory tools on ``model`` (default: a ChatConfRoute)."""
    chat = model or ChatConfRoute(max_tokens=64)
    return create_agent(
        chat, tools=TOOLS, system_prompt=SYSTEM, middleware=[answer_from_results(tool_rounds)]
    )


def stream_steps(
    agent: Agent, question: str, config: RunnableConfig
) -> Iterator[tuple[str, list[BaseMessage]]]:
    """Each finished step of the agent as (graph node, the messages it added)."""
    inputs = {"messages": [HumanMessage(question)]}
    for update in agent.stream(inputs, config, stream_mode="updates"):
        for node, state in update.items():
            yield node, list((state or {}).get("messages", []))


def with_handler(config: RunnableConfig, handler: BaseCallbackHandler) -> RunnableConfig:
    """A copy of ``config`` whose callbacks also include ``handler`` (a list or a manager)."""
    callbacks = config.get("callbacks")
    if isinstance(callbacks, BaseCallbackManager):
        manager = callbacks.copy()
        manager.add_handler(handler, inherit=True)
        return {**config, "callbacks": manager}
    return {**config, "callbacks": [*(callbacks or []), handler]}


def run_agent(
    question: str,
    llm: BaseChatModel | None = None,
    max_steps: int = 3,
    config: RunnableConfig | None = None,
    on_step: Callable[[str, list[BaseMessage]], None] | None = None,
) -> AgentRun:
    """Run the agent on ``question``, streaming its steps; return what it answered and decided.

    ``max_steps`` bounds the model calls (LangGraph's ``recursion_limit``); ``config`` is
    merged into the run's config (your callbacks and tags reach every model and tool call).
    """
    collector = DecisionCollector()
    run_config = with_handler(config or {}, collector)
    run_config["recursion_limit"] = 2 * max_steps + 1
    messages: list[BaseMessage] = [HumanMessage(question)]
    steps: list[str] = []
    for node, added in stream_steps(build_agent(llm), question, run_config):
        steps.append(node)
        messages.extend(added)
        if on_step is not None:
            on_step(node, added)
    answer = messages[-1]
    if not isinstance(answer, AIMessage):
        raise RuntimeError(f"The agent stopped after a {answer.type} message, not an answer.")
    return AgentRun(answer, messages, steps, collector.decisions)


def show_step(node: str, added: list[BaseMessage]) -> None:
    """Print one streamed step: tool calls, tool results or the answer."""
    for message in added:
        if isinstance(message, ToolMessage):
            shown: Any = f"{message.name} -> {message.content}"
        else:
            shown = getattr(message, "tool_calls", None) or message.content
        print(f"[{node}] {message.type}: {shown}")


def main(argv: list[str]) -> None:
    question = argv[0] if argv else "How many widgets are in stock?"
    run = run_agent(question, on_step=show_step)
    for decision in run.decisions:
        print(
            f"decision: {decision['reason']}, confidence {decision['confidence']}, "
            f"answered by {decision['answered_by']}"
        )
    print(f"answer: {run.answer.content}")


if __name__ == "__main__":
    main(sys.argv[1:])
