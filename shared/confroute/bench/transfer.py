"""Does a calibration threshold transfer to unseen data? Leave-one-dataset-out, from a run.

For every estimator and confidence variant, each dataset of a benchmark run is held out in turn;
a :class:`~confroute.calibration.CalibrationProfile` is built from the other datasets (the
paper's calibration set), and its thresholds for target escalation rates 0.1-0.5 are applied to
the held-out dataset. The achieved escalation rate, its absolute error, and the error of the
profile's predicted routing curve against the one measured on the held-out data are reported.

Confidence variants (``docs/calibration.md``):

- ``raw``: the estimator's confidence as the router computes it;
- ``answer_span``: token statistics of the final-answer tokens only
  (:func:`confroute.bench.answer_formats.answer_span`);
- ``chance``: chance-corrected for the number of options,
  :func:`confroute.bench.answer_formats.chance_corrected` (probability-like estimators only);
- ``lift``: the ratio to chance, :func:`confroute.bench.answer_formats.chance_lift` (same
  estimators).

Poolings: ``pooled`` (one profile from all other datasets) and ``per_format`` (a profile from
the other datasets of the same answer format: letter, yes/no, number; the pooled one when no
other dataset has that format). Policies: ``fixed`` (the profile's threshold) and
``streaming`` (:class:`~confroute.policies.StreamingQuantile`, which starts from the profile
and follows the quantile of the held-out confidences as they arrive, without labels).

No model is loaded; everything comes from the run's cache.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from confroute import estimators as registry
from confroute.bench import metrics as m
from confroute.bench.answer_formats import answer_span, chance_corrected, chance_lift
from confroute.bench.cache import generation_from_record
from confroute.bench.evaluate import (
    OPTION_PROB,
    GroupScores,
    RunData,
    group_records,
    load_run,
    record_format,
)
from confroute.calibration import (
    CalibrationProfile,
    PoolItem,
    ProfileFingerprint,
    profile_from_run,
)
from confroute.estimators import EstimationContext
from confroute.policies import StreamingQuantile

__all__ = [
    "DEFAULT_RATES",
    "POOLINGS",
    "SPAN_METHODS",
    "VARIANTS",
    "TransferRow",
    "format_of",
    "leave_one_dataset_out",
    "profile_from_run",
    "variant_confidences",
]

DEFAULT_RATES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)
VARIANTS: tuple[str, ...] = ("raw", "answer_span", "chance", "lift")
POOLINGS: tuple[str, ...] = ("pooled", "per_format")
POLICIES: tuple[str, ...] = ("fixed", "streaming")
SPAN_METHODS: frozenset[str] = frozenset(
    {"avg_token_prob", "perplexity", "mean_token_entropy", "min_token_prob"}
)
"""Estimators computed from the answer's token statistics (the ones a span changes)."""
CHANCE_METHODS: frozenset[str] = frozenset(
    {"avg_token_prob", "perplexity", "min_token_prob", OPTION_PROB}
)
"""Estimators whose confidence is a probability of the chosen answer (chance applies)."""


format_of = record_format
"""The answer format of a cached SLM record (alias of :func:`.evaluate.record_format`)."""


def variant_confidences(
    run_dir: Path, group: GroupScores, method: str, variant: str
) -> np.ndarray | None:
    """Effective confidences of ``method`` under ``variant`` (None: variant does not apply).

    Unparsed answers and missing confidences get the lowest confidence, as in the router.
    """
    if method not in group.confidences:
        return None
    if variant == "raw":
        return group.effective(method)
    records = group_records(run_dir, group)
    if variant in ("chance", "lift"):
        if method not in CHANCE_METHODS:
            return None
        correct = chance_corrected if variant == "chance" else chance_lift
        raw = group.confidences[method]
        values = [
            correct(None if math.isnan(v) else float(v), format_of(r).options)
            for v, r in zip(raw, records, strict=True)
        ]
        return m.effective_confidence(values, group.parsed)
    if variant == "answer_span":
        if method not in SPAN_METHODS:
            return None
        estimator = registry.get(method)
        context = EstimationContext(messages=[])
        values = [
            estimator.confidence(answer_span(generation_from_record(r), format_of(r)), context)
            for r in records
        ]
        return m.effective_confidence(values, group.parsed)
    raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")


@dataclass
class TransferRow:
    """Transfer error of one (SLM, estimator, variant, pooling) over held-out datasets."""

    slm: str
    method: str
    variant: str
    pooling: str
    policy: str
    """``fixed`` (the profile's threshold) or ``streaming`` (:class:`~confroute.policies.
    StreamingQuantile` warm-started from the profile, over the held-out items in a fixed
    shuffled order)."""
    mae: float
    """Mean absolute error of the achieved escalation rate over datasets x rates."""
    max_error: float
    """Largest absolute rate error."""
    curve_rms: float
    """RMS error of the predicted vs measured routing curve (system accuracy with a strong
    model, else the SLM's accuracy on the kept answers)."""
    curve_kind: str
    per_dataset: dict[str, list[float]]
    """Held-out dataset -> achieved rate at each target rate."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dict(self.__dict__)


def _profile(values: Sequence[tuple[str, str, float, bool, bool | None]]) -> CalibrationProfile:
    items = [
        PoolItem(dataset=d, item_id=i, confidence=max(0.0, c), correct=ok, strong_correct=strong_ok)
        for d, i, c, ok, strong_ok in values
    ]
    fingerprint = ProfileFingerprint(model_name="", model_fingerprint="", estimator="")
    return CalibrationProfile.from_pool(items, fingerprint)


def leave_one_dataset_out(
    run_dir: str | Path,
    *,
    slm: str | None = None,
    prompt_format: str = "answer_only",
    methods: Sequence[str] | None = None,
    strong: str | None = None,
    rates: Sequence[float] = DEFAULT_RATES,
    data: RunData | None = None,
) -> list[TransferRow]:
    """Leave-one-dataset-out transfer of escalation-rate thresholds, for every variant.

    Args:
        run_dir: A ``confroute bench run`` directory.
        slm: The SLM (default: the first one in the run).
        prompt_format: Prompt format of the answers.
        methods: Estimators (default: every method in the run, the query baseline excluded).
        strong: Strong model whose answers give the system-accuracy curve (default: the first
            strong model that answered every item and is not the SLM; none -> kept accuracy).
        rates: Target escalation rates.
        data: An already loaded run (saves reading it again).
    """
    root = Path(run_dir)
    data = data or load_run(root, baseline=False)
    slm = slm or data.groups[0].slm
    groups = [g for g in data.groups if g.slm == slm and g.prompt_format == prompt_format]
    if strong is None:
        candidates = sorted(
            {s for (s, d, f) in data.strong if f == prompt_format and s.split("/")[-1] != slm}
        )
        strong = next(
            (
                s
                for s in candidates
                if all(
                    i in data.strong.get((s, g.dataset, prompt_format), {})
                    for g in groups
                    for i in g.item_ids
                )
            ),
            None,
        )
    names = methods or sorted({k for g in groups for k in g.confidences} - {"query_router"})
    formats = {g.dataset: format_of(group_records(root, g)[0]).key for g in groups}
    rows = []
    for method in names:
        for variant in VARIANTS:
            scored: dict[str, np.ndarray] = {}
            for group in groups:
                values = variant_confidences(root, group, method, variant)
                if values is not None:
                    scored[group.dataset] = values
            if len(scored) < 2:
                continue
            for pooling in POOLINGS:
                for policy in POLICIES:
                    rows.append(
                        _transfer(
                            (slm, method, variant, pooling, policy),
                            groups,
                            scored,
                            formats,
                            data,
                            strong,
                            rates,
                        )
                    )
    return rows


def _transfer(
    setting: tuple[str, str, str, str, str],
    groups: list[GroupScores],
    scored: dict[str, np.ndarray],
    formats: dict[str, str],
    data: RunData,
    strong: str | None,
    rates: Sequence[float],
) -> TransferRow:
    slm, method, variant, pooling, policy = setting
    by_name = {g.dataset: g for g in groups}

    def strong_of(group: GroupScores) -> np.ndarray | None:
        if strong is None:
            return None
        answers = data.strong[(strong, group.dataset, group.prompt_format)]
        return np.array([answers[i] for i in group.item_ids])

    errors: list[float] = []
    curve_errors: list[float] = []
    per_dataset: dict[str, list[float]] = {}
    for held_out, values in scored.items():
        others = [d for d in scored if d != held_out]
        if pooling == "per_format":
            same = [d for d in others if formats[d] == formats[held_out]]
            others = same or others
        pool = []
        for name in others:
            group = by_name[name]
            llm = strong_of(group)
            for k, item_id in enumerate(group.item_ids):
                pool.append(
                    (
                        name,
                        item_id,
                        float(scored[name][k]),
                        bool(group.correct_for(method)[k]),
                        None if llm is None else bool(llm[k]),
                    )
                )
        profile = _profile(pool)
        group = by_name[held_out]
        correct = group.correct_for(method)
        llm = strong_of(group)
        predicted = profile.predicted_routing_curve(list(rates))
        achieved = []
        order = np.random.default_rng(0).permutation(len(values))
        for rate, point in zip(rates, predicted, strict=True):
            if policy == "streaming":
                stream = StreamingQuantile(rate, profile)
                escalate = np.zeros(len(values), dtype=bool)
                for k in order:
                    escalate[k] = stream.decide(float(values[k])).escalate
            else:
                escalate = values < profile.threshold_for(rate)
            achieved.append(float(escalate.mean()))
            errors.append(abs(achieved[-1] - rate))
            if llm is not None and point.system_accuracy is not None:
                measured = float(np.where(escalate, llm, correct).mean())
                curve_errors.append(measured - point.system_accuracy)
            elif point.kept_accuracy is not None and (~escalate).any():
                curve_errors.append(float(correct[~escalate].mean()) - point.kept_accuracy)
        per_dataset[held_out] = [round(a, 3) for a in achieved]
    return TransferRow(
        slm=slm,
        method=method,
        variant=variant,
        pooling=pooling,
        policy=policy,
        mae=float(np.mean(errors)),
        max_error=float(np.max(errors)),
        curve_rms=float(np.sqrt(np.mean(np.square(curve_errors)))) if curve_errors else math.nan,
        curve_kind="system accuracy" if strong else "kept accuracy",
        per_dataset=per_dataset,
    )


def markdown(rows: Sequence[TransferRow], rates: Sequence[float] = DEFAULT_RATES) -> str:
    """A table of transfer errors, best first per SLM, and per-dataset rates of the best row."""
    lines = []
    for slm in sorted({r.slm for r in rows}):
        mine = sorted((r for r in rows if r.slm == slm), key=lambda r: r.mae)
        lines += [
            f"#### SLM `{slm}`: leave-one-dataset-out, target rates "
            + ", ".join(f"{r:g}" for r in rates),
            "",
            "| method | variant | pooling | policy | rate MAE | max error | curve RMS |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r.method} | {r.variant} | {r.pooling} | {r.policy} | {r.mae:.3f} | "
            f"{r.max_error:.3f} | {r.curve_rms:.3f} |"
            for r in mine
        ]
        lines.append("")
    return "\n".join(lines)


def pivot_markdown(rows: Sequence[TransferRow], policy: str, *, metric: str = "mae") -> str:
    """One table per SLM: methods x (variant, pooling), the rate MAE (or another metric)."""
    columns = [(v, p) for v in VARIANTS for p in POOLINGS]
    lines = []
    for slm in sorted({r.slm for r in rows}):
        methods = sorted({r.method for r in rows if r.slm == slm})
        lines += [
            f"SLM `{slm}`, policy `{policy}`, {metric}:",
            "",
            "| method | " + " | ".join(f"{v} / {p}" for v, p in columns) + " |",
            "|---" * (len(columns) + 1) + "|",
        ]
        for method in methods:
            cells = []
            for variant, pooling in columns:
                found = [
                    r
                    for r in rows
                    if r.slm == slm
                    and (r.method, r.variant, r.pooling, r.policy)
                    == (method, variant, pooling, policy)
                ]
                cells.append(f"{getattr(found[0], metric):.3f}" if found else "-")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m confroute.bench.transfer RUN_DIR [--slm NAME] [--json OUT]``."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--slm", default=None)
    parser.add_argument("--methods", default=None, help="comma-separated (default: all in run)")
    parser.add_argument("--json", type=Path, default=None, help="write the rows as JSON")
    parser.add_argument("--pivot", action="store_true", help="methods x variants tables")
    args = parser.parse_args(argv)
    data = load_run(args.run_dir, baseline=False)
    slms = [args.slm] if args.slm else sorted({g.slm for g in data.groups})
    rows: list[TransferRow] = []
    for slm in slms:
        rows += leave_one_dataset_out(
            args.run_dir,
            slm=slm,
            methods=args.methods.split(",") if args.methods else None,
            data=data,
        )
    if args.pivot:
        for policy in POLICIES:
            print(pivot_markdown(rows, policy))
            print(pivot_markdown(rows, policy, metric="curve_rms"))
    else:
        print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps([r.to_dict() for r in rows], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
