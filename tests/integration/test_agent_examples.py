"""The tool-agent examples on the bundled 0.5B: an agent delegates to the confroute tool.

The LangChain example runs ``langchain.agents.create_agent`` when LangChain 1.x is installed
and its hand-written loop otherwise; both give the same transcript shape.
"""

from __future__ import annotations

import importlib.util
import runpy
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.runnables import RunnableConfig

from confroute import ConfRouter
from confroute.models import DEFAULT_SLM
from langchain_confroute import DECISION_EVENT, ChatConfRoute
from llamaindex_confroute import ConfRouteLLM
from tests.integration.lc_fixtures import bundled_slm, lc_params

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
QUESTION = "How long does the K7 battery last?"
HAS_CREATE_AGENT = importlib.util.find_spec("langchain") is not None


class EventRecorder(BaseCallbackHandler):
    """Keeps the chat model's decision events and counts tool runs of one agent run."""

    def __init__(self) -> None:
        self.decisions: list[dict[str, Any]] = []
        self.tool_runs = 0

    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        if name == DECISION_EVENT:
            self.decisions.append(data)

    def on_tool_start(self, serialized: Any, input_str: str, **kwargs: Any) -> None:
        self.tool_runs += 1


def example(name: str) -> dict[str, Any]:
    return runpy.run_path(str(EXAMPLES / name), run_name="example_under_test")


def check_decision(decision: dict[str, Any]) -> None:
    """A local-mode tool decision from the bundled 0.5B."""
    assert decision["mode"] == "local"
    assert decision["escalated"] is False
    assert decision["answered_by"] == decision["local_model"] == DEFAULT_SLM
    assert 0.0 <= decision["confidence"] <= 1.0
    assert decision["would_escalate"] is (decision["confidence"] < decision["threshold"])


@pytest.mark.parametrize("loop", ["auto", "by hand"])
def test_langchain_agent_delegates_to_the_tool(loop: str) -> None:
    if loop == "auto" and not HAS_CREATE_AGENT:
        pytest.skip("langchain (create_agent) is not installed; the loop by hand is tested")
    agent = example("langchain_tool_agent.py")
    llm = ChatConfRoute(
        **lc_params(max_tokens=96, threshold=0.0, tool_threshold=0.0, strong_model=None)
    )
    tool = agent["build_tool"](llm)
    events = EventRecorder()
    config: RunnableConfig = {"callbacks": [events]}
    if loop == "auto":
        answer, transcript = agent["run_agent"](QUESTION, llm, tool, config=config)
    else:
        answer, transcript = agent["_hand_loop"](QUESTION, llm, tool, 3, config)
    calls = [c for m in transcript if isinstance(m, AIMessage) for c in m.tool_calls]
    assert calls and calls[0]["name"] == "ask_local"
    assert "battery" in calls[0]["args"]["question"].lower()
    [result, *_] = [m for m in transcript if isinstance(m, ToolMessage)]
    assert "14" in str(result.content)  # the 0.5B answered from the notes it was given
    [decision, *_] = agent["tool_decisions"](transcript)
    check_decision(decision)
    assert isinstance(answer, AIMessage) and not answer.tool_calls
    assert "14" in str(answer.content)
    # the agent model's own decisions (tool call, then answer) reached the run's callbacks
    assert len(events.decisions) == 2
    assert all(d["local_model"] == DEFAULT_SLM for d in events.decisions)
    assert events.tool_runs == 1


async def test_llamaindex_function_agent_delegates_to_the_tool() -> None:
    agent_example = example("llamaindex_tool_agent.py")
    llm = ConfRouteLLM(router=ConfRouter(bundled_slm(), None, max_new_tokens=96))
    answer, decisions = await agent_example["run"](agent_example["build_agent"](llm), QUESTION)
    assert decisions, "the agent did not call the tool"
    check_decision(decisions[0])
    assert "14" in answer
