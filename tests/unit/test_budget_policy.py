"""The escalation budget on shifting traffic: the stated guarantee, the cap, the live state."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from confroute.errors import CalibrationError, ConfigurationError
from confroute.policies import (
    EscalationCap,
    FixedThreshold,
    StreamingQuantile,
    Verdict,
    check_cap,
    held_rate,
)
from tests.fakes import two_format_profile

PROFILE = two_format_profile()


def shifting_stream(every: int, length: int, seed: int = 0) -> np.ndarray:
    """Confidences of one format whose scale changes every ``every`` requests (4 tasks)."""
    rng = np.random.default_rng(seed)
    tasks = [(2.0, 8.0), (8.0, 2.0), (30.0, 30.0), (1.0, 1.0)]  # low, high, narrow, flat
    return np.array([rng.beta(*tasks[(t // every) % len(tasks)]) for t in range(length)])


def window_shares(escalated: np.ndarray, window: int = 100) -> np.ndarray:
    cumulative = np.concatenate([[0], np.cumsum(escalated)])
    return np.asarray((cumulative[window:] - cumulative[:-window]) / window, dtype=float)


@pytest.mark.parametrize("every", [50, 100, 200, 400])
@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5])
def test_held_rate_keeps_every_window_and_the_long_run_on_shifting_traffic(
    every: int, rate: float
) -> None:
    values = shifting_stream(every, 2400)
    policy = held_rate(rate, PROFILE)
    escalated = np.array([policy.decide(float(v), "letter").escalate for v in values])
    assert np.abs(window_shares(escalated) - rate).max() <= 0.05 + 1e-9
    assert abs(escalated.mean() - rate) <= 0.01
    # the plain running quantile (the old default) misses by far on the same stream
    plain = StreamingQuantile(rate, PROFILE, per_format=True)
    missed = np.array([plain.decide(float(v), "letter").escalate for v in values])
    assert np.abs(window_shares(missed) - rate).max() > 0.1


def test_the_feedback_bounds_the_escalated_count_for_any_order() -> None:
    # adversarial traffic: every confidence is a new extreme, so no quantile can be right
    horizon = 4.0
    policy = StreamingQuantile(0.3, PROFILE, window=50, horizon=horizon)
    values = np.concatenate([np.linspace(0, 1, 500), np.linspace(1, 0, 500), np.ones(300)])
    escalated = 0
    for n, value in enumerate(values, 1):
        escalated += policy.decide(float(value)).escalate
        assert abs(escalated - 0.3 * n) < horizon + 1
    assert policy.escalated == escalated and policy.requests == values.size


def test_within_a_task_the_least_confident_escalate() -> None:
    rng = np.random.default_rng(3)
    policy = held_rate(0.3, PROFILE)
    values = rng.beta(2, 5, 3000)
    escalated = np.array([policy.decide(float(v), "letter").escalate for v in values])
    late, flags = values[500:], escalated[500:]
    # a quantile policy: escalated answers lie below kept ones, up to the band's dithering
    assert np.quantile(late[flags], 0.9) < np.quantile(late[~flags], 0.3)
    assert flags.mean() == pytest.approx(0.3, abs=0.01)


def test_formats_keep_their_own_windows_under_one_budget() -> None:
    rng = np.random.default_rng(4)
    policy = held_rate(0.3, PROFILE)
    kinds = rng.choice(["letter", "yes_no"], 2000)
    values = np.where(kinds == "letter", rng.beta(2, 5, 2000), rng.beta(9, 1, 2000))
    escalated = np.array(
        [policy.decide(float(v), str(k)).escalate for v, k in zip(values, kinds, strict=True)]
    )
    for kind in ("letter", "yes_no"):
        assert escalated[500:][kinds[500:] == kind].mean() == pytest.approx(0.3, abs=0.06)
    # a finer key (letter:2) starts from the profile's letter items and keeps its own window
    fresh = held_rate(0.3, PROFILE)
    assert fresh.threshold_for("letter:2") == pytest.approx(fresh.threshold_for("letter"))
    assert fresh.threshold_for("letter") != pytest.approx(fresh.threshold_for("yes_no"))
    assert "letter:2" not in policy.state()["windows"]


def test_no_confidence_counts_as_the_lowest_and_is_budgeted() -> None:
    policy = held_rate(0.3, PROFILE)
    verdicts = [policy.decide(None) for _ in range(100)]
    assert verdicts[0] == Verdict(True, verdicts[0].threshold, "no_confidence")
    assert sum(v.escalate for v in verdicts) == pytest.approx(30, abs=5)
    # kept: the budget is spent (or the level reached 0); escalated: no confidence, or every
    # request escalates at level >= 1 (threshold 1.0)
    assert {v.reason for v in verdicts if not v.escalate} <= {"no_confidence", "budget_exhausted"}
    assert {v.reason for v in verdicts if v.escalate} <= {"no_confidence", "low_confidence"}


def test_cap_never_lets_a_window_exceed_it_and_says_why() -> None:
    capped = EscalationCap(FixedThreshold(1.0), max_escalation_rate=0.25, window=20)
    verdicts = [capped.decide(0.5) for _ in range(200)]
    flags = np.array([v.escalate for v in verdicts])
    assert window_shares(flags, 20).max() <= 0.25
    assert flags.sum() == 50  # as many as the cap allows: 5 of every 20
    refused = [v for v in verdicts if not v.escalate]
    assert refused and all(v.reason == "budget_exhausted" for v in refused)
    assert capped.threshold == 1.0 and "max_escalation_rate=0.25" in repr(capped)


def test_held_rate_with_a_cap_at_the_target() -> None:
    policy = held_rate(0.3, PROFILE, max_escalation_rate=0.3, budget_window=50)
    values = shifting_stream(100, 1500, seed=5)
    flags = np.array([policy.decide(float(v), "letter").escalate for v in values])
    assert window_shares(flags, 50).max() <= 0.3
    assert abs(flags.mean() - 0.3) <= 0.02
    assert "max_escalation_rate=0.3/50" in repr(policy)


@pytest.mark.parametrize(
    ("cap", "window", "rate", "message"),
    [
        (0.2, 100, 0.3, "below escalation_rate"),
        (0.3, 0, None, "budget_window must be an integer >= 1"),
        (0.005, 100, None, "allows no escalation"),
        (1.5, 100, None, r"max_escalation_rate must be .*\[0, 1\]"),
    ],
)
def test_impossible_caps_are_refused(
    cap: float, window: int, rate: float | None, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        check_cap(cap, window, rate)
    with pytest.raises(ConfigurationError, match=message):
        StreamingQuantile(rate or 0.0, PROFILE, max_escalation_rate=cap, budget_window=window)


def test_bad_feedback_and_band_settings_are_refused() -> None:
    with pytest.raises(CalibrationError, match="horizon must be > 0"):
        StreamingQuantile(0.3, PROFILE, horizon=0)
    with pytest.raises(CalibrationError, match="tolerance must be in"):
        StreamingQuantile(0.3, PROFILE, tolerance=0)


def test_concurrent_requests_share_one_budget() -> None:
    policy = held_rate(0.3, PROFILE)
    flags: list[bool] = []
    lock = threading.Lock()

    def worker(seed: int) -> None:
        for value in np.random.default_rng(seed).beta(2, 5, 500):
            escalate = policy.decide(float(value), "letter").escalate
            with lock:
                flags.append(escalate)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert policy.requests == len(flags) == 4000
    assert policy.escalated == sum(flags)
    assert abs(policy.escalated - 0.3 * 4000) < policy.horizon + 1  # type: ignore[operator]
    assert np.abs(window_shares(np.array(flags)) - 0.3).max() <= 0.05 + 1e-9


def test_live_state_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    first = held_rate(0.3, PROFILE, max_escalation_rate=0.4)
    assert not first.load_state(path)  # nothing saved yet: start from the profile
    values = shifting_stream(100, 700, seed=6)
    for value in values[:600]:
        first.decide(float(value), "letter")
    first.save_state(path)
    assert path.stat().st_size < 20_000 and json.loads(path.read_text())["requests"] == 600
    second = held_rate(0.3, PROFILE, max_escalation_rate=0.4)
    assert second.load_state(path)
    assert (second.requests, second.escalated, second.debt) == (
        first.requests,
        first.escalated,
        first.debt,
    )
    for value in values[600:]:
        assert second.decide(float(value), "letter") == first.decide(float(value), "letter")


def test_a_state_for_another_rate_keeps_the_windows_only(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    old = held_rate(0.3, PROFILE)
    for value in shifting_stream(100, 300):
        old.decide(float(value), "letter")
    old.save_state(path)
    new = held_rate(0.2, PROFILE)
    assert new.load_state(path)
    assert (new.requests, new.debt) == (0, 0.0)
    assert new.threshold_for("letter") != held_rate(0.2, PROFILE).threshold_for("letter")


@pytest.mark.parametrize(
    "content", ["not json", json.dumps({"format": 99}), json.dumps({"format": 1})]
)
def test_a_bad_state_file_says_what_to_do(tmp_path: Path, content: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(content)
    with pytest.raises(CalibrationError, match="Delete the file"):
        held_rate(0.3, PROFILE).load_state(path)


def test_keys_are_bounded_and_the_least_recently_used_window_goes() -> None:
    from confroute.policies.streaming import MAX_KEYS

    policy = held_rate(0.3, PROFILE)
    policy.decide(0.5, "letter:keep")
    for k in range(MAX_KEYS + 10):
        policy.decide(0.5, f"letter:{k}")
        policy.decide(0.5, "letter:keep")  # used again: stays
    windows = policy.state()["windows"]
    assert len(windows) == MAX_KEYS and "letter:keep" in windows and "letter:0" not in windows


def test_the_fixed_policy_reads_a_finer_key_as_its_format() -> None:
    from confroute.policies import TargetEscalationRate

    fixed = TargetEscalationRate(PROFILE, 0.3, per_format=True)
    assert fixed.decide(0.5, "yes_no:2").threshold == fixed.decide(0.5, "yes_no").threshold
    assert fixed.decide(0.5, "yes_no").threshold != fixed.threshold


def test_forced_escalations_are_paid_from_the_budget() -> None:
    policy = held_rate(0.3, PROFILE, max_escalation_rate=0.3, budget_window=10)
    forced = [policy.forced("letter") for _ in range(3)]
    assert all(v.escalate and v.reason == "low_confidence" for v in forced)
    assert (policy.requests, policy.escalated) == (3, 3)
    assert "letter" not in policy.state()["windows"]
    # the debt counts them: the next requests stay local, though their confidence is 0
    assert not any(policy.decide(0.0, "letter").escalate for _ in range(2))
    plain = StreamingQuantile(0.3, PROFILE, max_escalation_rate=0.3, budget_window=10)
    for _ in range(3):
        plain.forced()
    # three escalations already in the last 10: the cap refuses the next one
    refused = plain.decide(0.0)
    assert (refused.escalate, refused.reason) == (False, "budget_exhausted")
    capped = EscalationCap(FixedThreshold(0.5), 0.2, window=10)
    capped.forced()
    capped.forced()
    assert capped.decide(0.1) == Verdict(False, 0.5, "budget_exhausted")
