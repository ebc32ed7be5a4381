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
    "StreamingQuantile",
    "TargetEscalationRate",
    "clopper_pearson_upper",
    "ks_statistic",
]


class TargetEscalationRate(FixedThreshold):
    """Escalate a target share of requests, with the threshold read from a calibration profile.

    With ``per_format=True`` (and a profile that records answer formats) each answer format
    (``letter``, ``yes_no``, ``number``) gets the threshold of its own calibration items; the
    router recognises the format of each request (:func:`confroute.answer_format.
    detect_format`) and passes it to :meth:`decide`. A request of no recognised format, or of a
    format with too few calibration items, gets the pooled threshold.
    """

    def __init__(
        self, profile: CalibrationProfile, escalation_rate: float, *, per_format: bool = False
    ) -> None:
        """Build the policy.

        Args:
            profile: The calibration profile.
            escalation_rate: Target share of escalated requests, in [0, 1].
            per_format: Use per-format thresholds when the profile records formats.
        """
        self.profile = profile
        self.escalation_rate = check_rate(escalation_rate)
        super().__init__(profile.threshold_for(self.escalation_rate))
        self.per_format = per_format and bool(profile.answer_formats)
        self.format_thresholds = (
            {f: profile.threshold_for(self.escalation_rate, f) for f in profile.formats()}
            if self.per_format
            else {}
        )

    def decide(self, confidence: float | None, answer_format: str | None = None) -> Verdict:
        """Compare with the threshold of ``answer_format`` (the pooled one when unknown)."""
        threshold = self.format_thresholds.get(answer_format or "any", self.threshold)
        return FixedThreshold(threshold).decide(confidence)

    def __repr__(self) -> str:
        """Rate and the threshold it maps to."""
        extra = ", per_format=True" if self.per_format else ""
        return (
            f"TargetEscalationRate(rate={self.escalation_rate}, "
            f"threshold={self.threshold:.4f}{extra})"
        )


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

    def decide(self, confidence: float | None, answer_format: str | None = None) -> Verdict:
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
            threshold = self._quantile(key)
            escalate = threshold >= 1.0 or value < threshold
            self._recent.setdefault(key, deque(maxlen=self.window)).append(value)
            if key == "any":
                self.threshold = self._quantile(key)
        if confidence is None:
            return Verdict(escalate, threshold, "no_confidence")
        return Verdict(escalate, threshold, "low_confidence" if escalate else "confident")

    def __repr__(self) -> str:
        """Target and current pooled threshold."""
        extra = ", per_format=True" if self.per_format else ""
        return (
            f"StreamingQuantile(rate={self.escalation_rate}, threshold={self.threshold:.4f}{extra})"
        )
