"""Calibration profiles, the paper's calibration set, and data-driven policies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from confroute.calibration import (
    CalibrationProfile,
    PoolItem,
    ProfileFingerprint,
    build_calibration_set,
)
from confroute.errors import CalibrationError, ProfileMismatchError
from confroute.policies import (
    OnlineBudget,
    RiskControlledThreshold,
    TargetEscalationRate,
    clopper_pearson_upper,
    ks_statistic,
)

FP = ProfileFingerprint(model_name="slm", model_fingerprint="a" * 64, estimator="perplexity")


def pool_from(
    values: np.ndarray, correct: np.ndarray | None = None, dataset: str = "d"
) -> list[PoolItem]:
    return [
        PoolItem(
            dataset=dataset,
            item_id=str(i),
            confidence=float(v),
            correct=None if correct is None else bool(correct[i]),
        )
        for i, v in enumerate(values)
    ]


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.25, 0.3, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("dist", ["uniform", "beta", "normal"])
def test_quantile_thresholds_hit_their_rates_exactly(rate: float, dist: str) -> None:
    rng = np.random.default_rng(1)
    values = {
        "uniform": rng.uniform(size=1000),
        "beta": rng.beta(5, 2, size=1000),
        "normal": np.clip(rng.normal(0.6, 0.1, size=1000), 0, 1),
    }[dist]
    profile = CalibrationProfile.from_pool(pool_from(values), FP)
    threshold = profile.threshold_for(rate)
    achieved = np.mean(values < threshold) if threshold < 1.0 else 1.0
    assert achieved == pytest.approx(rate, abs=1e-12)
    assert profile.escalation_rate_at(threshold) == pytest.approx(rate, abs=1e-12)


@given(st.lists(st.floats(0, 1), min_size=1, max_size=50), st.floats(0, 1))
@settings(max_examples=50, deadline=None)
def test_threshold_is_monotone_in_rate(values: list[float], rate: float) -> None:
    profile = CalibrationProfile.from_pool(pool_from(np.asarray(values)), FP)
    assert profile.threshold_for(rate) <= profile.threshold_for(min(1.0, rate + 0.1))


def test_calibration_set_samples_each_bin_in_proportion() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.uniform(0, 0.3, 4000), rng.uniform(0.7, 1.0, 6000)])
    items = pool_from(values[:5000], dataset="a") + pool_from(values[5000:], dataset="b")
    profile = build_calibration_set(items, FP, bins=30, fraction=0.1, seed=3)
    assert 900 <= profile.size <= 1100
    share_low = np.mean(np.asarray(profile.confidences) < 0.5)
    assert share_low == pytest.approx(0.4, abs=0.03)
    assert {e.dataset for e in profile.manifest} == {"a", "b"}
    assert profile.construction["pool_size"] == 10000 and profile.construction["bins"] == 30
    again = build_calibration_set(items, FP, bins=30, fraction=0.1, seed=3)
    assert again == profile


def test_calibration_thresholds_transfer_within_a_distribution() -> None:
    rng = np.random.default_rng(5)
    profile = build_calibration_set(pool_from(rng.beta(4, 2, 20000)), FP, seed=1)
    unseen = rng.beta(4, 2, 5000)
    for rate in (0.1, 0.3, 0.5):
        assert np.mean(unseen < profile.threshold_for(rate)) == pytest.approx(rate, abs=0.03)


def test_predicted_routing_curve_uses_labels() -> None:
    values = np.linspace(0.05, 0.95, 10)
    correct = np.array([0, 0, 0, 1, 0, 1, 1, 1, 1, 1], dtype=bool)
    items = pool_from(values, correct)
    items = [i.model_copy(update={"strong_correct": True}) for i in items]
    profile = CalibrationProfile.from_pool(items, FP)
    curve = {round(p.escalation_rate, 2): p for p in profile.predicted_routing_curve([0, 0.3, 1])}
    assert curve[0.0].kept_accuracy == pytest.approx(0.6)
    assert curve[0.3].kept_accuracy == pytest.approx(6 / 7)
    assert curve[0.3].system_accuracy == pytest.approx(0.9)
    assert curve[1.0].kept_accuracy is None and curve[1.0].system_accuracy == 1.0


def test_profile_round_trips_as_json(tmp_path: Path) -> None:
    profile = CalibrationProfile.from_pool(pool_from(np.array([0.2, 0.5, 0.9])), FP)
    path = tmp_path / "p.json"
    profile.save(path)
    assert json.loads(path.read_text())["fingerprint"]["estimator"] == "perplexity"
    assert CalibrationProfile.load(path) == profile


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ('{"fingerprint": {}}', "not a valid calibration profile"),
        ('{"format": 99}', "format 99"),
    ],
)
def test_corrupt_profile_gives_a_clear_error(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(CalibrationError, match=fragment):
        CalibrationProfile.load(path)


def test_bad_inputs_give_clear_errors() -> None:
    with pytest.raises(CalibrationError, match="empty"):
        build_calibration_set([], FP)
    with pytest.raises(CalibrationError, match="empty"):
        CalibrationProfile.from_pool([], FP)
    profile = CalibrationProfile.from_pool(pool_from(np.array([0.5])), FP)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(CalibrationError, match=r"\[0, 1\]"):
            profile.threshold_for(bad)


def test_profile_for_another_model_is_refused_naming_both() -> None:
    profile = CalibrationProfile.from_pool(pool_from(np.array([0.5])), FP)
    with pytest.raises(ProfileMismatchError) as info:
        profile.check_compatible("b" * 64, "perplexity", model_name="other")
    assert "aaaaaaaaaaaa" in str(info.value) and "bbbbbbbbbbbb" in str(info.value)
    with pytest.warns(UserWarning, match="another setting"):
        profile.check_compatible("b" * 64, "perplexity", strict=False)
    profile.check_compatible("a" * 64, "perplexity")  # same setting: silent


def test_target_rate_policy() -> None:
    values = np.linspace(0, 1, 101)
    policy = TargetEscalationRate(CalibrationProfile.from_pool(pool_from(values), FP), 0.3)
    escalated = [policy.decide(float(v)).escalate for v in values]
    assert sum(escalated) == 30


def test_clopper_pearson_matches_known_values() -> None:
    # 0 errors in n: upper bound is 1 - delta**(1/n)
    assert clopper_pearson_upper(0, 50, 0.05) == pytest.approx(1 - 0.05 ** (1 / 50), abs=1e-9)
    # k = n/2 for large n sits a little above one half
    assert 0.5 < clopper_pearson_upper(500, 1000, 0.05) < 0.53
    assert clopper_pearson_upper(0, 0, 0.1) == 1.0


def test_risk_controlled_threshold_holds_its_promise_across_seeds() -> None:
    alpha, delta, violations, seeds = 0.15, 0.1, 0, 200
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        conf = rng.uniform(size=400)
        correct = rng.uniform(size=400) < conf  # P(correct | c) = c
        profile = CalibrationProfile.from_pool(pool_from(conf, correct), FP)
        policy = RiskControlledThreshold(profile, alpha=alpha, delta=delta)
        t = policy.threshold
        # true error among kept, for P(correct | c) = c and c ~ U(0, 1): (1 - t) / 2
        true_error = (1 - t) / 2 if t < 1.0 else 0.0
        violations += true_error > alpha
    assert violations / seeds <= delta


def test_risk_controlled_needs_labels() -> None:
    profile = CalibrationProfile.from_pool(pool_from(np.array([0.5, 0.6])), FP)
    with pytest.raises(CalibrationError, match="labels"):
        RiskControlledThreshold(profile, alpha=0.1)


def test_online_budget_converges_after_a_shift() -> None:
    rng = np.random.default_rng(0)
    calibration = CalibrationProfile.from_pool(pool_from(rng.beta(5, 2, 2000)), FP)
    budget = OnlineBudget(0.3, calibration, step=0.005, window=1000)
    for value in rng.beta(5, 2, 3000):
        budget.decide(float(value))
    assert budget.recent_rate() == pytest.approx(0.3, abs=0.05)
    assert (budget.drift() or 0.0) < 0.1
    for value in rng.beta(2, 5, 6000):  # confidences drop: a fixed threshold would escalate ~90%
        budget.decide(float(value))
    assert budget.recent_rate() == pytest.approx(0.3, abs=0.05)
    assert (budget.drift() or 0.0) > 0.4


def test_ks_statistic() -> None:
    a = np.linspace(0, 1, 100)
    assert ks_statistic(a, a) == 0.0
    assert ks_statistic(a * 0.5, a * 0.5 + 0.5) == pytest.approx(1.0, abs=0.02)


def test_streaming_quantile_starts_at_the_profile_and_follows_a_shift() -> None:
    from confroute.policies import StreamingQuantile

    rng = np.random.default_rng(0)
    profile = CalibrationProfile.from_pool(pool_from(rng.beta(5, 2, 1000)), FP)
    policy = StreamingQuantile(0.3, profile)
    assert policy.threshold == pytest.approx(profile.threshold_for(0.3))
    # confidences drop: the profile's threshold alone would escalate ~90%
    shifted = rng.beta(2, 5, 3000)
    escalated = np.array([policy.decide(float(v)).escalate for v in shifted])
    assert escalated[:10].mean() > 0.6  # near the profile's threshold at first
    assert escalated[500:].mean() == pytest.approx(0.3, abs=0.03)


def test_streaming_quantile_edges_and_missing_confidences() -> None:
    from confroute.policies import StreamingQuantile

    profile = CalibrationProfile.from_pool(pool_from(np.linspace(0, 1, 101)), FP)
    never = StreamingQuantile(0.0, profile)
    always = StreamingQuantile(1.0, profile)
    assert not any(never.decide(v).escalate for v in (0.0, 0.5, None))
    assert all(always.decide(v).escalate for v in (0.0, 1.0))
    verdict = StreamingQuantile(0.5, profile).decide(None)
    assert verdict.escalate and verdict.reason == "no_confidence"
    with pytest.raises(CalibrationError):
        StreamingQuantile(0.5, profile, window=0)
    with pytest.raises(CalibrationError):
        StreamingQuantile(1.5, profile)
    cold = StreamingQuantile(0.5)  # no profile: the first request escalates, then it learns
    assert cold.decide(0.9).escalate
    values = np.random.default_rng(2).uniform(0, 1, 400)
    decisions = [cold.decide(float(v)).escalate for v in values]
    assert 0.4 < np.mean(decisions[100:]) < 0.6


def test_streaming_quantile_keeps_a_window_per_answer_format() -> None:
    from confroute.policies import StreamingQuantile

    items = [
        PoolItem(dataset="mc", item_id=f"m{i}", confidence=v, answer_format="letter")
        for i, v in enumerate(np.linspace(0.2, 0.4, 50))
    ] + [
        PoolItem(dataset="yn", item_id=f"y{i}", confidence=v, answer_format="yes_no")
        for i, v in enumerate(np.linspace(0.6, 0.9, 50))
    ]
    profile = CalibrationProfile.from_pool(items, FP)
    policy = StreamingQuantile(0.5, profile, per_format=True)
    assert policy.threshold_for("letter") == pytest.approx(0.3, abs=0.01)
    assert policy.threshold_for("yes_no") == pytest.approx(0.75, abs=0.01)
    rng = np.random.default_rng(1)
    for _ in range(300):  # yes/no traffic moves up; letters are untouched
        policy.decide(float(rng.uniform(0.9, 1.0)), answer_format="yes_no")
    assert policy.threshold_for("yes_no") > 0.9
    assert policy.threshold_for("letter") == pytest.approx(0.3, abs=0.01)
    assert StreamingQuantile(0.5, profile).threshold_for("letter") == pytest.approx(
        profile.threshold_for(0.5)
    )  # per_format off: one pooled window
