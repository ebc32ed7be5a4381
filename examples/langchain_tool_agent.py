"""A LangChain agent that delegates questions to confroute through ``ConfRouteTool``, offline.

The agent's own model plans and answers the user; for a question about the notes it is given,
it calls the tool ``ask_local`` (a ``ConfRouteTool`` in ``mode="local"``): the bundled 0.5B
answers from the notes and reports how sure it is. The tool's ``ToolMessage`` carries the answer
as content and the decision (confidence, would_escalate, answered_by, cost) as its artifact, so
the agent (or your code) can decide to check an unsure answer.

The agent is LangChain's own ``langchain.agents.create_agent`` (LangChain 1.x, part of
``confroute[langchain]``); with only ``langchain-core`` installed the same loop is run by hand
with ``bind_tools``. The
agent's model is a ``ChatConfRoute`` here (the bundled 0.5B, escalating to the bundled 1.5B);
in production it would be your strong model (``ChatOpenAI(...)``, ``ChatAnthropic(...)``).

Run::

    python examples/langchain_tool_agent.py ["How long does the K7 battery last?"]
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableConfig

from langchain_confroute import ChatConfRoute, ConfRouteTool

if TYPE_CHECKING:  # only for the annotation: older 1.x releases may not export it
    from langchain.agents.middleware import InputAgentState

NOTES = (
    "The Larkspur K7 is a warehouse robot. Its battery lasts 14 hours on a full charge and "
    "recharges in 90 minutes. It carries up to 320 kilograms."
)
SYSTEM = (
    "You are an assistant with one tool, `ask_local`, which answers questions about the "
    "user's notes. Call it with the user's question as `question` and the notes as `context`. "
    "When the tool has answered, do not call it again: reply to the user in one short sentence "
    "that states its answer."
)


def user_message(question: str, notes: str = NOTES) -> str:
    """The user's turn: the notes, then the question (the agent passes the notes on)."""
    return f"Notes: {notes}\n\nQuestion: {question}"


def build_tool(model: ChatConfRoute) -> ConfRouteTool:
    """The tool the agent delegates to: the local model only, sharing ``model``'s router."""
    return ConfRouteTool(router=model.get_router(), mode="local", name="ask_local", max_tokens=48)


def run_agent(
    question: str,
    model: BaseChatModel | None = None,
    tool: ConfRouteTool | None = None,
    max_steps: int = 3,
    config: RunnableConfig | None = None,
    notes: str = NOTES,
) -> tuple[AIMessage, list[BaseMessage]]:
    """Run the agent on ``question`` about ``notes``; return its answer and the transcript.

    Uses ``langchain.agents.create_agent`` when LangChain 1.x is installed (its steps are
    streamed and printed), else the same model-tool loop by hand. Small models answer straight
    from the notes instead of delegating, and call the tool again after it answered, so the
    first model call is asked for the tool and the next one for the answer (``tool_choice``).
    ``config`` (callbacks, tags) reaches every model and tool call: the agent model's routing
    decisions arrive as ``confroute_decision`` custom events.
    """
    chat = model or ChatConfRoute(max_tokens=96)
    if tool is None:
        if not isinstance(chat, ChatConfRoute):
            raise TypeError("Pass tool= when the agent's model is not a ChatConfRoute.")
        tool = build_tool(chat)
    try:
        from langchain.agents import create_agent
        from langchain.agents.middleware import ModelRequest, ModelResponse, wrap_model_call
    except ImportError:
        return _hand_loop(question, chat, tool, max_steps, config, notes)

    @wrap_model_call
    def delegate_first(
        request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]
    ) -> ModelResponse:
        answered = any(isinstance(m, ToolMessage) for m in request.messages)
        return handler(request.override(tool_choice="none" if answered else tool.name))

    agent = create_agent(chat, tools=[tool], system_prompt=SYSTEM, middleware=[delegate_first])
    inputs: InputAgentState = {"messages": [HumanMessage(user_message(question, notes))]}
    run_config: RunnableConfig = {**(config or {}), "recursion_limit": 2 * max_steps + 1}
    messages: list[BaseMessage] = []
    for state in agent.stream(inputs, run_config, stream_mode="values"):  # one state per step
        messages = state["messages"]
        print(f"  step: {messages[-1].type}")
    answer = messages[-1]
    assert isinstance(answer, AIMessage)
    return answer, messages


def _hand_loop(
    question: str,
    chat: BaseChatModel,
    tool: ConfRouteTool,
    max_steps: int,
    config: RunnableConfig | None = None,
    notes: str = NOTES,
) -> tuple[AIMessage, list[BaseMessage]]:
    """What ``create_agent`` does here, written out: tool call, tool result, answer."""
    turn = HumanMessage(user_message(question, notes))
    messages: list[BaseMessage] = [SystemMessage(SYSTEM), turn]
    reply = chat.bind_tools([tool], tool_choice=tool.name).invoke(messages, config)
    messages.append(reply)
    for call in reply.tool_calls[:max_steps]:
        messages.append(tool.invoke({**call, "type": "tool_call"}, config))
    answer = chat.invoke(messages, config) if reply.tool_calls else reply  # no tools now
    if answer is not reply:
        messages.append(answer)
    assert isinstance(answer, AIMessage)
    return answer, messages


def tool_decisions(transcript: list[BaseMessage]) -> list[dict[str, Any]]:
    """The decision of every ``ask_local`` call in a transcript (the ToolMessages' artifacts)."""
    return [m.artifact for m in transcript if isinstance(m, ToolMessage) and m.artifact]


def main(argv: list[str]) -> None:
    question = argv[0] if argv else "How long does the K7 battery last?"
    answer, transcript = run_agent(question)
    for message in transcript[1:]:
        shown = getattr(message, "tool_calls", None) or message.content
        print(f"{message.type:>6}: {shown}")
    for decision in tool_decisions(transcript):
        verdict = "unsure: check it" if decision["would_escalate"] else "sure"
        print(f"ask_local: confidence {decision['confidence']:.2f} ({verdict})")
    print(f"answer: {answer.content}")


if __name__ == "__main__":
    main(sys.argv[1:])
