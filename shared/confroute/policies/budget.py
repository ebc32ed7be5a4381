"""Hold a target escalation rate on live traffic under drift, and report the drift.

:class:`OnlineBudget` moves its threshold with a streaming quantile update and reports drift
from the calibration distribution with the Kolmogorov-Smirnov statistic (:func:`ks_statistic`).
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

from confroute.calibration import CalibrationProfile, check_rate
from confroute.errors import CalibrationError
from confroute.policies.base import Verdict, compare

__all__ = ["OnlineBudget", "ks_statistic"]


def ks_statistic(sample: np.ndarray, reference: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (largest gap between the two empirical CDFs).

    Args:
        sample: One sample.
        reference: The other sample.

    Returns:
        The statistic in [0, 1].
    """
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

        Raises:
            CalibrationError: The rate lies outside [0, 1], ``step <= 0`` or ``window < 1``.
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

    def decide(self, confidence: float | None, answer_format: str | None = None) -> Verdict:
        """Decide with the current threshold, then update it (``answer_format`` is not used)."""
        with self._lock:
            verdict = compare(confidence, self.threshold)
            self.threshold = min(
                1.0,
                max(
                    0.0,
                    verdict.threshold
                    + self.step * (self.escalation_rate - float(verdict.escalate)),
                ),
            )
            self._recent.append(0.0 if confidence is None else confidence)
            self._escalated.append(verdict.escalate)
        return verdict

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
