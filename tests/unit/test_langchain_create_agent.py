"""LangChain's ``create_agent`` with ChatConfRoute as its model (scripted SLM, no weights)."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel, Field

from langchain_confroute import ChatConfRoute, DecisionCollector
from tests.fakes import ScriptedLocalModel, ScriptedProvider

agents = pytest.importorskip("langchain.agents", reason="langchain (create_agent) not installed")

SURE = (0.99, 0.98, 0.97)
STOCK_CALL = (
    '<tool_call>\n{"name": "get_stock_level", "arguments": {"item": "widget"}}\n</tool_call>'
)


@tool
def get_stock_level(item: str) -> int:
    """Return how many units of an item are in stock."""
    return {"widget": 42}.get(item, 0)


class Stock(BaseModel):
    """How many units of an item are in stock."""

    item: str = Field(description="The item.")
    units: int = Field(description="Units in stock.")


@pytest.fixture
def llm(scripted_slm: ScriptedLocalModel, provider: ScriptedProvider) -> ChatConfRoute:
    scripted_slm.script["Widgets in stock?"] = (STOCK_CALL, SURE)
    return ChatConfRoute(local_model=scripted_slm, strong_model="scripted/strong", max_tokens=16)


def test_agent_steps_stream_and_each_model_call_is_decided(
    llm: ChatConfRoute, provider: ScriptedProvider
) -> None:
    provider.answers = ["There are 42 widgets in stock."]
    agent = agents.create_agent(llm, tools=[get_stock_level], system_prompt="Use the tools.")
    decisions = DecisionCollector()
    inputs = {"messages": [HumanMessage("Widgets in stock?")]}
    steps = [
        (node, update["messages"][-1])
        for chunk in agent.stream(inputs, {"callbacks": [decisions]}, stream_mode="updates")
        for node, update in chunk.items()
    ]
    assert [node for node, _ in steps] == ["model", "tools", "model"]
    call, result, answer = (message for _, message in steps)
    assert isinstance(call, AIMessage)
    assert [(c["name"], c["args"]) for c in call.tool_calls] == [
        ("get_stock_level", {"item": "widget"})
    ]
    assert isinstance(result, ToolMessage) and result.content == "42"
    # the scripted SLM repeats its call after the result: the router escalates that step
    assert answer.content == "There are 42 widgets in stock."
    assert [(d["escalated"], d["reason"]) for d in decisions.decisions] == [
        (False, "confident"),
        (True, "repeated_tool_call"),
    ]
    assert provider.calls[0]["optional_params"]["tools"][0]["function"]["name"] == (
        "get_stock_level"
    )


async def test_async_agent_run_reports_decisions(
    llm: ChatConfRoute, provider: ScriptedProvider
) -> None:
    provider.answers = ["42 widgets."]
    agent = agents.create_agent(llm, tools=[get_stock_level])
    decisions = DecisionCollector()
    state = await agent.ainvoke(
        {"messages": [HumanMessage("Widgets in stock?")]}, {"callbacks": [decisions]}
    )
    assert state["messages"][-1].content == "42 widgets."
    assert [d["escalated"] for d in decisions.decisions] == [False, True]


def test_structured_response_through_the_agents_tool_strategy(
    llm: ChatConfRoute, scripted_slm: ScriptedLocalModel
) -> None:
    scripted_slm.script["Stock of widgets?"] = (
        '<tool_call>{"name": "Stock", "arguments": {"item": "widget", "units": 42}}</tool_call>',
        SURE,
    )
    agent = agents.create_agent(llm, tools=[get_stock_level], response_format=Stock)
    state = agent.invoke({"messages": [HumanMessage("Stock of widgets?")]})
    assert state["structured_response"] == Stock(item="widget", units=42)
