"""Routing metrics, numpy only.

Conventions: ``confidence`` is higher = more sure; the router escalates the least confident
items first. Unparsed answers are given a confidence below every real one before any metric is
computed (see :func:`effective_confidence`). Ties are handled exactly: a tied group that is
partly escalated contributes its expected accuracy, so no metric depends on item order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from confroute.errors import ConfigurationError

__all__ = [
    "RoutingCurve",
    "apgr",
    "auroc",
    "auroc_cell",
    "bootstrap_ci",
    "cpt",
    "ece",
    "effective_confidence",
    "kept_accuracy",
    "kept_accuracy_curve",
    "oracle_curve",
    "prr",
    "random_curve",
    "relative_accuracy_curve",
    "route_summary",
    "routing_curve",
]

UNPARSED_CONFIDENCE = -1.0
"""Confidence given to unparsed answers and missing confidences: below every real one."""


def effective_confidence(
    confidence: Sequence[float | None] | np.ndarray,
    parsed: Sequence[bool] | np.ndarray | None = None,
) -> np.ndarray:
    """Confidences with None, NaN and unparsed answers mapped to :data:`UNPARSED_CONFIDENCE`."""
    values = np.array([np.nan if c is None else float(c) for c in confidence], dtype=float)
    if parsed is not None:
        values[~np.asarray(parsed, dtype=bool)] = np.nan
    values[np.isnan(values)] = UNPARSED_CONFIDENCE
    return values


def _check(*arrays: np.ndarray) -> int:
    sizes = {len(a) for a in arrays}
    if len(sizes) != 1:
        raise ConfigurationError(f"Arrays of different lengths: {sorted(sizes)}.")
    return sizes.pop()


def _ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    average = np.cumsum(counts) - (counts - 1) / 2.0
    return np.asarray(average[inverse.reshape(-1)], dtype=float)


def auroc(confidence: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray) -> float:
    """Area under the ROC curve of confidence as a detector of correct answers.

    1 when every correct answer is more confident than every wrong one, 0 when reversed,
    0.5 for no signal; NaN when all answers are right or all wrong. Ties count one half.
    """
    conf = np.asarray(confidence, dtype=float)
    labels = np.asarray(correct, dtype=bool)
    _check(conf, labels)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = _ranks(conf)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


@dataclass(frozen=True)
class RoutingCurve:
    """Accuracy of the routed system at each escalation rate.

    Attributes:
        rates: Escalation rates ``k / n`` for ``k = 0..n``.
        accuracy: Accuracy of the routed system at each rate.
        slm_accuracy: Accuracy with no escalation.
        llm_accuracy: Accuracy when everything is escalated.
    """

    rates: np.ndarray
    accuracy: np.ndarray
    slm_accuracy: float
    llm_accuracy: float

    @property
    def area(self) -> float:
        """Area under the curve over escalation rates in [0, 1] (trapezoid rule)."""
        return float(np.trapezoid(self.accuracy, self.rates))

    def at(self, rate: float) -> float:
        """Accuracy at an escalation rate (linear interpolation)."""
        return float(np.interp(rate, self.rates, self.accuracy))

    @property
    def gap_recovered(self) -> np.ndarray:
        """Gap recovered, ``(acc - slm) / (llm - slm)``, at each rate (NaN if no gap)."""
        gap = self.llm_accuracy - self.slm_accuracy
        if gap <= 0:
            return np.full_like(self.accuracy, np.nan)
        return (self.accuracy - self.slm_accuracy) / gap


def routing_curve(
    confidence: Sequence[float] | np.ndarray,
    slm_correct: Sequence[bool] | np.ndarray,
    llm_correct: Sequence[bool] | np.ndarray,
) -> RoutingCurve:
    """Escalate the ``k`` least confident items for every ``k`` (ties: expected accuracy)."""
    conf = np.asarray(confidence, dtype=float)
    slm = np.asarray(slm_correct, dtype=float)
    llm = np.asarray(llm_correct, dtype=float)
    n = _check(conf, slm, llm)
    if n == 0:
        raise ConfigurationError("A routing curve needs at least one item.")
    order = np.argsort(conf, kind="mergesort")
    conf_sorted = conf[order]
    gained = np.concatenate([[0.0], np.cumsum((llm - slm)[order])])  # gain of the first k
    # group ties; within a group every member is escalated with the same probability, so
    # the curve is linear between the group's boundaries
    boundaries = np.flatnonzero(np.diff(conf_sorted)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [n]])
    k = np.arange(n + 1)
    group = np.searchsorted(ends, k, side="left")
    start, end = starts[group], ends[group]
    partial = (gained[end] - gained[start]) * (k - start) / (end - start)
    accuracy = (slm.sum() + gained[start] + partial) / n
    return RoutingCurve(np.arange(n + 1) / n, accuracy, float(slm.mean()), float(llm.mean()))


def random_curve(
    slm_correct: Sequence[bool] | np.ndarray, llm_correct: Sequence[bool] | np.ndarray
) -> RoutingCurve:
    """Expected curve of random routing: a straight line from SLM to LLM accuracy."""
    slm = np.asarray(slm_correct, dtype=float)
    llm = np.asarray(llm_correct, dtype=float)
    n = _check(slm, llm)
    rates = np.arange(n + 1) / n
    return RoutingCurve(
        rates, slm.mean() + rates * (llm.mean() - slm.mean()), float(slm.mean()), float(llm.mean())
    )


def oracle_curve(
    slm_correct: Sequence[bool] | np.ndarray, llm_correct: Sequence[bool] | np.ndarray
) -> RoutingCurve:
    """The best possible curve: escalate items where only the LLM is right first."""
    slm = np.asarray(slm_correct, dtype=float)
    llm = np.asarray(llm_correct, dtype=float)
    return routing_curve(-(llm - slm), slm, llm)


def apgr(curve: RoutingCurve) -> float:
    """Average performance gap recovered (RouteLLM): the area under the PGR curve.

    0.5 for random routing, up to about 1 for an oracle; NaN when the LLM is not more accurate.
    """
    pgr = curve.gap_recovered
    if np.isnan(pgr).all():
        return float("nan")
    return float(np.trapezoid(pgr, curve.rates))


def cpt(curve: RoutingCurve, target: float) -> float:
    """Smallest escalation rate that recovers ``target`` (0.5 for CPT(50%)) of the gap."""
    pgr = curve.gap_recovered
    reached = np.flatnonzero(pgr >= target - 1e-12)
    return float(curve.rates[reached[0]]) if len(reached) else float("nan")


def prr(confidence: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray) -> float:
    """Prediction rejection ratio (LM-Polygraph).

    Rejection curve: accuracy of the kept answers when the least confident are rejected, over
    rejection rates; ``(area_conf - area_random) / (area_oracle - area_random)``. 1 is perfect,
    0 random, negative worse than random; NaN when every answer has the same correctness.
    """
    conf = np.asarray(confidence, dtype=float)
    labels = np.asarray(correct, dtype=float)
    n = _check(conf, labels)
    if labels.min() == labels.max():
        return float("nan")

    def area(curve: RoutingCurve) -> float:
        # accuracy of the kept items when k are rejected, k = 0..n-1
        kept = np.arange(n, 0, -1)
        kept_correct = curve.accuracy[:-1] * n - np.arange(n)  # rejected ones count as correct
        return float(np.mean(kept_correct / kept))

    ones = np.ones(n)
    ours = area(routing_curve(conf, labels, ones))
    oracle = area(routing_curve(labels, labels, ones))
    random = float(labels.mean())
    return (ours - random) / (oracle - random)


def ece(
    confidence: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray, bins: int = 10
) -> float:
    """Expected calibration error with equal-width bins (confidences clipped to [0, 1])."""
    conf = np.clip(np.asarray(confidence, dtype=float), 0.0, 1.0)
    labels = np.asarray(correct, dtype=float)
    n = _check(conf, labels)
    if n == 0:
        return float("nan")
    index = np.minimum((conf * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += mask.sum() / n * abs(labels[mask].mean() - conf[mask].mean())
    return float(total)


def relative_accuracy_curve(
    confidence: Sequence[float] | np.ndarray,
    slm_correct: Sequence[bool] | np.ndarray,
    llm_correct: Sequence[bool] | np.ndarray,
    fractions: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
) -> np.ndarray:
    """The paper's relative accuracy at each fraction k of the most confident items.

    SLM accuracy on the k most confident items divided by the strong model's accuracy on the
    same items (NaN where the strong model scores 0).
    """
    conf = np.asarray(confidence, dtype=float)
    slm = np.asarray(slm_correct, dtype=float)
    llm = np.asarray(llm_correct, dtype=float)
    n = _check(conf, slm, llm)
    order = np.argsort(-conf, kind="mergesort")
    values = []
    for fraction in fractions:
        top = order[: max(1, round(fraction * n))]
        denominator = llm[top].mean()
        values.append(slm[top].mean() / denominator if denominator > 0 else np.nan)
    return np.asarray(values)


def kept_accuracy(
    confidence: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray, rate: float
) -> float:
    """Accuracy of the answers kept when the least confident ``rate`` of them are set aside.

    ``round(rate * n)`` answers are set aside; ties are split as in :func:`routing_curve`
    (expected accuracy), so the value does not depend on item order. NaN when nothing is kept.
    """
    return _kept(_certain_curve(effective_confidence(confidence), correct), rate)


def kept_accuracy_curve(
    confidence: Sequence[float | None] | np.ndarray,
    correct: Sequence[bool] | np.ndarray,
    rates: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5),
) -> dict[str, float]:
    """:func:`kept_accuracy` at each of ``rates`` (keys ``f"{rate:.1f}"``), from one curve.

    ``None`` and NaN confidences count as least confident (:func:`effective_confidence`).
    """
    curve = _certain_curve(effective_confidence(confidence), correct)
    return {f"{rate:.1f}": _kept(curve, rate) for rate in rates}


def _certain_curve(conf: np.ndarray, correct: Sequence[bool] | np.ndarray) -> RoutingCurve | None:
    """The routing curve to a model that is always right (None for no items)."""
    labels = np.asarray(correct, dtype=float)
    n = _check(conf, labels)
    return routing_curve(conf, labels, np.ones(n)) if n else None


def _kept(curve: RoutingCurve | None, rate: float) -> float:
    # escalating k items to a model that is always right adds exactly k to the correct count
    if curve is None:
        return float("nan")
    n = len(curve.rates) - 1
    k = round(rate * n)
    if not 0 <= k < n:
        return float("nan")
    return float((curve.accuracy[k] * n - k) / (n - k))


ROUTE_RATES = (0.1, 0.2, 0.3, 0.4, 0.5)
"""Escalation rates at which :func:`route_summary` reports accuracies."""


def route_summary(
    small_confidence: Mapping[str, Sequence[float | None] | np.ndarray],
    small_correct: Sequence[bool] | np.ndarray,
    large_correct: Sequence[bool] | np.ndarray,
    large_confidence: Mapping[str, Sequence[float | None] | np.ndarray] | None = None,
    rates: Sequence[float] = ROUTE_RATES,
) -> dict[str, object]:
    """The route SMALL -> LARGE per estimator, as the benchmark tables report it.

    ``small_confidence`` maps each estimator to the small model's confidences on the items
    (in the order of ``small_correct``). Per estimator: APGR, CPT(50%) and the routed accuracy
    at each of ``rates``; with ``large_confidence``, also the large model's kept accuracy at
    each rate (the curve of the large model on its own). ``oracle_apgr`` is the ceiling.
    """
    slm = np.asarray(small_correct, dtype=bool)
    llm = np.asarray(large_correct, dtype=bool)
    _check(slm, llm)
    out: dict[str, object] = {
        "n": len(slm),
        "small_accuracy": round(float(slm.mean()), 3),
        "large_accuracy": round(float(llm.mean()), 3),
        "oracle_apgr": round(apgr(oracle_curve(slm, llm)), 3),
    }
    routes: dict[str, object] = {}
    for name, values in small_confidence.items():
        curve = routing_curve(effective_confidence(values), slm, llm)
        routes[name] = {
            "apgr": round(apgr(curve), 3),
            "cpt50": round(cpt(curve, 0.5), 3),
            "accuracy_at": {f"{r:.1f}": round(curve.at(r), 3) for r in rates},
        }
    out["route"] = routes
    if large_confidence is not None:
        out["large_kept_accuracy"] = {
            name: {r: round(v, 3) for r, v in kept_accuracy_curve(values, llm, rates).items()}
            for name, values in large_confidence.items()
        }
    return out


def bootstrap_ci(
    statistic: Callable[..., float],
    *arrays: Sequence[float] | np.ndarray,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*arrays)``, resampling items jointly.

    Resamples where the statistic is NaN (for example one class only) are dropped; NaN
    bounds when none is left.
    """
    data = [np.asarray(a) for a in arrays]
    n = _check(*data)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        index = rng.integers(0, n, n)
        value = statistic(*(a[index] for a in data))
        if not np.isnan(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def auroc_cell(
    confidence: Sequence[float] | np.ndarray,
    correct: Sequence[bool] | np.ndarray,
    n_boot: int = 500,
) -> dict[str, float]:
    """AUROC and its 95% bootstrap interval, rounded to 3 places: ``{"auroc", "low", "high"}``."""
    low, high = bootstrap_ci(auroc, confidence, correct, n_boot=n_boot)
    return {
        "auroc": round(auroc(confidence, correct), 3),
        "low": round(low, 3),
        "high": round(high, 3),
    }
