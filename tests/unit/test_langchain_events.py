"""The confroute_decision custom event and the EscalationLogger callback handler."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.prompts import ChatPromptTemplate

from langchain_confroute import (
    DECISION_EVENT,
    ChatConfRoute,
    EscalationLogger,
    summarize_escalation_log,
)
from tests.fakes import ScriptedLocalModel, ScriptedProvider


class Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any], UUID]] = []
        self.llm_runs: list[UUID] = []

    def on_chat_model_start(
        self, serialized: Any, messages: Any, *, run_id: UUID, **_: Any
    ) -> None:
        self.llm_runs.append(run_id)

    def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **_: Any) -> None:
        self.events.append((name, data, run_id))


@pytest.fixture
def llm(scripted_slm: ScriptedLocalModel, provider: ScriptedProvider) -> ChatConfRoute:
    return ChatConfRoute(
        local_model=scripted_slm, strong_model="scripted/strong", api_key="sk-secret-123"
    )


def test_each_call_sends_its_decision_to_the_handlers(llm: ChatConfRoute) -> None:
    recorder = Recorder()
    message = llm.invoke("unsure?", config={"callbacks": [recorder]})
    [(name, data, run_id)] = recorder.events
    assert name == DECISION_EVENT
    assert data == message.response_metadata["confroute"]
    assert data["escalated"] is True
    assert run_id == recorder.llm_runs[0]


def test_stream_and_batch_send_one_decision_per_call(llm: ChatConfRoute) -> None:
    recorder = Recorder()
    list(llm.stream("sure?", config={"callbacks": [recorder]}))
    llm.batch(["sure?", "unsure?"], config={"callbacks": [recorder]})
    reasons = sorted(data["reason"] for _, data, _ in recorder.events)
    assert reasons == ["confident", "confident", "low_confidence"]
    assert len({run for _, _, run in recorder.events}) == 3


async def test_decision_appears_in_astream_events(llm: ChatConfRoute) -> None:
    chain = ChatPromptTemplate.from_messages([("human", "{question}")]) | llm
    events = [e async for e in chain.astream_events({"question": "sure?"}, version="v2")]
    custom = [e for e in events if e["event"] == "on_custom_event"]
    assert [e["name"] for e in custom] == [DECISION_EVENT]
    assert custom[0]["data"]["reason"] == "confident"
    [model_start] = [e for e in events if e["event"] == "on_chat_model_start"]
    assert custom[0]["run_id"] == model_start["run_id"]


async def test_async_calls_send_the_decision(llm: ChatConfRoute) -> None:
    recorder = Recorder()
    await llm.ainvoke("sure?", config={"callbacks": [recorder]})
    chunks = [c async for c in llm.astream("unsure?", config={"callbacks": [recorder]})]
    assert chunks[-1].chunk_position == "last"
    assert [d["escalated"] for _, d, _ in recorder.events] == [False, True]


def test_escalation_logger_writes_one_line_per_call(llm: ChatConfRoute, tmp_path: Path) -> None:
    path = tmp_path / "logs" / "decisions.jsonl"
    handler = EscalationLogger(path)
    config = {"callbacks": [handler]}
    llm.invoke("sure?", config=config)
    llm.invoke("unsure?", config=config)
    list(llm.stream("unsure?", config=config))
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    records = [json.loads(line) for line in lines]
    assert [r["escalated"] for r in records] == [False, True, True]
    assert all(r["run_id"] and r["local_model"] == "scripted-slm" for r in records)
    assert "sk-secret-123" not in path.read_text()
    summary = summarize_escalation_log(path)
    assert (summary.calls, summary.escalated, summary.failed_escalations) == (3, 2, 0)
    assert summary.escalation_rate == pytest.approx(2 / 3)
    assert summary.unknown_cost == 2  # the scripted provider has no price
    assert summary.reasons == {"confident": 1, "low_confidence": 2}


def test_escalation_logger_can_keep_only_escalations(llm: ChatConfRoute, tmp_path: Path) -> None:
    path = tmp_path / "escalations.jsonl"
    handler = EscalationLogger(path, only_escalated=True)
    llm.batch(["sure?", "unsure?", "sure?"], config={"callbacks": [handler]})
    [line] = path.read_text().splitlines()
    assert json.loads(line)["reason"] == "low_confidence"


def test_escalation_logger_ignores_other_events(tmp_path: Path) -> None:
    handler = EscalationLogger(tmp_path / "log.jsonl")
    handler.on_custom_event("something_else", {"x": 1}, run_id=UUID(int=1))
    assert not (tmp_path / "log.jsonl").exists()


def test_streamed_invoke_sends_tokens_and_one_decision(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    class Tokens(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.tokens: list[str] = []

        def on_llm_new_token(self, token: str, **_: Any) -> None:
            self.tokens.append(token)

    llm = ChatConfRoute(local_model=scripted_slm, strong_model="scripted/strong", streaming=True)
    recorder = Tokens()
    message = llm.invoke("unsure?", config={"callbacks": [recorder]})
    assert message.content == "strong answer"
    assert recorder.tokens[:2] == ["strong ", "answer"]
    [(name, data, run_id)] = recorder.events
    assert (name, data["escalated"], run_id) == (DECISION_EVENT, True, recorder.llm_runs[0])
