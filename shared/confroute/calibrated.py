"""Policies that take their threshold from data: a target escalation rate, a risk bound, a budget.

- :class:`TargetEscalationRate`: "escalate 30%": the threshold is the calibration profile's
  confidence quantile; the paper's calibration set makes it transfer to unseen data.
- :class:`RiskControlledThreshold`: "keep as many answers local as possible while the SLM's error
  among kept answers stays <= alpha, with probability >= 1 - delta" (needs labels; Clopper-Pearson
  bounds with fixed-sequence testing, as in Learn-then-Test).
- :class:`OnlineBudget`: holds a target escalation rate on live traffic under drift with a
  streaming quantile update, and reports drift from the calibration distribution (KS statistic).
"""

from __future__ import annotations

import math
import threading
from collections import deque

import numpy as np

from confroute.calibration import CalibrationProfile, check_rate
from confroute.errors import CalibrationError
from confroute.policy import FixedThreshold, Verdict

__all__ = [
    "OnlineBudget",
    "RiskControlledThreshold",
    "TargetEscalationRate",
    "clopper_pearson_upper",
    "ks_statistic",
]


class TargetEscalationRate(FixedThreshold):
    """Escalate a target share of requests, with the threshold read from a calibration profile."""

    def __init__(self, profile: CalibrationProfile, escalation_rate: float) -> None:
        """Args: profile: the calibration profile; escalation_rate: target share in [0, 1]."""
        self.profile = profile
        self.escalation_rate = check_rate(escalation_rate)
        super().__init__(profile.threshold_for(self.escalation_rate))

    def __repr__(self) -> str:
        """Rate and the threshold it maps to."""
        return f"TargetEscalationRate(rate={self.escalation_rate}, threshold={self.threshold:.4f})"


def _log_binom_cdf(k: int, n: int, p: float) -> float:
    """Log P(Bin(n, p) <= k)."""
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 0.0 if k >= n else -math.inf
    terms = [
        math.lgamma(n + 1)
        - math.lgamma(i + 1)
        - math.lgamma(n - i + 1)
        + i * math.log(p)
        + (n - i) * math.log1p(-p)
        for i in range(k + 1)
    ]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


def clopper_pearson_upper(errors: int, n: int, delta: float) -> float:
    """One-sided Clopper-Pearson upper bound on an error rate at confidence ``1 - delta``.

    The largest p with P(Bin(n, p) <= errors) >= delta; 1.0 when n is 0.
    """
    if n == 0 or errors >= n:
        return 1.0
    target = math.log(delta)
    low, high = errors / n, 1.0
    for _ in range(60):
        mid = (low + high) / 2
        if _log_binom_cdf(errors, n, mid) >= target:
            low = mid
        else:
            high = mid
    return low


class RiskControlledThreshold(FixedThreshold):
    """The most coverage whose SLM error among kept answers is <= alpha w.p. >= 1 - delta.

    Candidate thresholds are tested from the most confident end downwards (fixed-sequence
    testing); testing stops at the first threshold whose Clopper-Pearson upper bound exceeds
    ``alpha``, so the family-wise error stays at ``delta``. When no threshold passes, everything
    escalates (threshold 1.0).
    """

    def __init__(self, profile: CalibrationProfile, alpha: float, delta: float = 0.1) -> None:
        """Build the threshold from a labelled profile.

        Raises:
            CalibrationError: The profile has no correctness labels, or alpha/delta are invalid.
        """
        if profile.correct is None:
            raise CalibrationError(
                "A risk-controlled threshold needs correctness labels in the calibration "
                "profile; build it with labelled data (`confroute calibrate --data-dir ...`)."
            )
        self.alpha = check_rate(alpha, "alpha")
        self.delta = check_rate(delta, "delta")
        if self.delta == 0.0:
            raise CalibrationError("delta must be > 0.")
        confidences = np.asarray(profile.confidences)
        wrong = ~np.asarray(profile.correct, dtype=bool)
        n = len(confidences)
        chosen = 1.0
        # keep the answers with confidence >= t; walk t downwards over distinct values
        for start in sorted(
            set(np.flatnonzero(np.r_[True, np.diff(confidences) > 0]).tolist()), reverse=True
        ):
            kept = n - start
            errors = int(wrong[start:].sum())
            if clopper_pearson_upper(errors, kept, self.delta) > self.alpha:
                break
            chosen = float(confidences[start])
        self.coverage = float(np.mean(confidences >= chosen)) if chosen < 1.0 else 0.0
        super().__init__(chosen)

    def __repr__(self) -> str:
        """Risk target and resulting threshold."""
        return (
            f"RiskControlledThreshold(alpha={self.alpha}, delta={self.delta}, "
            f"threshold={self.threshold:.4f}, coverage={self.coverage:.3f})"
        )


def ks_statistic(sample: np.ndarray, reference: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (largest gap between the two empirical CDFs)."""
    a, b = np.sort(sample), np.sort(reference)
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / len(a)
    cdf_b = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(cdf_a - cdf_b)))


class OnlineBudget:
    """Hold a target escalation rate on live traffic, adapting the threshold as confidences drift.

    The threshold follows a stochastic-approximation quantile update: after each request it
    moves up by ``step * (target - escalated)``, so over time the share of confidences below it
    converges to the target, whatever the distribution does. It starts from the profile's
    threshold when a profile is given. :meth:`drift` compares the recent confidences with the
    calibration distribution.

    Thread-safe: concurrent requests share one threshold.
    """

    def __init__(
        self,
        escalation_rate: float,
        profile: CalibrationProfile | None = None,
        *,
        step: float = 0.01,
        window: int = 500,
    ) -> None:
        """Configure the controller.

        Args:
            escalation_rate: Target share of escalated requests, in [0, 1].
            profile: Calibration profile for the starting threshold and drift reference.
            step: Size of each threshold update (larger adapts faster, jitters more).
            window: Number of recent confidences kept for :meth:`drift` and :meth:`recent_rate`.
        """
        self.escalation_rate = check_rate(escalation_rate)
        if step <= 0 or window < 1:
            raise CalibrationError("step must be > 0 and window >= 1.")
        self.profile = profile
        self.step = step
        self.threshold = profile.threshold_for(self.escalation_rate) if profile else 0.5
        self._recent: deque[float] = deque(maxlen=window)
        self._escalated: deque[bool] = deque(maxlen=window)
        self._lock = threading.Lock()

    def decide(self, confidence: float | None) -> Verdict:
        """Decide with the current threshold, then update it."""
        with self._lock:
            value = 0.0 if confidence is None else confidence
            threshold = self.threshold
            escalate = value < threshold
            self.threshold = min(
                1.0, max(0.0, threshold + self.step * (self.escalation_rate - float(escalate)))
            )
            self._recent.append(value)
            self._escalated.append(escalate)
        if confidence is None:
            return Verdict(escalate, threshold, "no_confidence")
        return Verdict(escalate, threshold, "low_confidence" if escalate else "confident")

    def recent_rate(self) -> float:
        """Escalation rate over the recent window."""
        with self._lock:
            return float(np.mean(self._escalated)) if self._escalated else 0.0

    def drift(self) -> float | None:
        """KS statistic between recent confidences and the profile's (None without a profile)."""
        with self._lock:
            if self.profile is None or not self._recent:
                return None
            recent = np.asarray(self._recent)
        return ks_statistic(recent, np.asarray(self.profile.confidences))

    def __repr__(self) -> str:
        """Target and current threshold."""
        return f"OnlineBudget(rate={self.escalation_rate}, threshold={self.threshold:.4f})"
