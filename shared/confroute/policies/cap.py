"""A hard ceiling on escalations: at most ``max_escalation_rate`` of any ``window`` requests.

:class:`SlidingCap` counts the escalations of the last ``window - 1`` requests and admits one
more only while the window stays within the cap; :class:`EscalationCap` puts that ceiling on any
policy and marks each refused escalation ``reason="budget_exhausted"``.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from typing import Any

from confroute.bounds import check_unit_interval
from confroute.errors import ConfigurationError
from confroute.policies.base import RoutingPolicy, Verdict, admitted

__all__ = ["EscalationCap", "SlidingCap", "check_cap"]


def check_cap(max_rate: float, window: int, rate: float | None = None) -> int:
    """The number of escalations a cap allows per window, or a clear error.

    Args:
        max_rate: The cap, a share in [0, 1].
        window: Requests per window (an integer >= 1).
        rate: The target escalation rate the cap goes with, if any.

    Returns:
        ``floor(max_rate * window)``, the escalations allowed in any ``window`` requests.

    Raises:
        ConfigurationError: The cap lies outside [0, 1], the window is not an integer >= 1,
            the cap is below the target rate, or the cap allows no escalation at all.
    """
    max_rate = check_unit_interval("max_escalation_rate", max_rate)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ConfigurationError(
            f"budget_window must be an integer >= 1 (requests per window), got {window!r}."
        )
    if rate is not None and max_rate < rate:
        raise ConfigurationError(
            f"max_escalation_rate ({max_rate:g}) is below escalation_rate ({rate:g}): the cap "
            "would refuse the budget it is meant to bound. Raise the cap or lower the rate."
        )
    allowed = math.floor(max_rate * window + 1e-9)
    if allowed < 1:
        raise ConfigurationError(
            f"max_escalation_rate={max_rate:g} over budget_window={window} allows no "
            "escalation at all; use a larger window or cap, or strong_model=None to stay local."
        )
    return allowed


class SlidingCap:
    """At most ``floor(max_rate * window)`` escalations in any ``window`` consecutive requests.

    With ``least`` set, also at least ``least`` in any window (a two-sided band:
    :meth:`needs` says when the next request must escalate to stay above it). Not thread-safe
    on its own: the policy that holds it serialises the calls.
    """

    def __init__(
        self, max_rate: float, window: int = 100, rate: float | None = None, least: int = 0
    ) -> None:
        """Build the cap (see :func:`check_cap` for the arguments and errors).

        Args:
            max_rate: The cap, a share in [0, 1].
            window: Requests per window.
            rate: The target rate the cap goes with (the cap may not be below it).
            least: Fewest escalations in any window (0: no floor); at most the cap's count.
        """
        self.allowed = check_cap(max_rate, window, rate)
        self.max_rate = float(max_rate)
        self.window = window
        self.least = min(max(0, least), self.allowed)
        self._recent: deque[bool] = deque(maxlen=window - 1)
        self._count = 0
        if self.least and window > 1:
            # a virtual history at the band's centre, so the first windows are not forced
            share = (self.least + self.allowed) / 2 / window
            self.restore([int((k + 1) * share) - int(k * share) for k in range(window - 1)])

    def needs(self) -> bool:
        """Whether the next request must escalate to keep the last ``window`` above the floor."""
        return self._count < self.least

    def admits(self) -> bool:
        """Whether one more escalation now keeps the last ``window`` requests within the cap."""
        return self._count + 1 <= self.allowed

    def record(self, escalated: bool) -> None:
        """Count one request's final decision."""
        if self._recent.maxlen == 0:
            return
        if len(self._recent) == self._recent.maxlen:
            self._count -= self._recent[0]
        self._recent.append(escalated)
        self._count += escalated

    def state(self) -> list[int]:
        """The recent decisions as 0/1, oldest first (for a state file)."""
        return [int(e) for e in self._recent]

    def restore(self, recent: list[Any]) -> None:
        """Set the recent decisions from :meth:`state` (the newest ones that fit are kept)."""
        self._recent.clear()
        self._count = 0
        for value in recent[-(self.window - 1) :] if self.window > 1 else []:
            self.record(bool(value))

    def apply(self, verdict: Verdict) -> Verdict:
        """``verdict``, or a refusal with reason ``budget_exhausted``; then count it."""
        if verdict.escalate and not self.admits():
            verdict = Verdict(False, verdict.threshold, "budget_exhausted")
        self.record(verdict.escalate)
        return verdict


class EscalationCap:
    """Any policy with a hard ceiling: never more than ``max_escalation_rate`` of any window.

    The wrapped policy decides first; an escalation that would put more than
    ``floor(max_escalation_rate * window)`` escalations into the last ``window`` requests is
    refused (kept local) with ``reason="budget_exhausted"``. Thread-safe.
    """

    def __init__(
        self, policy: RoutingPolicy, max_escalation_rate: float, window: int = 100
    ) -> None:
        """Wrap ``policy``.

        Args:
            policy: The policy whose escalations are capped.
            max_escalation_rate: Largest share of any ``window`` requests that escalates.
            window: Requests per window.

        Raises:
            ConfigurationError: See :func:`check_cap`.
        """
        self.policy = policy
        self.cap = SlidingCap(max_escalation_rate, window)
        self._lock = threading.Lock()

    @property
    def threshold(self) -> float:
        """The wrapped policy's threshold (early escalation reads it)."""
        return float(getattr(self.policy, "threshold", 0.0))

    def decide(self, confidence: float | None, answer_format: str | None = None) -> Verdict:
        """The wrapped policy's verdict, refused when the window's budget is spent."""
        with self._lock:
            return self.cap.apply(self.policy.decide(confidence, answer_format=answer_format))

    def forced(self, answer_format: str | None = None) -> Verdict:
        """Count a request escalated whatever the policy says (see ``StreamingQuantile``)."""
        with self._lock:
            self.cap.record(True)
        return Verdict(True, self.threshold, "low_confidence")

    def admit(self, verdict: Verdict, answer_format: str | None = None) -> Verdict:
        """A verdict decided elsewhere (a tool call's), refused when the window's budget is spent.

        The wrapped policy is told of it first (:func:`~confroute.policies.admitted`).
        """
        with self._lock:
            if verdict.escalate and not self.cap.admits():
                verdict = Verdict(False, verdict.threshold, "budget_exhausted")
            verdict = admitted(self.policy, verdict, answer_format)
            self.cap.record(verdict.escalate)
            return verdict

    def __repr__(self) -> str:
        """The cap and the wrapped policy."""
        return (
            f"EscalationCap({self.policy!r}, max_escalation_rate={self.cap.max_rate:g}, "
            f"window={self.cap.window})"
        )
