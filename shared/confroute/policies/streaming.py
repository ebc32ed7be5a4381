"""Hold a target escalation rate with the running quantile of live confidences (no labels)."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

from confroute.calibration import CalibrationProfile, check_rate
from confroute.errors import CalibrationError
from confroute.policies.base import Verdict, compare

__all__ = ["StreamingQuantile"]


class StreamingQuantile:
    """Hold a target escalation rate with the running quantile of live confidences.

    The threshold is the ``escalation_rate`` quantile of the calibration profile's confidences
    joined with the last ``window`` live confidences. The profile is worth ``prior_weight``
    requests at first and ``w^2 / (w + n)`` after ``n`` live ones, so the first request uses
    the profile's threshold and, as traffic arrives, its own distribution takes over: the rate
    holds on data whose confidence scale differs from the calibration set's (another answer
    format, another domain), with no labels. Unlike :class:`OnlineBudget` it needs no step
    size: it is scale-free.

    With ``per_format=True`` each answer format (``letter``, ``yes_no``, ``number``, ``any``)
    keeps its own window and starts from its own calibration items (see
    :meth:`CalibrationProfile.confidences_for`); the router passes the format it recognised
    in the request. Thread-safe: concurrent requests share the windows.
    """

    def __init__(
        self,
        escalation_rate: float,
        profile: CalibrationProfile | None = None,
        *,
        prior_weight: float = 10.0,
        window: int = 500,
        per_format: bool = False,
    ) -> None:
        """Configure the policy.

        Args:
            escalation_rate: Target share of escalated requests, in [0, 1].
            profile: Calibration profile for the warm start (None: start from live data only;
                the first request then escalates unless the rate is 0).
            prior_weight: How many live requests the profile is worth at first.
            window: Number of recent confidences kept (per format).
            per_format: Keep one window per answer format (needs a profile with formats).
        """
        self.escalation_rate = check_rate(escalation_rate)
        if prior_weight < 0 or window < 1:
            raise CalibrationError("prior_weight must be >= 0 and window >= 1.")
        self.profile = profile
        self.prior_weight = float(prior_weight) if profile is not None else 0.0
        self.window = window
        self.per_format = per_format and profile is not None and bool(profile.answer_formats)
        self._recent: dict[str, deque[float]] = {}
        self._priors: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self.threshold = self._quantile("any")

    def _prior(self, answer_format: str) -> np.ndarray:
        """The profile's confidences for a format, computed once per format."""
        if answer_format not in self._priors:
            key = answer_format if self.per_format else None
            values = self.profile.confidences_for(key) if self.profile is not None else ()
            self._priors[answer_format] = np.asarray(values, dtype=float)
        return self._priors[answer_format]

    def _quantile(self, answer_format: str) -> float:
        rate = self.escalation_rate
        if rate <= 0.0:
            return 0.0
        if rate >= 1.0:
            return 1.0
        prior = self._prior(answer_format)
        recent = np.asarray(self._recent.get(answer_format, ()), dtype=float)
        values = np.concatenate([prior, recent])
        if values.size == 0:
            return 1.0
        # the profile is trusted less as live evidence accumulates: weight w^2 / (w + n)
        weight = self.prior_weight**2 / (self.prior_weight + recent.size) if prior.size else 0.0
        prior_each = weight / prior.size if prior.size else 0.0
        weights = np.concatenate([np.full(prior.size, prior_each), np.ones(recent.size)])
        order = np.argsort(values, kind="stable")
        values, weights = values[order], weights[order]
        cumulative = np.cumsum(weights)
        if cumulative[-1] <= 0:
            return 1.0
        index = int(np.searchsorted(cumulative, rate * cumulative[-1] - 1e-12))
        if index >= values.size - 1:
            return 1.0
        low, high = values[index], values[index + 1]
        return float((low + high) / 2) if high > low else float(high)

    def threshold_for(self, answer_format: str | None = None) -> float:
        """The threshold the next request of ``answer_format`` would be compared with."""
        key = (answer_format or "any") if self.per_format else "any"
        with self._lock:
            return self._quantile(key)

    def decide(self, confidence: float | None, answer_format: str | None = None) -> Verdict:
        """Decide with the current quantile, then add the confidence to the window."""
        value = 0.0 if confidence is None else confidence
        key = (answer_format or "any") if self.per_format else "any"
        with self._lock:
            verdict = compare(confidence, self._quantile(key))
            self._recent.setdefault(key, deque(maxlen=self.window)).append(value)
            if key == "any":
                self.threshold = self._quantile(key)
        return verdict

    def __repr__(self) -> str:
        """Target and current pooled threshold."""
        extra = ", per_format=True" if self.per_format else ""
        return (
            f"StreamingQuantile(rate={self.escalation_rate}, threshold={self.threshold:.4f}{extra})"
        )
