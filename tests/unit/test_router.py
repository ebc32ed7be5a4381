"""ConfRouter branches on scripted local answers and a scripted LiteLLM provider."""

from __future__ import annotations

import json
import math
from pathlib import Path

import litellm
import pytest

from confroute import ConfRouter, EscalationError, RoutingDecision
from tests.fakes import ScriptedLocalModel, ScriptedProvider

SURE = math.exp(sum(math.log(p) for p in (0.99, 0.98, 0.97)) / 3)
UNSURE = math.exp(sum(math.log(p) for p in (0.2, 0.3, 0.4)) / 3)


def make_router(
    slm: ScriptedLocalModel, **kwargs: object
) -> tuple[ConfRouter, list[RoutingDecision]]:
    seen: list[RoutingDecision] = []
    strong = kwargs.pop("strong_model", "scripted/strong")
    options: dict[str, object] = {"threshold": 0.5, "max_retries": 0, "hooks": [seen.append]}
    options.update(kwargs)
    return ConfRouter(slm, strong, **options), seen  # type: ignore[arg-type]


def test_confident_answer_stays_local(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    router, seen = make_router(scripted_slm)
    response = router.route("sure?")
    assert response.text == "391"
    decision = response.decision
    assert not decision.escalated
    assert decision.reason == "confident"
    assert decision.confidence == pytest.approx(SURE)
    assert decision.answered_by == "scripted-slm"
    assert provider.calls == []
    assert seen == [decision]


def test_unsure_answer_escalates(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    router, seen = make_router(scripted_slm)
    response = router.route("unsure?")
    assert response.text == "strong answer"
    decision = response.decision
    assert decision.escalated and decision.reason == "low_confidence"
    assert decision.confidence == pytest.approx(UNSURE)
    assert decision.answered_by == "scripted/strong"
    assert decision.remote_prompt_tokens == 11 and decision.remote_completion_tokens == 3
    assert decision.attempts == 1
    assert provider.calls[0]["messages"] == [{"role": "user", "content": "unsure?"}]
    assert seen == [decision]


@pytest.mark.parametrize(("threshold", "escalated"), [(0.0, False), (1.0, True)])
def test_threshold_extremes(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider, threshold: float, escalated: bool
) -> None:
    router, _ = make_router(scripted_slm, threshold=threshold)
    assert router.route("sure?").decision.escalated is escalated
    assert router.route("unsure?").decision.escalated is escalated


def test_local_only_reports_would_be_escalations(scripted_slm: ScriptedLocalModel) -> None:
    router, seen = make_router(scripted_slm, strong_model=None)
    response = router.route("unsure?")
    assert response.text == "maybe 12"
    assert not response.decision.escalated
    assert response.decision.reason == "local_only"
    assert len(seen) == 1


def test_failed_escalation_returns_local_and_reports_error(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    provider.answers = [litellm.APIConnectionError("down", "scripted", "strong")]
    router, seen = make_router(scripted_slm)
    response = router.route("unsure?")
    assert response.text == "maybe 12"
    assert response.decision.escalated
    assert response.decision.answered_by == "scripted-slm"
    assert "APIConnectionError" in (response.decision.error or "")
    assert seen == [response.decision]


def test_failed_escalation_can_raise(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    provider.answers = [litellm.APIConnectionError("down", "scripted", "strong")]
    router, seen = make_router(scripted_slm, on_escalation_error="raise")
    with pytest.raises(EscalationError) as info:
        router.route("unsure?")
    assert info.value.provider == "scripted/strong"
    assert len(seen) == 1 and seen[0].error is not None


def test_retries_then_fallback(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    provider.answers = [
        litellm.RateLimitError("slow down", "scripted", "strong"),
        litellm.InternalServerError("boom", "scripted", "strong"),
        "fallback answer",
    ]
    router, _ = make_router(
        scripted_slm, max_retries=1, fallbacks=["scripted/backup"], strong_model="scripted/strong"
    )
    router.escalation.backoff_s = 0.0  # type: ignore[union-attr]
    response = router.route("unsure?")
    assert response.text == "fallback answer"
    assert response.decision.answered_by == "scripted/backup"
    assert response.decision.attempts == 3
    assert [c["model"] for c in provider.calls] == ["strong", "strong", "backup"]


def test_batch_runs_one_local_generation(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    router, seen = make_router(scripted_slm)
    responses = router.route_batch(["sure?", "unsure?", "sure?", "unsure?"])
    assert [r.decision.escalated for r in responses] == [False, True, False, True]
    assert [r.text for r in responses] == ["391", "strong answer", "391", "strong answer"]
    assert scripted_slm.calls == [4]
    assert len(seen) == 4


async def test_async_matches_sync(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    router, seen = make_router(scripted_slm)
    sync = [router.route(q).decision for q in ("sure?", "unsure?")]
    asynchronous = [(await router.aroute(q)).decision for q in ("sure?", "unsure?")]
    for a, b in zip(sync, asynchronous, strict=True):
        assert (a.escalated, a.reason, a.confidence, a.answered_by) == (
            b.escalated,
            b.reason,
            b.confidence,
            b.answered_by,
        )
    batch = await router.aroute_batch(["unsure?", "sure?"])
    assert [r.text for r in batch] == ["strong answer", "391"]
    assert len(seen) == 6


def test_stream_local_is_released_whole(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    router, seen = make_router(scripted_slm)
    chunks = list(router.stream("sure?"))
    assert [c.text for c in chunks if c.text] == ["391"]
    assert chunks[-1].response is not None and not chunks[-1].response.decision.escalated
    assert len(seen) == 1


def test_stream_escalated_streams_remote_tokens(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    provider.default = "one two three"
    router, seen = make_router(scripted_slm)
    chunks = list(router.stream("unsure?"))
    texts = [c.text for c in chunks if c.text]
    assert len(texts) >= 2
    assert "".join(texts) == "one two three"
    final = chunks[-1].response
    assert final is not None and final.decision.escalated and final.text == "one two three"
    assert len(seen) == 1


async def test_astream_escalated(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    provider.default = "alpha beta"
    router, _ = make_router(scripted_slm)
    chunks = [c async for c in router.astream("unsure?")]
    assert "".join(c.text for c in chunks) == "alpha beta"
    assert chunks[-1].response is not None and chunks[-1].response.decision.escalated


def test_context_overflow_escalates(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    router, _seen = make_router(scripted_slm)
    response = router.route("yes no " * 400)
    assert response.decision.reason == "context_overflow"
    assert response.decision.escalated and response.decision.confidence is None
    assert response.text == "strong answer"
    assert scripted_slm.calls == []


def test_context_overflow_without_answer_raises_on_failure(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    provider.answers = [litellm.APIConnectionError("down", "scripted", "strong")]
    router, seen = make_router(scripted_slm)
    with pytest.raises(EscalationError):
        router.route("yes no " * 400)
    assert seen[0].reason == "context_overflow" and seen[0].error


TOOLS = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]


def test_confident_tool_call_stays_local(provider: ScriptedProvider) -> None:
    call = '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>'
    slm = ScriptedLocalModel(script={"add 1 2": (call, (0.99,) * 3)})
    router, _ = make_router(slm)
    response = router.route("add 1 2", tools=TOOLS)
    assert not response.decision.escalated
    assert response.text == ""
    [tool_call] = response.tool_calls
    assert tool_call["function"]["name"] == "add"
    assert json.loads(tool_call["function"]["arguments"]) == {"a": 1, "b": 2}


def test_malformed_tool_call_escalates(provider: ScriptedProvider) -> None:
    slm = ScriptedLocalModel(script={"add 1 2": ('<tool_call>{"name": "add", "argu', (0.99,) * 3)})
    router, _ = make_router(slm)
    response = router.route("add 1 2", tools=TOOLS)
    assert response.decision.escalated and response.decision.reason == "malformed_tool_call"
    assert provider.calls[0]["optional_params"]["tools"][0]["function"]["name"] == "add"


def test_hook_failure_does_not_lose_the_answer(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    def broken(decision: RoutingDecision) -> None:
        raise RuntimeError("hook bug")

    router, _seen = make_router(scripted_slm, hooks=[broken])
    assert router.route("sure?").text == "391"


def test_secret_never_in_repr_or_decision(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    canary = "sk-canary-0123456789"
    provider.answers = [litellm.AuthenticationError(f"bad key {canary}", "scripted", "strong")]
    router, seen = make_router(scripted_slm, api_key=canary)
    response = router.route("unsure?")
    assert provider.calls[0]["api_key"] == canary  # the key does reach the provider
    for text in (
        repr(router),
        repr(router.escalation),
        response.decision.model_dump_json(),
        str(seen),
    ):
        assert canary not in text
    assert "**********" in (response.decision.error or "")


def test_invalid_settings_are_refused(scripted_slm: ScriptedLocalModel) -> None:
    from confroute.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="Unknown estimator"):
        ConfRouter(scripted_slm, None, estimator="nope")
    with pytest.raises(ConfigurationError, match=r"\[0, 1\]"):
        ConfRouter(scripted_slm, None, threshold=1.5)
    with pytest.raises(ConfigurationError, match="timeout"):
        ConfRouter(scripted_slm, "scripted/x", timeout=-1)


def test_context_overflow_without_strong_model_raises(scripted_slm: ScriptedLocalModel) -> None:
    from confroute.errors import ContextOverflowError

    router, seen = make_router(scripted_slm, strong_model=None)
    with pytest.raises(ContextOverflowError, match="context window"):
        router.route("yes no " * 400)
    assert len(seen) == 1 and seen[0].reason == "context_overflow" and not seen[0].escalated


def test_escalation_rate_uses_the_profile(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider, tmp_path: object
) -> None:
    from confroute.calibration import CalibrationProfile, PoolItem, ProfileFingerprint
    from confroute.errors import ConfigurationError, ProfileMismatchError
    from confroute.policies import StreamingQuantile, TargetEscalationRate

    fingerprint = ProfileFingerprint(
        model_name="scripted-slm", model_fingerprint="scripted-sha", estimator="perplexity"
    )
    items = [PoolItem(dataset="d", item_id=str(i), confidence=i / 10) for i in range(11)]
    profile = CalibrationProfile.from_pool(items, fingerprint)
    router = ConfRouter(
        scripted_slm,
        "scripted/strong",
        escalation_rate=0.5,
        profile=profile,
        adapt_to_traffic=False,
    )
    assert isinstance(router.policy, TargetEscalationRate)
    assert router.policy.threshold == pytest.approx(0.55)  # 6 of 11 below: round(5.5) = 6
    adaptive = ConfRouter(scripted_slm, None, escalation_rate=0.5, profile=profile)
    assert isinstance(adaptive.policy, StreamingQuantile)
    assert adaptive.policy.threshold == pytest.approx(0.55)  # starts from the profile
    assert router.route("unsure?").decision.escalated  # confidence ~0.29 < 0.55
    assert not router.route("sure?").decision.escalated
    other = profile.model_copy(
        update={"fingerprint": fingerprint.model_copy(update={"model_fingerprint": "f" * 64})}
    )
    with pytest.raises(ProfileMismatchError, match="ffffffffffff"):
        ConfRouter(scripted_slm, None, escalation_rate=0.5, profile=other)
    with pytest.warns(UserWarning):
        ConfRouter(scripted_slm, None, escalation_rate=0.5, profile=other, strict_profile=False)
    with pytest.raises(ConfigurationError, match="profile"):
        ConfRouter(scripted_slm, None, escalation_rate=0.5)
    with pytest.raises(ConfigurationError, match=r"\[0, 1\]"):
        ConfRouter(scripted_slm, None, escalation_rate=1.5, profile=profile)


def test_decision_reports_every_confidence(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    router = ConfRouter(
        scripted_slm, None, threshold=0.5, extra_estimators=["avg_token_prob", "min_token_prob"]
    )
    decision = router.route("sure?").decision
    assert set(decision.confidences) == {"perplexity", "avg_token_prob", "min_token_prob"}
    assert decision.confidences["min_token_prob"] == pytest.approx(0.97)
    assert decision.confidences["perplexity"] == decision.confidence


def test_single_stop_string_is_one_sequence(scripted_slm: ScriptedLocalModel) -> None:
    router = ConfRouter(scripted_slm, None)
    assert router.generation_config(None, None, "ab").stop == ("ab",)


def test_escalation_rate_finds_the_shipped_profile_and_thresholds_per_format(
    provider: ScriptedProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from confroute.calibration import CalibrationProfile, PoolItem, ProfileFingerprint
    from confroute.errors import ConfigurationError

    slm = ScriptedLocalModel(
        script={
            "Pick one:\nA. red\nB. blue": ("A", (0.5,)),
            "Is it red? Answer yes or no.": ("yes", (0.5,)),
            "Tell me a story.": ("Once", (0.5,)),
        }
    )
    fingerprint = ProfileFingerprint(
        model_name="scripted-slm", model_fingerprint="scripted-sha", estimator="perplexity"
    )
    # letter answers sit low (0.2-0.6), yes/no answers high (0.4-0.9)
    items = [
        PoolItem(
            dataset="mc", item_id=f"m{i}", confidence=0.2 + 0.4 * i / 39, answer_format="letter"
        )
        for i in range(40)
    ] + [
        PoolItem(
            dataset="yn", item_id=f"y{i}", confidence=0.4 + 0.5 * i / 39, answer_format="yes_no"
        )
        for i in range(40)
    ]
    folder = tmp_path / "scripted-slm"
    folder.mkdir()
    CalibrationProfile.from_pool(items, fingerprint).save(folder / "perplexity.json")
    with pytest.raises(ConfigurationError, match="none ships for model 'scripted-slm'"):
        ConfRouter(slm, None, escalation_rate=0.5)
    monkeypatch.setenv("CONFROUTE_PROFILE_DIR", str(tmp_path))
    seen: list[RoutingDecision] = []
    router = ConfRouter(
        slm, "scripted/strong", escalation_rate=0.5, hooks=[seen.append], adapt_to_traffic=False
    )
    assert router.policy.format_thresholds["letter"] < router.policy.threshold
    router.route("Pick one:\nA. red\nB. blue")  # 0.5 is above the letter median (0.4)
    router.route("Is it red? Answer yes or no.")  # 0.5 is below the yes/no median (0.65)
    router.route("Tell me a story.")  # no format: the pooled median (about 0.5)
    assert [d.escalated for d in seen[:2]] == [False, True]
    assert [round(d.threshold, 3) for d in seen] == [
        round(router.policy.format_thresholds["letter"], 3),
        round(router.policy.format_thresholds["yes_no"], 3),
        round(router.policy.threshold, 3),
    ]
    pooled = ConfRouter(
        slm, None, escalation_rate=0.5, per_format_thresholds=False, adapt_to_traffic=False
    )
    assert pooled.policy.format_thresholds == {}
    # the default, adaptive policy starts from the same per-format thresholds
    adaptive = ConfRouter(slm, None, escalation_rate=0.5)
    assert adaptive.policy.threshold_for("letter") == pytest.approx(
        router.policy.format_thresholds["letter"]
    )
    assert adaptive.policy.threshold_for("yes_no") == pytest.approx(
        router.policy.format_thresholds["yes_no"]
    )
