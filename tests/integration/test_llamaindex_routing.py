"""ConfRouteLLM with the bundled models: decisions, events, and sync/async/stream parity."""

from __future__ import annotations

import math
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole

from confroute import LocalModel
from confroute.models import DEFAULT_SLM
from llamaindex_confroute import ConfRouteLLM, routing_decision
from tests.integration.li_fixtures import STRONG, DecisionRecorder

pytest_plugins = ["tests.integration.li_fixtures"]

QUESTION = "What is 17*23? Answer with the number only."
MESSAGES = [ChatMessage(role=MessageRole.USER, content=QUESTION)]


def test_local_answer_reports_one_event_with_its_decision(
    li_slm: LocalModel, li_recorder: DecisionRecorder
) -> None:
    llm = ConfRouteLLM(li_slm, STRONG, threshold=0.0, max_tokens=12)
    response = llm.chat(MESSAGES)
    decision = routing_decision(response)
    assert [e.decision for e in li_recorder.events] == [decision]
    assert response.logprobs is not None
    # the local answer as its chosen tokens spell it (the 0.5B may well be wrong: that is why
    # confidence is measured)
    assert "".join(step[0].token for step in response.logprobs) == response.message.content
    assert (decision.escalated, decision.reason) == (False, "confident")
    assert decision.local_model == decision.answered_by == DEFAULT_SLM
    assert (decision.estimator, decision.threshold) == ("perplexity", 0.0)
    assert decision.local_completion_tokens == len(response.logprobs)
    chosen = [step[0].logprob for step in response.logprobs]
    assert decision.confidence == pytest.approx(math.exp(sum(chosen) / len(chosen)), rel=1e-4)
    assert llm.metadata.context_window == li_slm.context_window


def test_escalated_answer_reports_one_event_with_its_decision(
    li_slm: LocalModel, li_recorder: DecisionRecorder
) -> None:
    llm = ConfRouteLLM(li_slm, STRONG, threshold=1.0, max_tokens=8)
    response = llm.complete(QUESTION)
    decision = routing_decision(response)
    [event] = li_recorder.events
    assert event.decision == decision
    assert (event.escalated, event.reason) == (True, "low_confidence")
    assert decision.answered_by == decision.remote_model == STRONG
    assert decision.cost_usd == 0.0
    assert decision.attempts == 1
    assert decision.remote_completion_tokens is not None
    assert 0 < decision.remote_completion_tokens <= 8
    assert "391" in response.text


async def _paths(llm: ConfRouteLLM) -> dict[str, Any]:
    return {
        "chat": routing_decision(llm.chat(MESSAGES)),
        "achat": routing_decision(await llm.achat(MESSAGES)),
        "stream_chat": routing_decision(list(llm.stream_chat(MESSAGES))[-1]),
        "astream_chat": routing_decision([c async for c in await llm.astream_chat(MESSAGES)][-1]),
        "astream_complete": routing_decision(
            [c async for c in await llm.astream_complete(QUESTION)][-1]
        ),
    }


@pytest.mark.parametrize("threshold", [0.0, 1.0], ids=["local", "escalated"])
async def test_async_and_streaming_paths_decide_as_sync(
    li_slm: LocalModel, li_recorder: DecisionRecorder, threshold: float
) -> None:
    llm = ConfRouteLLM(li_slm, STRONG, threshold=threshold, max_tokens=8)
    decisions = await _paths(llm)
    sync = decisions["chat"]
    assert sync.escalated is (threshold == 1.0)
    for name, decision in decisions.items():
        assert (decision.escalated, decision.reason, decision.answered_by) == (
            sync.escalated,
            sync.reason,
            sync.answered_by,
        ), name
        assert decision.confidence == pytest.approx(sync.confidence, rel=1e-3), name
    assert [e.decision for e in li_recorder.events] == list(decisions.values())
