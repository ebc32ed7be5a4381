"""A target escalation rate, with the threshold read from a calibration profile."""

from __future__ import annotations

from confroute.calibration import CalibrationProfile, check_rate
from confroute.policies.base import Verdict, compare
from confroute.policies.fixed import FixedThreshold

__all__ = ["TargetEscalationRate"]


class TargetEscalationRate(FixedThreshold):
    """Escalate a target share of requests, with the threshold read from a calibration profile.

    "Escalate 30%": the threshold is the calibration profile's confidence quantile; the paper's
    calibration set makes it transfer to unseen data. It is a :class:`FixedThreshold` (its
    pooled threshold is ``.threshold``), so callers that watch a fixed threshold, such as early
    escalation, can use it.

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

        Raises:
            CalibrationError: ``escalation_rate`` lies outside [0, 1].
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
        """Compare with the threshold of ``answer_format`` (the pooled one when unknown).

        A finer key (``letter:4``, ``letter:<template>``) uses its format's threshold.
        """
        base = (answer_format or "any").split(":", 1)[0]  # letter:4 -> letter's threshold
        threshold = self.format_thresholds.get(base, self.threshold)
        return compare(confidence, threshold)

    def __repr__(self) -> str:
        """Rate and the threshold it maps to."""
        extra = ", per_format=True" if self.per_format else ""
        return (
            f"TargetEscalationRate(rate={self.escalation_rate}, "
            f"threshold={self.threshold:.4f}{extra})"
        )
