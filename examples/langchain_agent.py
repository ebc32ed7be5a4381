"""A tool-using agent on ChatConfRoute, offline.

The model gets two tools (an inventory lookup and a multiplier), calls them, reads their
results and answers. A confident, well-formed local tool call stays on the 0.5B; a malformed or
unsure one escalates to the bundled 1.5B with the same tools. Run::

    python examples/langchain_agent.py ["How many widgets are in stock?"]
"""

from __future__ import annotations

import sys

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.tools import BaseTool, tool

from langchain_confroute import ChatConfRoute

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
SYSTEM = (
    "You are an inventory assistant. Use the tools to look facts up; never guess numbers. "
    "Once a tool has answered, reply to the user in one short sentence that states the result."
)


def run_agent(
    question: str, llm: BaseChatModel | None = None, max_steps: int = 3
) -> tuple[AIMessage, list[BaseMessage]]:
    """Call tools until the model answers in text; return the answer and the transcript.

    A model that repeats a call it already made, or writes a call it cannot finish (small
    models do both), is asked for its answer from the tool results, with no tools offered.
    """
    model = llm or ChatConfRoute(max_tokens=64)
    by_name = {t.name: t for t in TOOLS}
    messages: list[BaseMessage] = [SystemMessage(SYSTEM), HumanMessage(question)]
    with_tools = model.bind_tools(TOOLS)
    made: set[str] = set()
    for _ in range(max_steps):
        reply = with_tools.invoke(messages)
        if not reply.tool_calls:
            if str(reply.content).lstrip().startswith(("{", "```")):
                break  # a tool call it could not finish writing: ask for the answer instead
            messages.append(reply)
            return reply, messages
        calls = {f"{c['name']}{sorted(c['args'].items())}": c for c in reply.tool_calls}
        if calls.keys() & made:
            break  # it repeats itself: the tools have said what they know
        messages.append(reply)
        for key, call in calls.items():
            made.add(key)
            messages.append(by_name[call["name"]].invoke(call))
    messages.append(HumanMessage("Answer my question from the tool results, in one sentence."))
    answer = model.invoke(messages)  # no tools offered
    messages.append(answer)
    return answer, messages


def main(argv: list[str]) -> None:
    question = argv[0] if argv else "How many widgets are in stock?"
    answer, transcript = run_agent(question)
    for message in transcript[1:]:
        calls = getattr(message, "tool_calls", None)
        shown = calls if calls else message.content
        print(f"{message.type:>6}: {shown}")
    print(f"escalated: {answer.response_metadata['confroute']['escalated']}")


if __name__ == "__main__":
    main(sys.argv[1:])
