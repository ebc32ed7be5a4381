"""The fixed-threshold policy."""

from __future__ import annotations

from confroute.bounds import check_unit_interval
from confroute.policies.base import Verdict, compare

__all__ = ["FixedThreshold"]


class FixedThreshold:
    """Escalate when confidence < threshold.

    ``threshold=0.0`` keeps every answer local; ``threshold=1.0`` escalates every request
    (even a confidence of exactly 1.0). A missing confidence counts as the lowest, so it
    escalates at any threshold above 0.
    """

    def __init__(self, threshold: float) -> None:
        """Build the policy.

        Args:
            threshold: A number in [0, 1].

        Raises:
            ConfigurationError: ``threshold`` lies outside [0, 1].
        """
        self.threshold = check_unit_interval("threshold", threshold)

    def decide(self, confidence: float | None, answer_format: str | None = None) -> Verdict:
        """Compare the confidence with the threshold (``answer_format`` is not used)."""
        return compare(confidence, self.threshold)

    def __repr__(self) -> str:
        """The threshold."""
        return f"FixedThreshold({self.threshold})"
