"""Routing policies: turn a confidence into keep-or-escalate. Thresholds live here only."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from confroute.errors import ConfigurationError

__all__ = ["FixedThreshold", "RoutingPolicy", "Verdict"]


@dataclass(frozen=True)
class Verdict:
    """A policy's answer for one confidence.

    Attributes:
        escalate: Whether to send the request to the strong model.
        threshold: The threshold the confidence was compared with.
        reason: ``"confident"``, ``"low_confidence"`` or ``"no_confidence"``.
    """

    escalate: bool
    threshold: float
    reason: str


@runtime_checkable
class RoutingPolicy(Protocol):
    """Decides from a confidence in [0, 1] (or None, meaning none could be computed)."""

    def decide(self, confidence: float | None, answer_format: str | None = None) -> Verdict:
        """Return whether to escalate, and why."""
        ...


def check_unit_interval(name: str, value: float) -> float:
    """Return ``value`` as a float if it lies in [0, 1], else raise ConfigurationError."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} must be a number in [0, 1], got {value!r}.") from None
    if math.isnan(number) or not 0.0 <= number <= 1.0:
        raise ConfigurationError(f"{name} must be in [0, 1], got {value!r}.")
    return number


class FixedThreshold:
    """Escalate when confidence < threshold.

    ``threshold=0.0`` keeps every answer local; ``threshold=1.0`` escalates every request
    (even a confidence of exactly 1.0). A missing confidence counts as the lowest, so it
    escalates at any threshold above 0.
    """

    def __init__(self, threshold: float) -> None:
        """Args: threshold: a number in [0, 1]."""
        self.threshold = check_unit_interval("threshold", threshold)

    def decide(self, confidence: float | None, answer_format: str | None = None) -> Verdict:
        """Compare the confidence with the threshold."""
        if self.threshold >= 1.0:
            return Verdict(True, self.threshold, "low_confidence")
        if confidence is None:
            return Verdict(self.threshold > 0.0, self.threshold, "no_confidence")
        escalate = confidence < self.threshold
        return Verdict(escalate, self.threshold, "low_confidence" if escalate else "confident")

    def __repr__(self) -> str:
        """The threshold."""
        return f"FixedThreshold({self.threshold})"
