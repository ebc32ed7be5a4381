"""The LangChain examples' core paths, on the real bundled models (the SLM is loaded once)."""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import ToolMessage

from langchain_confroute import DECISION_EVENT, ChatConfRoute
from tests.integration.lc_fixtures import lc_params

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example(name: str) -> dict[str, Any]:
    return runpy.run_path(str(EXAMPLES / name), run_name="example_under_test")


def test_rag_chain_answers_from_the_documents() -> None:
    rag = example("langchain_rag.py")
    retriever_docs = (
        rag["InMemoryVectorStore"]
        .from_texts(rag["DOCUMENTS"], rag["MiniLMEmbeddings"]())
        .similarity_search("How long does the Larkspur K7 battery last?", k=1)
    )
    assert "14 hours" in retriever_docs[0].page_content
    llm = ChatConfRoute(**lc_params(max_tokens=40, threshold=0.0))  # keep it on the 0.5B
    answer = rag["build_chain"](llm).invoke("How long does the Larkspur K7 battery last?")
    assert "14" in answer.content
    assert answer.response_metadata["confroute"]["answered_by"] == "qwen2.5-coder-0.5b-instruct"


class ToolRuns(BaseCallbackHandler):
    """Counts the tool runs a user's handler in the run's callbacks sees."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def on_tool_start(self, serialized: Any, input_str: str, **kwargs: Any) -> None:
        self.names.append(str((serialized or {}).get("name")))


def test_create_agent_calls_a_tool_streams_its_steps_and_reports_decisions() -> None:
    agent = example("langchain_agent.py")
    llm = ChatConfRoute(**lc_params(max_tokens=64, threshold=0.0, tool_threshold=0.0))
    tools = ToolRuns()
    streamed: list[str] = []
    run = agent["run_agent"](
        "How many widgets are in stock?",
        llm,
        config={"callbacks": [tools]},
        on_step=lambda node, added: streamed.append(node),
    )
    calls = [c for m in run.messages for c in getattr(m, "tool_calls", [])]
    assert ("get_stock_level", "widget") in [
        (c["name"], str(c["args"].get("item", "")).lower().rstrip("s")) for c in calls
    ]
    results = [m.content for m in run.messages if isinstance(m, ToolMessage)]
    assert "42" in results
    assert "get_stock_level" in tools.names  # the user's handler saw the tool run
    # steps streamed as they finished: a model step, a tools step, ..., a final model step
    assert streamed == run.steps
    assert run.steps[:2] == ["model", "tools"] and run.steps[-1] == "model"
    assert not run.answer.tool_calls
    assert "42" in str(run.answer.content)
    assert "{" not in str(run.answer.content)  # a sentence, not a tool call written as text
    # one decision per model call, from the run's callbacks; the last one answered
    assert len(run.decisions) >= run.steps.count("model") >= 2
    assert all(d["local_model"] == "qwen2.5-coder-0.5b-instruct" for d in run.decisions)
    answered = run.answer.response_metadata["confroute"]
    assert run.decisions[-1]["answered_by"] == answered["answered_by"]


def test_logging_writes_one_line_per_call(tmp_path: Path) -> None:
    logging_example = example("langchain_logging.py")
    path = tmp_path / "decisions.jsonl"
    # threshold 0.9 sends the uncertain poem to the bundled 1.5B (in process)
    llm = ChatConfRoute(**lc_params(max_tokens=16, threshold=0.9))
    summary = logging_example["log_decisions"](path, llm)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == len(logging_example["QUESTIONS"]) == summary.calls == 3
    assert summary.escalated == sum(r["escalated"] for r in records) >= 1
    assert summary.cost_usd == 0.0  # the in-process 1.5B costs nothing
    assert {r["local_model"] for r in records} == {"qwen2.5-coder-0.5b-instruct"}


async def test_decision_event_in_astream_events_with_a_real_model() -> None:
    llm = ChatConfRoute(**lc_params(max_tokens=8, threshold=0.0))
    events = [e async for e in llm.astream_events("Say hi.", version="v2")]
    [custom] = [e for e in events if e["event"] == "on_custom_event"]
    assert custom["name"] == DECISION_EVENT
    assert custom["data"]["escalated"] is False
    streamed = "".join(
        str(e["data"]["chunk"].content) for e in events if e["event"] == "on_chat_model_stream"
    )
    assert streamed
