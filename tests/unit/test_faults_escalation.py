"""Escalation faults injected by a real HTTP server, under every failure policy.

The strong model is an OpenAI-compatible server on 127.0.0.1 (``tests/faultserver.py``) reached
through LiteLLM (``openai/...`` and ``hosted_vllm/...``). For every fault the tests check the
answer, the raised error, and that the hooks received exactly one decision with the error
recorded, for ``route``, ``aroute``, ``stream`` and ``astream``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from confroute import ConfRouter, EscalationError, RoutingDecision
from confroute.errors import ConfRouteError
from confroute.router import RoutedResponse
from tests.fakes import ScriptedLocalModel
from tests.faultserver import FaultServer, closed_port, echo

CANARY = "sk-canary-faults-7c1e0b9a44d2"
LOCAL_TEXT = "I am not sure."  # ScriptedLocalModel's default answer, confidence 0.5
THRESHOLD = 0.8
HANG_TIMEOUT = 0.5  # client timeout for the hang/stall faults; everything else gets 10 s

# What each fault looks like in the recorded error (LiteLLM's exception names and messages).
CAUSES = {
    "500": "InternalServerError",
    "429": "RateLimitError",
    "hang": "Timeout",
    "malformed": "Expecting",  # a JSON decode error
    "drop": "Connection error",
    "refused": "Connection error",
}
PRE_TOKEN_FAULTS = ["500", "429", "hang", "malformed", "drop", "refused"]
MODES = ["route", "aroute", "stream", "astream"]


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer(hang_s=5.0) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh(server: FaultServer) -> None:
    server.reset()
    server.retry_after = 0.0


@pytest.fixture(scope="module")
def slm() -> ScriptedLocalModel:
    return ScriptedLocalModel(script={"sure?": ("391", (0.99, 0.98, 0.97))})


@dataclass
class Outcome:
    """What a caller saw: the answer (or the error) and, when streaming, the pieces."""

    response: RoutedResponse | None = None
    error: BaseException | None = None
    pieces: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return (
            "".join(self.pieces) if self.pieces else (self.response.text if self.response else "")
        )


def make_router(
    server: FaultServer,
    slm: ScriptedLocalModel,
    *,
    policy: str = "return_local",
    fault: str = "ok",
    max_retries: int = 1,
    fallbacks: tuple[str, ...] = (),
    prefix: str = "openai",
) -> tuple[ConfRouter, list[RoutedResponse | RoutingDecision]]:
    seen: list[Any] = []
    base = f"http://127.0.0.1:{closed_port()}/v1" if fault == "refused" else server.base_url
    router = ConfRouter(
        slm,
        f"{prefix}/primary",
        threshold=THRESHOLD,
        api_base=base,
        api_key=CANARY,
        timeout=HANG_TIMEOUT if fault in ("hang", "stall") else 10.0,
        max_retries=max_retries,
        fallbacks=[f"{prefix}/{name}" for name in fallbacks],
        on_escalation_error=policy,  # type: ignore[arg-type]
        hooks=[seen.append],
    )
    assert router.escalation is not None
    router.escalation.backoff_s = 0.0
    return router, seen


async def drive(router: ConfRouter, prompt: str, mode: str) -> Outcome:
    """Ask in one of the four ways; never raises (the error is part of the outcome)."""
    outcome = Outcome()

    def sync_stream() -> None:
        for chunk in router.stream(prompt):
            if chunk.text:
                outcome.pieces.append(chunk.text)
            if chunk.response is not None:
                outcome.response = chunk.response

    try:
        if mode == "route":
            outcome.response = await asyncio.to_thread(router.route, prompt)
        elif mode == "aroute":
            outcome.response = await router.aroute(prompt)
        elif mode == "stream":
            await asyncio.to_thread(sync_stream)
        else:
            async for chunk in router.astream(prompt):
                if chunk.text:
                    outcome.pieces.append(chunk.text)
                if chunk.response is not None:
                    outcome.response = chunk.response
    except Exception as error:
        outcome.error = error
    return outcome


def assert_failed_decision(decision: Any, fault: str, *, attempts: int) -> None:
    assert isinstance(decision, RoutingDecision)
    assert decision.escalated and decision.reason == "low_confidence"
    assert decision.answered_by == "scripted-slm"
    assert decision.remote_model == "openai/primary"
    assert decision.attempts == attempts
    assert decision.error is not None
    assert "openai/primary" in decision.error and CAUSES[fault] in decision.error
    assert CANARY not in decision.model_dump_json()


# -- the baseline ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("prefix", ["openai", "hosted_vllm"])
async def test_healthy_server_answers_and_receives_the_key(
    server: FaultServer, slm: ScriptedLocalModel, mode: str, prefix: str
) -> None:
    router, seen = make_router(server, slm, prefix=prefix)
    outcome = await drive(router, "What is the airspeed of a swallow?", mode)
    assert outcome.error is None and outcome.response is not None
    assert outcome.text == echo("primary", "What is the airspeed of a swallow?")
    decision = outcome.response.decision
    assert decision.escalated and decision.answered_by == f"{prefix}/primary"
    assert decision.error is None and decision.attempts == 1
    assert seen == [decision]
    [request] = server.requests
    assert request.authorization == f"Bearer {CANARY}"
    assert request.stream is mode.endswith("stream")


# -- retry with back-off ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", ["500", "429", "hang", "malformed", "drop"])
async def test_retry_recovers_from_one_fault(
    server: FaultServer, slm: ScriptedLocalModel, fault: str, mode: str
) -> None:
    server.script(fault, "ok")
    router, seen = make_router(server, slm, fault=fault, max_retries=1)
    outcome = await drive(router, "retry me", mode)
    if fault == "drop" and mode.endswith("stream"):
        # a mid-stream drop cannot be retried: text already reached the caller (see below)
        assert isinstance(outcome.error, EscalationError)
        return
    assert outcome.error is None and outcome.response is not None
    assert outcome.text == echo("primary", "retry me")
    decision = outcome.response.decision
    assert decision.answered_by == "openai/primary" and decision.error is None
    assert decision.attempts == 2
    assert outcome.response.remote is not None
    [first_failure] = outcome.response.remote.errors
    assert CAUSES[fault] in first_failure
    assert seen == [decision]
    assert [r.fault for r in server.requests] == [fault, "ok"]


@pytest.mark.parametrize("prefix", ["openai", "hosted_vllm"])
async def test_retry_after_is_honoured(
    server: FaultServer, slm: ScriptedLocalModel, prefix: str
) -> None:
    server.retry_after = 0.4
    server.script("429", "ok")
    router, _ = make_router(server, slm, prefix=prefix)
    started = time.perf_counter()
    response = await router.aroute("rate limited")
    assert time.perf_counter() - started >= 0.4
    assert response.text == echo("primary", "rate limited")
    assert response.decision.attempts == 2
    assert response.decision.remote_latency_s is not None
    assert response.decision.remote_latency_s >= 0.4


async def test_backoff_doubles_between_retries(
    server: FaultServer, slm: ScriptedLocalModel
) -> None:
    server.script("500", "500", "ok")
    router, _ = make_router(server, slm, max_retries=2)
    assert router.escalation is not None
    router.escalation.backoff_s = 0.1  # waits 0.1 then 0.2 (+ up to 25% jitter)
    started = time.perf_counter()
    response = await router.aroute("back off")
    assert time.perf_counter() - started >= 0.3
    assert response.decision.attempts == 3 and response.decision.error is None


# -- fallback list ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", ["500", "429", "hang", "malformed", "drop"])
async def test_fallback_answers_when_primary_keeps_failing(
    server: FaultServer, slm: ScriptedLocalModel, fault: str, mode: str
) -> None:
    server.model_faults["primary"] = fault
    retries = 0 if fault == "hang" else 1
    router, seen = make_router(
        server, slm, fault=fault, max_retries=retries, fallbacks=("backup", "never-reached")
    )
    outcome = await drive(router, "fall back", mode)
    if fault == "drop" and mode.endswith("stream"):
        assert isinstance(outcome.error, EscalationError)
        return
    assert outcome.error is None and outcome.response is not None
    assert outcome.text == echo("backup", "fall back")
    decision = outcome.response.decision
    assert decision.answered_by == "openai/backup" and decision.remote_model == "openai/backup"
    assert decision.attempts == retries + 2 and decision.error is None
    assert seen == [decision]
    assert [r.model for r in server.requests] == ["primary"] * (retries + 1) + ["backup"]


# -- every model fails: the two policies -----------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", PRE_TOKEN_FAULTS)
async def test_return_local_answers_with_the_marked_local_answer(
    server: FaultServer, slm: ScriptedLocalModel, fault: str, mode: str
) -> None:
    if fault != "refused":  # "refused" points the router at a closed port instead
        server.default = fault
    retries = 0 if fault == "hang" else 1  # a hang costs a full timeout per try
    router, seen = make_router(server, slm, fault=fault, policy="return_local", max_retries=retries)
    outcome = await drive(router, "all down", mode)
    if fault == "drop" and mode.endswith("stream"):
        assert isinstance(outcome.error, EscalationError)  # mid-stream: tested below
        return
    assert outcome.error is None and outcome.response is not None
    assert outcome.text == LOCAL_TEXT
    assert outcome.response.remote is None
    assert_failed_decision(outcome.response.decision, fault, attempts=retries + 1)
    assert seen == [outcome.response.decision]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", PRE_TOKEN_FAULTS)
async def test_raise_policy_names_provider_and_cause(
    server: FaultServer, slm: ScriptedLocalModel, fault: str, mode: str
) -> None:
    if fault != "refused":
        server.default = fault
    retries = 0 if fault == "hang" else 1  # a hang costs a full timeout per try
    router, seen = make_router(server, slm, fault=fault, policy="raise", max_retries=retries)
    outcome = await drive(router, "all down", mode)
    error = outcome.error
    assert isinstance(error, EscalationError) and isinstance(error, ConfRouteError)
    assert error.provider == "openai/primary"
    assert "openai/primary" in str(error) and CAUSES[fault] in str(error)
    assert CANARY not in str(error) and CANARY not in repr(error.errors)
    assert outcome.response is None
    [decision] = seen
    if fault == "drop" and mode.endswith("stream"):
        assert decision.attempts == 1  # the first try failed after text was sent
        return
    assert not outcome.pieces
    assert_failed_decision(decision, fault, attempts=retries + 1)


@pytest.mark.parametrize("hosted", [False, True])
async def test_raise_policy_lists_every_model_tried(
    server: FaultServer, slm: ScriptedLocalModel, hosted: bool
) -> None:
    server.default = "500"
    prefix = "hosted_vllm" if hosted else "openai"
    router, seen = make_router(
        server, slm, policy="raise", max_retries=0, fallbacks=("backup",), prefix=prefix
    )
    with pytest.raises(EscalationError) as info:
        await router.aroute("all down")
    assert info.value.provider == f"{prefix}/backup"
    assert info.value.attempts == 2
    assert [e.split(":")[0] for e in info.value.errors] == [f"{prefix}/primary", f"{prefix}/backup"]
    assert len(seen) == 1 and seen[0].attempts == 2


# -- failures after the first streamed token -------------------------------------------------


@pytest.mark.parametrize("policy", ["return_local", "raise"])
@pytest.mark.parametrize("fault", ["drop", "stall"])
@pytest.mark.parametrize("mode", ["stream", "astream"])
async def test_mid_stream_failure_raises_after_partial_text(
    server: FaultServer, slm: ScriptedLocalModel, fault: str, mode: str, policy: str
) -> None:
    server.default = fault
    router, seen = make_router(server, slm, fault=fault, policy=policy, fallbacks=("backup",))
    question = "tell me a long story please"
    outcome = await drive(router, question, mode)
    full = echo("primary", question)
    partial = "".join(outcome.pieces)
    assert partial and full.startswith(partial) and partial != full
    error = outcome.error
    assert isinstance(error, EscalationError) and error.attempts == 1
    assert "openai/primary" in str(error)
    assert ("Timeout" if fault == "stall" else "Connection error") in str(error)
    assert outcome.response is None
    [decision] = seen  # still reported, exactly once
    assert decision.escalated and decision.error and decision.attempts == 1
    assert len(server.requests) == 1  # no retry, no fallback: the text cannot be taken back


# -- the local answer is never silently replaced by nothing ----------------------------------


@pytest.mark.parametrize("prefix", ["openai", "hosted_vllm"])
@pytest.mark.parametrize("mode", ["route", "stream"])
async def test_malformed_stream_is_not_an_empty_answer(
    server: FaultServer, slm: ScriptedLocalModel, prefix: str, mode: str
) -> None:
    # hosted_vllm skips an SSE event that is not JSON and ends the stream "successfully"
    # with no text; that must count as a failure, not as an empty strong answer
    server.default = "malformed"
    router, seen = make_router(server, slm, prefix=prefix, max_retries=0)
    outcome = await drive(router, "garbled", mode)
    assert outcome.error is None and outcome.response is not None
    assert outcome.text == LOCAL_TEXT
    decision = outcome.response.decision
    assert decision.error and decision.answered_by == "scripted-slm"
    assert seen == [decision]


async def test_confident_answers_never_reach_the_server(
    server: FaultServer, slm: ScriptedLocalModel
) -> None:
    server.default = "500"
    router, seen = make_router(server, slm, policy="raise")
    response = await router.aroute("sure?")
    assert response.text == "391" and not response.decision.escalated
    assert server.requests == [] and seen == [response.decision]


async def test_batch_reports_each_failure_separately(
    server: FaultServer, slm: ScriptedLocalModel
) -> None:
    router, seen = make_router(server, slm, max_retries=0)
    prompts = ["sure?", "fine [[fault:500]]", "ok then", "slow [[fault:429]]"]
    responses = await router.aroute_batch(prompts)
    assert [r.text for r in responses] == [
        "391",
        LOCAL_TEXT,
        echo("primary", "ok then"),
        LOCAL_TEXT,
    ]
    assert [r.decision.error is not None for r in responses] == [False, True, False, True]
    assert sorted(d.id for d in seen) == sorted(r.decision.id for r in responses)  # type: ignore[union-attr]
    sync = await asyncio.to_thread(router.route_batch, prompts)
    assert [r.text for r in sync] == [r.text for r in responses]
