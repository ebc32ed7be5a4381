"""The one policy contract: every shipped policy takes ``answer_format`` and compares alike."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from confroute.bounds import check_unit_interval
from confroute.calibration import CalibrationProfile, PoolItem, ProfileFingerprint, check_rate
from confroute.errors import CalibrationError, ConfigurationError
from confroute.policies import (
    FixedThreshold,
    OnlineBudget,
    RiskControlledThreshold,
    RoutingPolicy,
    StreamingQuantile,
    TargetEscalationRate,
    Verdict,
    compare,
)

FP = ProfileFingerprint(model_name="slm", model_fingerprint="a" * 64, estimator="perplexity")
VALUES: list[float | None] = [None, 0.0, 0.25, 0.5, 0.7, 1.0]


def _profile() -> CalibrationProfile:
    letters = [
        PoolItem(
            dataset="d",
            item_id=f"l{i}",
            confidence=0.2 + 0.2 * i / 49,
            answer_format="letter",
            correct=i > 10,
        )
        for i in range(50)
    ]
    yes_no = [
        PoolItem(
            dataset="d",
            item_id=f"y{i}",
            confidence=0.6 + 0.3 * i / 49,
            answer_format="yes_no",
            correct=True,
        )
        for i in range(50)
    ]
    return CalibrationProfile.from_pool(letters + yes_no, FP)


PROFILE = _profile()
POOLED = 0.320408  # PROFILE.threshold_for(0.3)
YES_NO = 0.688776  # PROFILE.threshold_for(0.3, "yes_no")

# (escalate, reason) for VALUES, measured on the code before the policies shared `compare`
POOLED_VERDICTS = [
    (True, "no_confidence"),
    (True, "low_confidence"),
    (True, "low_confidence"),
    (False, "confident"),
    (False, "confident"),
    (False, "confident"),
]
YES_NO_VERDICTS = [
    (True, "no_confidence"),
    (True, "low_confidence"),
    (True, "low_confidence"),
    (True, "low_confidence"),
    (False, "confident"),
    (False, "confident"),
]

CASES: list[tuple[str, Callable[[], RoutingPolicy], float, list[tuple[bool, str]]]] = [
    ("fixed", lambda: FixedThreshold(0.5), 0.5, POOLED_VERDICTS),
    ("target", lambda: TargetEscalationRate(PROFILE, 0.3), POOLED, POOLED_VERDICTS),
    (
        "target_per_format",
        lambda: TargetEscalationRate(PROFILE, 0.3, per_format=True),
        YES_NO,
        YES_NO_VERDICTS,
    ),
    (
        "risk_none_pass",
        lambda: RiskControlledThreshold(PROFILE, alpha=0.1),
        1.0,
        [(True, "low_confidence")] * 6,
    ),
    (
        "risk",
        lambda: RiskControlledThreshold(PROFILE, alpha=0.95),
        0.2,
        [(True, "no_confidence"), (True, "low_confidence")] + [(False, "confident")] * 4,
    ),
    ("online", lambda: OnlineBudget(0.3, PROFILE), POOLED, POOLED_VERDICTS),
    ("streaming", lambda: StreamingQuantile(0.3, PROFILE), POOLED, POOLED_VERDICTS),
    (
        "streaming_per_format",
        lambda: StreamingQuantile(0.3, PROFILE, per_format=True),
        YES_NO,
        YES_NO_VERDICTS,
    ),
]


@pytest.mark.parametrize(
    ("name", "make", "threshold", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_every_policy_takes_answer_format_and_keeps_its_verdicts(
    name: str,
    make: Callable[[], RoutingPolicy],
    threshold: float,
    expected: list[tuple[bool, str]],
) -> None:
    for value, (escalate, reason) in zip(VALUES, expected, strict=True):
        policy = make()  # fresh: the adaptive policies move after each decision
        assert isinstance(policy, RoutingPolicy)
        verdict = policy.decide(value, answer_format="yes_no")
        assert (verdict.escalate, verdict.reason) == (escalate, reason), (name, value)
        assert verdict.threshold == pytest.approx(threshold, abs=1e-6)


def test_adaptive_policies_keep_their_sequence_of_verdicts() -> None:
    online = OnlineBudget(0.3, PROFILE, step=0.1)
    seen = [online.decide(v, answer_format="letter") for v in (0.9, 0.1, None, 0.6)]
    assert [(v.escalate, round(v.threshold, 6), v.reason) for v in seen] == [
        (False, 0.320408, "confident"),
        (True, 0.350408, "low_confidence"),
        (True, 0.280408, "no_confidence"),
        (False, 0.210408, "confident"),
    ]
    assert online.threshold == pytest.approx(0.240408, abs=1e-6)
    streaming = StreamingQuantile(0.3, PROFILE)
    seen = [streaming.decide(v, answer_format="letter") for v in (0.9, 0.1, None, 0.6)]
    assert [(v.escalate, round(v.threshold, 6), v.reason) for v in seen] == [
        (False, 0.320408, "confident"),
        (True, 0.336735, "low_confidence"),
        (True, 0.304082, "no_confidence"),
        (False, 0.263265, "confident"),
    ]


@pytest.mark.parametrize(
    ("confidence", "threshold", "expected"),
    [
        (1.0, 1.0, Verdict(True, 1.0, "low_confidence")),
        (None, 1.0, Verdict(True, 1.0, "low_confidence")),
        (None, 0.4, Verdict(True, 0.4, "no_confidence")),
        (None, 0.0, Verdict(False, 0.0, "no_confidence")),
        (0.39, 0.4, Verdict(True, 0.4, "low_confidence")),
        (0.4, 0.4, Verdict(False, 0.4, "confident")),
        (0.0, 0.0, Verdict(False, 0.0, "confident")),
    ],
)
def test_compare(confidence: float | None, threshold: float, expected: Verdict) -> None:
    assert compare(confidence, threshold) == expected


def test_a_rate_of_one_escalates_everything_as_low_confidence() -> None:
    streaming = StreamingQuantile(1.0, PROFILE)
    assert [streaming.decide(v).reason for v in (1.0, None)] == ["low_confidence"] * 2
    assert all(streaming.decide(v).escalate for v in (1.0, None))
    online = OnlineBudget(1.0, PROFILE)
    assert online.threshold == 1.0
    assert online.decide(1.0) == Verdict(True, 1.0, "low_confidence")


@pytest.mark.parametrize("bad", [-0.1, 1.01, math.nan, "high", None])
def test_one_unit_interval_check(bad: object) -> None:
    with pytest.raises(ConfigurationError, match=r"threshold must be .*\[0, 1\]"):
        check_unit_interval("threshold", bad)  # type: ignore[arg-type]
    with pytest.raises(CalibrationError, match=r"alpha must be .*\[0, 1\]"):
        check_rate(bad, "alpha")  # type: ignore[arg-type]
    assert check_unit_interval("margin", 1) == 1.0 and check_rate(0.25) == 0.25
