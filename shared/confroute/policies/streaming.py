"""Hold a target escalation rate on live traffic, stationary or shifting (no labels).

:class:`StreamingQuantile` compares each confidence with the running quantile of the recent
confidences of its answer format (warm-started from a calibration profile) and, with
``horizon`` set (as ``ConfRouter(escalation_rate=...)`` builds it), steers the quantile level
with the budget spent so far, which bounds the escalated count for any traffic.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any

import numpy as np

from confroute.calibration import CalibrationProfile, check_rate
from confroute.errors import CalibrationError
from confroute.policies.base import Verdict, compare
from confroute.policies.cap import SlidingCap

__all__ = ["HELD_RATE", "MAX_KEYS", "STATE_FORMAT", "StreamingQuantile", "held_rate"]

logger = logging.getLogger(__name__)

STATE_FORMAT = 1
"""Version of the JSON written by :meth:`StreamingQuantile.save_state`."""

MAX_KEYS = 64
"""Most format keys with a live window; the least recently used one is dropped beyond it
(keys such as ``letter:4`` or a per-template key must not grow memory without bound)."""

HELD_RATE: dict[str, Any] = {"window": 100, "horizon": 6.0, "tolerance": 0.05}
"""The settings :func:`held_rate` (``ConfRouter(escalation_rate=r)``) uses, chosen on the
shifting-traffic benchmark (``benchmarks/budget_streams.py``, docs/calibration.md)."""


class StreamingQuantile:
    """Hold a target escalation rate with the running quantile of live confidences.

    **Quantile.** The threshold is a quantile of the calibration profile's confidences joined
    with the last ``window`` live confidences. The profile is worth ``prior_weight`` requests
    at first and ``w^2 / (w + n)`` after ``n`` live ones, so the first request uses the
    profile's threshold and the traffic's own distribution takes over. With
    ``per_format=True`` each answer-format key (``letter``, ``yes_no``, ``number``, ``any``,
    or a finer key such as ``letter:4``, whose profile items are those of ``letter``) keeps
    its own window.

    **Budget feedback** (``horizon=H``). The policy keeps the debt ``D = r * n - E`` (``n``
    requests so far, ``E`` escalated) and compares with the quantile at level
    ``r + D / H`` instead of ``r``: an underspent budget loosens the threshold, an overspent
    one tightens it, and the debt is paid back within about ``H`` requests. At level >= 1
    every request escalates and at level <= 0 none does, so, whatever the traffic does (task
    switches, a new confidence scale, adversarial order) and with no labels:

    - ``|E - r * n| < H + 1`` after every request (no cap, no band);
    - hence the share escalated over any ``W`` consecutive requests is within ``(H + 1) / W``
      of ``r`` and the long-run share converges to ``r`` (within ``(H + 1) / n``).

    The quantile decides *which* requests escalate (the least confident of their format);
    the feedback decides *how many*. Without ``horizon`` the policy is the plain running
    quantile, which holds the rate only while traffic is stationary.

    **Cap** (``max_escalation_rate=c``): never more than ``floor(c * budget_window)``
    escalations in any ``budget_window`` consecutive requests; a refused escalation is kept
    local with ``reason="budget_exhausted"``.

    **Band** (``tolerance=t``): the escalated count of every ``budget_window`` consecutive
    requests stays within ``[ceil((r - t) W), floor((r + t) W)]``: a request that would leave
    the band above is kept local (``reason="budget_exhausted"``), one that would leave it below
    escalates (threshold 1.0). With the feedback this is what :func:`held_rate` builds.

    Thread-safe: concurrent requests share the windows, the debt and the cap. The live state
    can be kept across restarts with :meth:`save_state` / :meth:`load_state`; an escalation
    a caller makes without asking is counted with :meth:`forced`.
    """

    def __init__(
        self,
        escalation_rate: float,
        profile: CalibrationProfile | None = None,
        *,
        prior_weight: float = 10.0,
        window: int = 500,
        per_format: bool = False,
        horizon: float | None = None,
        max_escalation_rate: float | None = None,
        budget_window: int = 100,
        tolerance: float | None = None,
    ) -> None:
        """Configure the policy.

        Args:
            escalation_rate: Target share of escalated requests, in [0, 1].
            profile: Calibration profile for the warm start (None: start from live data only;
                the first request then escalates unless the rate is 0).
            prior_weight: How many live requests the profile is worth at first.
            window: Number of recent confidences kept (per format key).
            per_format: Keep one window per answer format key (needs a profile with formats).
            horizon: Requests over which an over- or underspent budget is paid back (None: no
                feedback, the plain running quantile).
            max_escalation_rate: A hard cap on the share escalated in any ``budget_window``
                requests (None: no cap).
            budget_window: Requests per window of the cap and of ``tolerance``.
            tolerance: Keep the escalated share of every ``budget_window`` consecutive
                requests within ``tolerance`` of the rate (None: no band).

        Raises:
            CalibrationError: The rate lies outside [0, 1], ``prior_weight < 0``,
                ``window < 1`` or ``horizon <= 0``.
            ConfigurationError: An impossible cap (see :func:`~confroute.policies.cap.
                check_cap`).
        """
        self.escalation_rate = check_rate(escalation_rate)
        if prior_weight < 0 or window < 1:
            raise CalibrationError("prior_weight must be >= 0 and window >= 1.")
        if horizon is not None and not horizon > 0:
            raise CalibrationError(f"horizon must be > 0 requests (or None), got {horizon}.")
        self.profile = profile
        self.prior_weight = float(prior_weight) if profile is not None else 0.0
        self.window = window
        self.per_format = per_format and profile is not None and bool(profile.answer_formats)
        self.horizon = None if horizon is None else float(horizon)
        self.cap = (
            None
            if max_escalation_rate is None
            else SlidingCap(max_escalation_rate, budget_window, self.escalation_rate)
        )
        self.band = None
        if tolerance is not None and not 0 < tolerance <= 1:
            raise CalibrationError(f"tolerance must be in (0, 1], got {tolerance}.")
        high = min(1.0, self.escalation_rate + (tolerance or 0.0))
        if tolerance is not None and math.floor(high * budget_window + 1e-9) >= 1:
            # (a band that allows no escalation is left out: such a rate escalates nothing)
            low = math.ceil((self.escalation_rate - tolerance) * budget_window - 1e-9)
            self.band = SlidingCap(high, budget_window, least=max(0, low))
        self.requests = 0
        self.escalated = 0
        self._debt = 0.0
        self._recent: OrderedDict[str, deque[float]] = OrderedDict()  # least recent first
        self._priors: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self.threshold = self._quantile("any", self.escalation_rate)

    # -- the quantile ----------------------------------------------------------------------

    def _prior(self, key: str) -> np.ndarray:
        """The profile's confidences for a key (``letter:4`` uses ``letter``), cached."""
        base = key.split(":", 1)[0] if self.per_format else "any"
        if base not in self._priors:
            values = self.profile.confidences_for(base) if self.profile is not None else ()
            self._priors[base] = np.asarray(values, dtype=float)
        return self._priors[base]

    def _quantile(self, key: str, level: float) -> float:
        if level <= 0.0:
            return 0.0
        if level >= 1.0:
            return 1.0
        prior = self._prior(key)
        recent = np.asarray(self._recent.get(key, ()), dtype=float)
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
        index = int(np.searchsorted(cumulative, level * cumulative[-1] - 1e-12))
        if index >= values.size - 1:
            return 1.0
        low, high = values[index], values[index + 1]
        return float((low + high) / 2) if high > low else float(high)

    def _key(self, answer_format: str | None) -> str:
        return (answer_format or "any") if self.per_format else "any"

    @property
    def level(self) -> float:
        """The quantile level the next request is compared at: ``r + debt / horizon``."""
        if self.horizon is None or self.escalation_rate in (0.0, 1.0):
            return self.escalation_rate
        return self.escalation_rate + self._debt / self.horizon

    @property
    def debt(self) -> float:
        """Escalations owed: ``r * requests - escalated`` (negative when overspent)."""
        return self._debt

    def threshold_for(self, answer_format: str | None = None) -> float:
        """The threshold the next request of ``answer_format`` would be compared with."""
        with self._lock:
            return self._quantile(self._key(answer_format), self.level)

    # -- deciding --------------------------------------------------------------------------

    def decide(self, confidence: float | None, answer_format: str | None = None) -> Verdict:
        """Decide with the current quantile, then add the confidence and the decision."""
        value = 0.0 if confidence is None else confidence
        key = self._key(answer_format)
        with self._lock:
            threshold = self._quantile(key, self.level)
            verdict = compare(confidence, threshold)
            limits = [limit for limit in (self.band, self.cap) if limit is not None]
            if self.band is not None and self.band.needs():
                verdict = compare(confidence, 1.0)  # the band's floor (the cap allows it)
            if verdict.escalate and not all(limit.admits() for limit in limits):
                verdict = Verdict(False, threshold, "budget_exhausted")
            for limit in limits:
                limit.record(verdict.escalate)
            if key not in self._recent and len(self._recent) >= MAX_KEYS:
                self._recent.popitem(last=False)  # the least recently used key's window
            window = self._recent.setdefault(key, deque(maxlen=self.window))
            self._recent.move_to_end(key)
            window.append(value)
            self._count(verdict.escalate)
            if key == "any":
                self.threshold = self._quantile(key, self.level)
        return verdict

    def forced(self, answer_format: str | None = None) -> Verdict:
        """Count a request escalated whatever the policy says (the budget still pays for it).

        For a caller that escalates without asking (a prompt longer than the local context,
        a malformed tool call): the debt, the band and the cap count the escalation, the
        windows are left alone. The verdict carries the threshold the request would have met.
        """
        with self._lock:
            threshold = self._quantile(self._key(answer_format), self.level)
            for limit in (self.band, self.cap):
                if limit is not None:
                    limit.record(True)
            self._count(True)
        return Verdict(True, threshold, "low_confidence")

    def admit(self, verdict: Verdict, answer_format: str | None = None) -> Verdict:
        """A verdict decided elsewhere (a tool call's) held to the budget.

        The debt, the band and the cap count the request; its escalation is refused
        (``reason="budget_exhausted"``) when the cap or the band's ceiling is spent. The
        confidence windows are left alone (the confidence is on another estimator's scale).
        """
        with self._lock:
            limits = [limit for limit in (self.band, self.cap) if limit is not None]
            if verdict.escalate and not all(limit.admits() for limit in limits):
                verdict = Verdict(False, verdict.threshold, "budget_exhausted")
            for limit in limits:
                limit.record(verdict.escalate)
            self._count(verdict.escalate)
        return verdict

    def _count(self, escalated: bool) -> None:
        """Add one request to the counts and the debt (the lock is held)."""
        self.requests += 1
        self.escalated += escalated
        if self.horizon is not None:
            # |debt| < horizon + 1 always; the clip only matters while a cap or band refuses
            bound = self.horizon + 1.0
            self._debt = min(bound, max(-bound, self._debt + self.escalation_rate))
            self._debt -= escalated

    # -- live state ------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The live state as plain JSON-ready data (windows, debt, counts, cap)."""
        with self._lock:
            return {
                "format": STATE_FORMAT,
                "policy": type(self).__name__,
                "escalation_rate": self.escalation_rate,
                "requests": self.requests,
                "escalated": self.escalated,
                "debt": self._debt,
                "windows": {k: list(w) for k, w in self._recent.items()},
                "cap": self.cap.state() if self.cap is not None else None,
                "band": self.band.state() if self.band is not None else None,
            }

    def save_state(self, path: str | os.PathLike[str]) -> None:
        """Write the live state as a small JSON file (atomically: a temporary file, renamed)."""
        target = Path(path)
        temporary = target.with_name(target.name + ".tmp")
        temporary.write_text(json.dumps(self.state(), separators=(",", ":")))
        os.replace(temporary, target)

    def load_state(self, path: str | os.PathLike[str]) -> bool:
        """Restore the state written by :meth:`save_state`; False when the file does not exist.

        The windows are kept whatever the rate; the debt, counts and cap history only when the
        file was written for the same ``escalation_rate`` (else they start from zero).

        Raises:
            CalibrationError: The file is unreadable or not a state file of this policy.
        """
        target = Path(path)
        if not target.exists():
            return False
        try:
            data = json.loads(target.read_text())
            if data.get("format") != STATE_FORMAT or data.get("policy") != type(self).__name__:
                raise ValueError(f"not a {type(self).__name__} state file (format {STATE_FORMAT})")
            windows = {
                str(k): [min(1.0, max(0.0, float(v))) for v in values]
                for k, values in dict(data["windows"]).items()
            }
            same_rate = float(data["escalation_rate"]) == self.escalation_rate
            counts = (int(data["requests"]), int(data["escalated"]), float(data["debt"]))
            cap = list(data.get("cap") or [])
            band = list(data.get("band") or [])
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
            raise CalibrationError(
                f"Cannot restore the policy state from {target}: {error}. Delete the file to "
                "start from the calibration profile again."
            ) from error
        with self._lock:
            kept = list(windows.items())[-MAX_KEYS:]
            self._recent = OrderedDict((k, deque(v, maxlen=self.window)) for k, v in kept)
            if same_rate:
                self.requests, self.escalated, self._debt = counts
                if self.cap is not None:
                    self.cap.restore(cap)
                if self.band is not None and band:
                    self.band.restore(band)
            else:
                logger.info("%s was written for another escalation rate: debt reset", target)
            self.threshold = self._quantile("any", self.level)
        return True

    def __repr__(self) -> str:
        """Target, current pooled threshold and what holds the rate."""
        extra = ", per_format=True" if self.per_format else ""
        if self.horizon is not None:
            extra += f", horizon={self.horizon:g}"
        if self.band is not None:
            extra += f", band={self.band.least}-{self.band.allowed}/{self.band.window}"
        if self.cap is not None:
            extra += f", max_escalation_rate={self.cap.max_rate:g}/{self.cap.window}"
        return (
            f"StreamingQuantile(rate={self.escalation_rate}, threshold={self.threshold:.4f}{extra})"
        )


def held_rate(
    escalation_rate: float,
    profile: CalibrationProfile | None,
    *,
    per_format: bool = True,
    max_escalation_rate: float | None = None,
    budget_window: int = 100,
) -> StreamingQuantile:
    """The policy behind ``ConfRouter(escalation_rate=r)``: the rate held on any traffic.

    A :class:`StreamingQuantile` with a 100-request window per answer format, budget feedback
    over ``H = 6`` requests and a band of 0.05, so that, with no labels and whatever the
    traffic does:

    - the share escalated in every ``budget_window`` (default 100) consecutive requests is
      within 0.05 of ``r`` (a hard bound on its own decisions, the band; with
      ``max_escalation_rate`` below ``r + 0.05`` the cap is the ceiling; escalations counted
      with :meth:`StreamingQuantile.forced` are paid for but cannot be refused);
    - the long-run share converges to ``r`` (the feedback pays back what a shift or the band
      leaves over or under);
    - within those bounds the least confident requests of each answer format escalate
      (the running quantile, warm-started from the profile).

    Args:
        escalation_rate: Target share ``r`` in [0, 1].
        profile: The calibration profile for the warm start.
        per_format: One window per answer-format key.
        max_escalation_rate: Hard cap on the share of any ``budget_window`` requests.
        budget_window: Requests per window of the guarantee and of the cap.
    """
    return StreamingQuantile(
        escalation_rate,
        profile,
        per_format=per_format,
        max_escalation_rate=max_escalation_rate,
        budget_window=budget_window,
        **HELD_RATE,
    )
