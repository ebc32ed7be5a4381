"""Escalation through ChatConfRoute to the bundled 1.5B (in process), streamed and invoked."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler

from langchain_confroute import DECISION_EVENT, ChatConfRoute
from tests.integration.lc_fixtures import lc_params

pytestmark = pytest.mark.integration


class Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.decisions: list[dict[str, Any]] = []
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **_: Any) -> None:
        self.tokens.append(token)

    def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **_: Any) -> None:
        if name == DECISION_EVENT:
            self.decisions.append(data)


def test_escalated_answer_streams_the_strong_models_tokens() -> None:
    llm = ChatConfRoute(**lc_params(max_tokens=8, threshold=1.0))  # 1.0 escalates everything
    recorder = Recorder()
    chunks = list(llm.stream("Name a primary colour.", config={"callbacks": [recorder]}))
    text_chunks = [c for c in chunks if c.content]
    assert len(text_chunks) >= 2  # the 1.5B's words arrive one by one
    full = chunks[0]
    for chunk in chunks[1:]:
        full = full + chunk
    decision = full.response_metadata["confroute"]
    assert (decision["escalated"], decision["reason"]) == (True, "low_confidence")
    assert decision["answered_by"] == "confroute/qwen2.5-coder-1.5b-instruct"
    assert decision["cost_usd"] == 0.0
    assert full.usage_metadata is not None
    assert full.usage_metadata["output_tokens"] == decision["remote_completion_tokens"] <= 8
    assert recorder.decisions == [decision]
