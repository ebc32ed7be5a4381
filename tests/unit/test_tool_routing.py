"""The router decides a tool-call answer with the tool estimator and its own threshold."""

from __future__ import annotations

import pytest

from confroute import ConfRouter, LocalModel
from confroute.decision import RoutingDecision
from confroute.errors import ConfigurationError
from confroute.policies import StreamingQuantile
from confroute.settings import DEFAULT_TOOL_THRESHOLD, RouterSettings
from tests.fakes import ScriptedLocalModel, ScriptedProvider

TOOLS = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
CALL = '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>'
UNSURE = [0.05 if i == CALL.index("2") else 0.99 for i in range(len(CALL))]  # one value unsure
SURE = [0.99] * len(CALL)


def _slm() -> ScriptedLocalModel:
    return ScriptedLocalModel(
        script={"unsure": (CALL, UNSURE), "sure": (CALL, SURE), "hi": ("hello", (0.9,) * 5)}
    )


def _router(**changes: object) -> tuple[ConfRouter, list[RoutingDecision]]:
    seen: list[RoutingDecision] = []
    router = ConfRouter(_slm(), "scripted/strong", max_retries=0, hooks=[seen.append], **changes)
    return router, seen


def test_the_tool_estimator_decides_a_call_that_perplexity_would_keep(
    provider: ScriptedProvider,
) -> None:
    router, seen = _router(threshold=0.5)
    response = router.route("unsure", tools=TOOLS)
    decision = response.decision
    assert decision.escalated and decision.reason == "low_confidence"
    assert decision.estimator == "tool_call"
    assert decision.threshold == DEFAULT_TOOL_THRESHOLD  # the tool threshold, not 0.5
    assert set(decision.confidences) == {"perplexity", "tool_call"}
    assert decision.confidence == decision.confidences["tool_call"]
    assert decision.confidence is not None and decision.confidence <= 0.05
    primary = decision.confidences["perplexity"]
    assert primary is not None and primary > 0.5  # the primary estimator would have kept it
    assert seen == [decision]  # reported once, with the same fields


def test_a_sure_call_is_kept_and_the_tool_threshold_is_its_own_setting(
    provider: ScriptedProvider,
) -> None:
    kept, _ = _router(threshold=0.99)  # the primary threshold does not apply to calls
    decision = kept.route("sure", tools=TOOLS).decision
    assert not decision.escalated and decision.reason == "confident"
    assert decision.estimator == "tool_call" and decision.threshold == DEFAULT_TOOL_THRESHOLD
    strict, _ = _router(threshold=0.0, tool_threshold=0.999)
    decision = strict.route("sure", tools=TOOLS).decision
    assert decision.escalated and decision.threshold == 0.999


def test_a_text_answer_keeps_the_primary_estimator(provider: ScriptedProvider) -> None:
    router, _ = _router(threshold=0.5)
    decision = router.route("hi", tools=TOOLS).decision
    assert decision.estimator == "perplexity" and decision.threshold == 0.5
    assert not decision.escalated and decision.confidence == pytest.approx(0.9)
    assert "tool_call" not in decision.confidences  # computed only for call answers


def test_turned_off_the_primary_estimator_decides_calls(provider: ScriptedProvider) -> None:
    router, _ = _router(threshold=0.5, tool_estimator=None)
    assert router.tool_routing is None
    decision = router.route("unsure", tools=TOOLS).decision
    assert not decision.escalated and decision.estimator == "perplexity"
    assert list(decision.confidences) == ["perplexity"]


def test_a_tool_estimator_that_is_the_primary_or_an_extra_one_is_not_computed_twice(
    provider: ScriptedProvider,
) -> None:
    primary, _ = _router(estimator="tool_call", threshold=0.5)
    assert primary.tool_routing is None  # one estimator, one threshold: the policy decides
    assert primary.route("unsure", tools=TOOLS).decision.threshold == 0.5
    extra, _ = _router(extra_estimators=["tool_call"], threshold=0.5)
    assert extra.tool_routing is not None
    assert extra.tool_routing.estimator is extra.extra_estimators[0]
    assert [e.name for e in extra.computed_estimators] == ["perplexity", "tool_call"]
    decision = extra.route("unsure", tools=TOOLS).decision
    assert decision.escalated and decision.estimator == "tool_call"


def test_an_escalated_call_is_paid_for_by_a_cap(provider: ScriptedProvider) -> None:
    router, _ = _router(threshold=0.5, max_escalation_rate=0.5, budget_window=4)
    assert router.route("unsure", tools=TOOLS).decision.escalated
    cap = getattr(router.policy, "cap")  # noqa: B009 (EscalationCap's public attribute)
    assert cap.state() == [1]
    router.route("hi", tools=TOOLS)  # kept by the primary policy: counted as kept
    assert cap.state() == [1, 0]


def test_an_escalated_call_is_counted_by_a_rate_policy(provider: ScriptedProvider) -> None:
    policy = StreamingQuantile(0.5)
    router, _ = _router(policy=policy)
    assert router.route("unsure", tools=TOOLS).decision.escalated
    assert (policy.requests, policy.escalated) == (1, 1)
    assert router.route("sure", tools=TOOLS).decision.reason == "confident"
    assert (policy.requests, policy.escalated) == (2, 1)  # a kept call is a request too
    assert len(policy.state()["windows"].get("any", [])) == 0  # its confidence is not mixed in


def test_a_cap_refuses_a_call_escalation_once_the_window_is_spent(
    provider: ScriptedProvider,
) -> None:
    router, _ = _router(threshold=0.5, max_escalation_rate=0.5, budget_window=2)
    assert router.route("unsure", tools=TOOLS).decision.escalated
    refused = router.route("unsure", tools=TOOLS).decision
    assert not refused.escalated and refused.reason == "budget_exhausted"
    assert refused.estimator == "tool_call" and refused.answered_by == refused.local_model
    cap = getattr(router.policy, "cap")  # noqa: B009 (EscalationCap's public attribute)
    assert cap.state() == [0]  # the refused call was counted as kept


def test_teacher_forced_scoring_of_a_call_names_the_tool_estimator(tiny_lm: LocalModel) -> None:
    router = ConfRouter(tiny_lm, None, threshold=0.5)
    scored = router.score("add 1 2", CALL, tools=TOOLS)
    assert scored.estimator == "tool_call" and scored.decided_by == "tool_call"
    assert set(scored.confidences) == {"perplexity", "tool_call"}
    assert scored.threshold == DEFAULT_TOOL_THRESHOLD
    text = router.score("add 1 2", "hello", tools=TOOLS)
    assert text.estimator == "perplexity" and text.threshold == 0.5


def test_bad_tool_settings_fail_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="tool_threshold must be in"):
        ConfRouter(_slm(), None, tool_threshold=1.5)
    with pytest.raises(ConfigurationError, match="Unknown estimator 'tool_cal'"):
        ConfRouter(_slm(), None, tool_estimator="tool_cal")
    assert RouterSettings().tool_estimator == "tool_call"
