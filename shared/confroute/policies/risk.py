"""A risk-controlled threshold: bound the SLM's error among the answers kept local.

"Keep as many answers local as possible while the SLM's error among kept answers stays <= alpha,
with probability >= 1 - delta" (needs labels; Clopper-Pearson bounds with fixed-sequence testing,
as in Learn-then-Test).
"""

from __future__ import annotations

import math

import numpy as np

from confroute.calibration import CalibrationProfile, check_rate
from confroute.errors import CalibrationError
from confroute.policies.fixed import FixedThreshold

__all__ = ["RiskControlledThreshold", "clopper_pearson_upper"]


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

    Args:
        errors: Number of errors observed.
        n: Number of trials.
        delta: Allowed probability that the true rate exceeds the bound.

    Returns:
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
    escalates (threshold 1.0). Once built it decides as the :class:`FixedThreshold` it found.
    """

    def __init__(self, profile: CalibrationProfile, alpha: float, delta: float = 0.1) -> None:
        """Build the threshold from a labelled profile.

        Args:
            profile: A calibration profile with correctness labels.
            alpha: Largest tolerated SLM error rate among kept answers, in [0, 1].
            delta: Allowed probability that the error bound fails, in (0, 1].

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
