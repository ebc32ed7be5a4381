"""Early escalation: when the running confidence stops an answer, and what the router does then."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import pytest

from confroute.errors import ConfigurationError
from confroute.estimators import EstimationContext, Estimator
from confroute.generation import Generation
from confroute.local import GenerationConfig
from confroute.serving.batcher import MicroBatcher
from confroute.serving.early import (
    EarlyEscalation,
    EarlyEscalationRouter,
    stopped_early_at,
)
from tests.fakes import ScriptedLocalModel


def _lp(*probs: float) -> list[float]:
    return [math.log(p) for p in probs]


def test_a_hopeless_answer_stops_at_the_first_check() -> None:
    early = EarlyEscalation(threshold=0.8, every=4, margin=0.2, min_tokens=4)
    assert early.cutoff == pytest.approx(0.6)
    # running perplexity-confidence after 4 tokens: exp(mean log 0.3) = 0.3 < 0.6
    assert early.replay(_lp(0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3)) == 4


def test_a_confident_answer_never_stops() -> None:
    early = EarlyEscalation(threshold=0.8, every=2, margin=0.2, min_tokens=2)
    assert early.replay(_lp(0.99, 0.9, 0.95, 0.97, 0.99, 0.9)) is None


def test_checks_happen_only_every_k_tokens_after_min_tokens() -> None:
    early = EarlyEscalation(threshold=0.8, every=3, margin=0.2, min_tokens=6)
    # the answer turns hopeless at token 2, but the first check is at token 6
    assert early.replay(_lp(0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1)) == 6
    # a weak start that recovers by the check is not stopped
    assert early.replay(_lp(0.5, 0.99, 0.99, 0.99, 0.99, 0.99)) is None


def test_the_stop_is_strictly_below_threshold_minus_margin() -> None:
    early = EarlyEscalation(threshold=0.8, every=1, margin=0.3, min_tokens=1)
    assert early.replay(_lp(0.5)) is None  # exactly at the cutoff 0.5
    assert early.replay(_lp(0.49)) == 1


def test_running_measures() -> None:
    probs = _lp(0.9, 0.9, 0.05, 0.9)
    flat = {"every": 4, "min_tokens": 4, "margin": 0.0}
    # avg prob 0.6875, perplexity ~0.43, min prob 0.05
    assert EarlyEscalation(threshold=0.6, measure="avg_token_prob", **flat).replay(probs) is None
    assert EarlyEscalation(threshold=0.7, measure="avg_token_prob", **flat).replay(probs) == 4
    assert EarlyEscalation(threshold=0.4, measure="perplexity", **flat).replay(probs) is None
    assert EarlyEscalation(threshold=0.5, measure="perplexity", **flat).replay(probs) == 4
    assert EarlyEscalation(threshold=0.04, measure="min_token_prob", **flat).replay(probs) is None
    assert EarlyEscalation(threshold=0.06, measure="min_token_prob", **flat).replay(probs) == 4
    entropy = EarlyEscalation(threshold=0.5, measure="mean_token_entropy", **flat)
    assert entropy.replay(probs, [0.1, 0.1, 0.1, 0.1]) is None  # exp(-0.1) = 0.905
    assert entropy.replay(probs, [1.0, 1.0, 1.0, 1.0]) == 4  # exp(-1) = 0.368


def test_rows_of_a_batch_are_tracked_separately() -> None:
    monitor = EarlyEscalation(threshold=0.8, every=2, margin=0.2, min_tokens=2)(3)
    assert monitor(0, [1, 2, 3], _lp(0.9, 0.1, 0.5), [0, 0, 0]) == [False, False, False]
    assert monitor(1, [1, 2, 3], _lp(0.9, 0.1, 0.9), [0, 0, 0]) == [False, True, False]


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="every"):
        EarlyEscalation(every=0)
    with pytest.raises(ConfigurationError, match="min_tokens"):
        EarlyEscalation(min_tokens=0)
    with pytest.raises(ConfigurationError, match="margin"):
        EarlyEscalation(margin=1.5)
    with pytest.raises(ConfigurationError, match="threshold"):
        EarlyEscalation(threshold=-0.1)
    with pytest.raises(ConfigurationError, match="measure"):
        EarlyEscalation(measure="p_true")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="needs a threshold"):
        EarlyEscalation()(1)
    assert EarlyEscalation(threshold=0.5) == EarlyEscalation(threshold=0.5)  # batchable


def test_the_local_model_hook_stops_rows_and_marks_them(tiny_lm) -> None:  # type: ignore[no-untyped-def]
    prompts = [tiny_lm.encode(tiny_lm.render([{"role": "user", "content": q}])) for q in "ab"]
    plain = tiny_lm.generate_from_ids(prompts, GenerationConfig(max_new_tokens=8))

    def stop_row_zero_after_three(batch: int):  # type: ignore[no-untyped-def]
        def monitor(step: int, ids: Sequence[int], lps: Sequence[float], ents: Sequence[float]):  # type: ignore[no-untyped-def]
            assert len(ids) == len(lps) == len(ents) == batch
            return [step == 2, False]

        return monitor

    config = GenerationConfig(max_new_tokens=8, step_monitor=stop_row_zero_after_three)
    stopped, other = tiny_lm.generate_from_ids(prompts, config)
    assert plain[0].completion_tokens > 3  # the tiny model writes up to the cap
    assert stopped_early_at(stopped) == 3
    assert stopped.token_ids == plain[0].token_ids[:3]
    assert stopped.finish_reason == "length"
    assert stopped_early_at(other) is None
    assert other.token_ids == plain[1].token_ids
    assert stopped_early_at(None) is None


class AlwaysSure(Estimator):
    """Claims 0.99 whatever the answer (to show that an early stop overrides the estimator)."""

    name: ClassVar[str] = "always_sure"

    def confidence(self, generation: Generation, context: EstimationContext) -> float | None:
        del generation, context
        return 0.99


def test_router_escalates_an_answer_stopped_early(tiny_lm, provider) -> None:  # type: ignore[no-untyped-def]
    early = EarlyEscalation(threshold=1.0, margin=0.0, every=2, min_tokens=2)
    router = EarlyEscalationRouter(
        tiny_lm,
        "scripted/strong",
        estimator=AlwaysSure(),
        threshold=0.5,
        max_new_tokens=8,
        early_escalation=early,
    )
    response = router.route("What is 17*23?")
    assert stopped_early_at(response.local) == 2
    assert response.decision.escalated is True
    assert response.decision.reason == "low_confidence"
    assert response.decision.confidence == 0.99
    assert response.text == "strong answer"
    assert len(provider.calls) == 1


def test_router_local_only_reports_the_would_be_escalation(tiny_lm) -> None:  # type: ignore[no-untyped-def]
    early = EarlyEscalation(margin=0.0, every=2, min_tokens=2)
    router = EarlyEscalationRouter(
        tiny_lm, None, threshold=1.0, max_new_tokens=8, early_escalation=early
    )
    assert router.early_escalation.threshold == 1.0  # taken from the fixed threshold
    response = router.route("What is 17*23?")
    assert stopped_early_at(response.local) == 2
    assert (response.decision.escalated, response.decision.reason) == (False, "local_only")


def test_router_keeps_confident_answers_unchanged(provider) -> None:  # type: ignore[no-untyped-def]
    slm = ScriptedLocalModel(script={"sure?": ("391", (0.99, 0.98, 0.97))})
    router = EarlyEscalationRouter(
        MicroBatcher(slm), "scripted/strong", threshold=0.8, early_escalation=EarlyEscalation()
    )
    assert router.defaults.step_monitor == EarlyEscalation(threshold=0.8)
    response = router.route("sure?")
    assert (response.text, response.decision.escalated) == ("391", False)
    assert provider.calls == []


def test_router_needs_a_threshold_for_other_policies(scripted_slm) -> None:  # type: ignore[no-untyped-def]
    class Always:
        def decide(self, confidence: float | None, answer_format: str | None = None):  # type: ignore[no-untyped-def]
            from confroute.policies import Verdict

            return Verdict(False, 0.3, "confident")

    with pytest.raises(ConfigurationError, match=r"EarlyEscalation\(threshold=\.\.\.\)"):
        EarlyEscalationRouter(
            scripted_slm, None, policy=Always(), early_escalation=EarlyEscalation()
        )
    router = EarlyEscalationRouter(
        scripted_slm, None, policy=Always(), early_escalation=EarlyEscalation(threshold=0.3)
    )
    assert router.early_escalation.cutoff == pytest.approx(0.1)
    with pytest.raises(ConfigurationError, match="must be an EarlyEscalation"):
        EarlyEscalationRouter(scripted_slm, None, early_escalation=0.5)  # type: ignore[arg-type]
