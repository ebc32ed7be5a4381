"""Does ``escalation_rate=r`` hold on shifting traffic? Policies replayed on task streams.

Streams are built from the cached answers of a ``confroute bench run`` directory (no model is
loaded; the directory is only read). The datasets are split into folds; a fold's datasets are
the stream's *tasks*, and the stream's calibration profile is built from the *other* datasets'
records with the calibration-set code (:func:`confroute.calibration.profile_from_run`), so the
profile never saw the stream's tasks (leave-one-fold-out). Items are **resampled with
replacement** (seeded) to make long streams. Patterns: the task switches every 50, 100, 200 or
400 requests (tasks in a seeded order, cycling), or tasks are interleaved at random.

Per policy, method, stream and target rate: the escalated share over every window of
``W = 100`` consecutive requests (error |share - r|: median, 90th percentile, max), the
long-run error, the recovery time after a switch (requests until every later W-window error is
<= 0.05, to the next switch; "segment recovery": until the share escalated since the switch stays
within 0.05 + 3/k of r; a segment that never recovers
counts its length), and APGR (the routed system's accuracy gain over the SLM as a share of the
strong model's, averaged over the target rates) against the best per-task threshold chosen
with hindsight (each task's own r-quantile on the stream).

Without a run directory (or with ``--from-profiles``) the data are the shipped profiles'
items (11 kit datasets x 100, answer-only), the 0.5B's confidences with the 1.5B's
correctness as the strong model's: a stand-in until a run directory exists.

Usage:
    python benchmarks/budget_streams.py --run-dir /work/runs/budget [--quick] [--jobs 4] --json
    python benchmarks/budget_streams.py --from-profiles --quick --json

The last line of ``--json`` is one JSON object: the shipped default policy's worst case over
the streams (``p90_window_error``, ``max_window_error``, ``long_run_error``, ``apgr_loss``,
``recovery``), with the data source, missing datasets and the resampling noted.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from confroute.calibration import (
    CalibrationProfile,
    PoolItem,
    ProfileFingerprint,
    build_calibration_set,
    default_profile_path,
)
from confroute.policies import OnlineBudget, StreamingQuantile, TargetEscalationRate, held_rate
from confroute.policies.base import RoutingPolicy

SLM = "qwen2.5-coder-0.5b-instruct"
STRONG = "qwen2.5-coder-1.5b-instruct"
METHODS = ("perplexity", "p_true", "ood_probe")
WINDOW = 100
PATTERNS = ("every50", "every100", "every200", "every400", "interleaved")
DEFAULT_POLICY = "held"
"""The policy ``ConfRouter(escalation_rate=r)`` builds (:func:`confroute.policies.held_rate`)."""


@dataclass
class Task:
    """One dataset's items: confidence per method, SLM and strong correctness, format."""

    name: str
    key: str
    fine_key: str
    confidence: dict[str, np.ndarray]
    slm: np.ndarray
    strong: np.ndarray | None


PolicyFactory = Callable[[float, CalibrationProfile], RoutingPolicy]


def _held(**options: Any) -> PolicyFactory:
    return lambda r, p: StreamingQuantile(r, p, per_format=True, **options)


POLICIES: dict[str, tuple[PolicyFactory, str]] = {
    # name: (factory, the key it is given: coarse format, letter:k, or format:task)
    "fixed": (lambda r, p: TargetEscalationRate(p, r, per_format=True), "coarse"),
    "streaming": (lambda r, p: StreamingQuantile(r, p, per_format=True), "coarse"),
    "online_budget": (lambda r, p: OnlineBudget(r, p), "coarse"),
    "window100": (_held(window=100), "coarse"),
    "feedback_h4": (_held(window=100, horizon=4), "coarse"),
    "feedback_h10": (_held(window=100, horizon=10), "coarse"),
    "held": (lambda r, p: held_rate(r, p), "coarse"),
    "held_h10": (_held(window=100, horizon=10, tolerance=0.05), "coarse"),
    "held_h20": (_held(window=100, horizon=20, tolerance=0.05), "coarse"),
    "held_w500": (_held(window=500, horizon=6, tolerance=0.05), "coarse"),
    "held_fine": (lambda r, p: held_rate(r, p), "fine"),  # letter:k (run directories only)
    "held_task": (lambda r, p: held_rate(r, p), "task"),
}


# -- data ----------------------------------------------------------------------------------


def tasks_from_run(run_dir: Path, slm: str, methods: Sequence[str]) -> tuple[list[Task], Any]:
    """The run's datasets as tasks (strong answers where the strong model answered all)."""
    from confroute.bench.evaluate import group_records, load_run, record_format

    data = load_run(run_dir, baseline=False, probes="ood_probe" in methods)
    tasks = []
    for group in data.groups:
        if group.slm != slm or group.prompt_format != "answer_only":
            continue
        answers = next(
            (
                a
                for (s, d, f), a in data.strong.items()
                if d == group.dataset and f == "answer_only" and s.split("/")[-1] != slm
            ),
            {},
        )
        strong = (
            np.array([answers[i] for i in group.item_ids])
            if all(i in answers for i in group.item_ids)
            else None
        )
        form = record_format(group_records(run_dir, group)[0])
        fine = f"{form.key}:{form.options}" if form.kind == "letter" else form.key
        tasks.append(
            Task(
                group.dataset,
                form.key,
                fine,
                {m: group.effective(m) for m in methods if m in group.confidences},
                group.correct_for(methods[0]).astype(bool),
                strong,
            )
        )
    return tasks, data


def profile_for(
    source: Any, run_dir: Path | None, slm: str, method: str, others: Sequence[str]
) -> CalibrationProfile:
    """The calibration profile of the datasets ``others`` (leave-one-fold-out)."""
    if run_dir is not None:
        from confroute.calibration import profile_from_run

        return profile_from_run(run_dir, slm, method, datasets=list(others), data=source)
    items = [i for i in source[method] if i.dataset in others]
    fingerprint = ProfileFingerprint(model_name=slm, model_fingerprint="", estimator=method)
    return build_calibration_set(items, fingerprint, fraction=1.0)


def tasks_from_profiles(
    slm: str, methods: Sequence[str]
) -> tuple[list[Task], dict[str, list[PoolItem]]]:
    """Stand-in data: a shipped SLM profile's items; for the 0.5B the 1.5B's correctness on
    the same items is the strong model's (the 1.5B has no stronger model: no APGR)."""
    pools: dict[str, list[PoolItem]] = {}
    strong_path = default_profile_path(STRONG, "perplexity") if slm != STRONG else None
    strong_profile = CalibrationProfile.load(strong_path) if strong_path else None
    strong_ok = (
        {
            (e.dataset, e.item_id): ok
            for e, ok in zip(strong_profile.manifest, strong_profile.correct or (), strict=True)
        }
        if strong_profile is not None
        else None
    )
    by_task: dict[str, dict[str, dict[str, tuple[float, bool, str]]]] = {}
    for method in methods:
        path = default_profile_path(slm, method)
        if path is None:
            continue
        profile = CalibrationProfile.load(path)
        items = []
        for k, entry in enumerate(profile.manifest):
            fmt = (profile.answer_formats or ())[k] if profile.answer_formats else "any"
            ok = bool(profile.correct[k]) if profile.correct else False
            value = profile.confidences[k]
            items.append(
                PoolItem(
                    dataset=entry.dataset,
                    item_id=entry.item_id,
                    confidence=value,
                    correct=ok,
                    answer_format=fmt,
                )
            )
            by_task.setdefault(entry.dataset, {}).setdefault(entry.item_id, {})[method] = (
                value,
                ok,
                fmt,
            )
        pools[method] = items
    tasks = []
    for name, rows in sorted(by_task.items()):
        ids = sorted(i for i in rows if all(m in rows[i] for m in pools))
        key = rows[ids[0]][next(iter(pools))][2]
        tasks.append(
            Task(
                name,
                key,
                key,  # the profiles do not record option counts
                {m: np.array([rows[i][m][0] for i in ids]) for m in pools},
                np.array([rows[i][next(iter(pools))][1] for i in ids]),
                None
                if strong_ok is None
                else np.array([strong_ok.get((name, i), False) for i in ids]),
            )
        )
    return tasks, pools


# -- streams -------------------------------------------------------------------------------


@dataclass
class Stream:
    """A sequence of (task index, item index) and where the task switches."""

    pattern: str
    task_ids: np.ndarray
    item_ids: np.ndarray
    switches: list[int]


def make_stream(tasks: Sequence[Task], pattern: str, length: int, seed: int) -> Stream:
    """A stream over ``tasks``: items resampled with replacement, seeded."""
    rng = np.random.default_rng(seed)
    if pattern == "interleaved":
        task_ids = rng.integers(0, len(tasks), length)
        switches: list[int] = []
    else:
        every = int(pattern.removeprefix("every"))
        order = rng.permutation(len(tasks))
        task_ids = np.array([order[(t // every) % len(tasks)] for t in range(length)])
        switches = list(range(every, length, every))
    item_ids = np.array([rng.integers(0, len(tasks[t].slm)) for t in task_ids])
    return Stream(pattern, task_ids, item_ids, switches)


# -- metrics -------------------------------------------------------------------------------


def window_errors(escalated: np.ndarray, rate: float, window: int = WINDOW) -> np.ndarray:
    """|share escalated - rate| over every ``window`` consecutive requests."""
    cumulative = np.concatenate([[0.0], np.cumsum(escalated)])
    shares = (cumulative[window:] - cumulative[:-window]) / window
    return np.asarray(np.abs(shares - rate), dtype=float)


def recovery(escalated: np.ndarray, rate: float, switches: Sequence[int]) -> int | None:
    """Worst requests after a switch until every later W-window error is <= 0.05 (to the next).

    None without switches; a segment that never recovers counts its length.
    """
    if not switches:
        return None
    errors = window_errors(escalated, rate)  # errors[k]: the window ending at request k + W - 1
    bounds = [*switches, len(escalated)]
    worst = 0
    for start, end in itertools.pairwise(bounds):
        ends = np.arange(max(start, WINDOW - 1), end)
        bad = np.flatnonzero(errors[ends - (WINDOW - 1)] > 0.05 + 1e-9)
        worst = max(worst, int(ends[bad[-1]] - start + 1) if bad.size else 0)
    return worst


def segment_recovery(escalated: np.ndarray, rate: float, switches: Sequence[int]) -> int | None:
    """Worst requests after a switch until the share since the switch stays within 0.05 + 3/k."""
    if not switches:
        return None
    bounds = [*switches, len(escalated)]
    worst = 0
    for start, end in itertools.pairwise(bounds):
        segment = escalated[start:end]
        k = np.arange(1, segment.size + 1)
        late = np.flatnonzero(np.abs(np.cumsum(segment) - rate * k) > 0.05 * k + 3)
        worst = max(worst, int(late[-1]) + 1 if late.size else 0)
    return worst


def pgr(escalated: np.ndarray, slm: np.ndarray, strong: np.ndarray) -> float:
    """Share of the strong model's accuracy gain recovered by these escalations."""
    gap = strong.mean() - slm.mean()
    if gap <= 0:
        return float("nan")
    return float((np.where(escalated, strong, slm).mean() - slm.mean()) / gap)


def area(rates: Sequence[float], values: Sequence[float]) -> float:
    """Trapezoid area of a PGR curve through (0, 0) and (1, 1)."""
    return float(np.trapezoid([0.0, *values, 1.0], [0.0, *rates, 1.0]))


def hindsight(conf: np.ndarray, task_ids: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """Each task's own least-confident ``rate`` share on the stream (random tie-break)."""
    escalate = np.zeros(conf.size, dtype=bool)
    jitter = np.random.default_rng(seed).random(conf.size)
    for task in np.unique(task_ids):
        members = np.flatnonzero(task_ids == task)
        order = members[np.lexsort((jitter[members], conf[members]))]
        escalate[order[: round(rate * members.size)]] = True
    return escalate


# -- one unit of work ----------------------------------------------------------------------


def run_unit(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Every policy on every pattern of one (method, fold)."""
    tasks: list[Task] = job["tasks"]
    profile: CalibrationProfile = job["profile"]
    method, rates, length = job["method"], job["rates"], job["length"]
    rows = []
    for pattern in job["patterns"]:
        stream = make_stream(tasks, pattern, length, job["seed"])
        picked = [tasks[t] for t in stream.task_ids]
        conf = np.array(
            [t.confidence[method][i] for t, i in zip(picked, stream.item_ids, strict=True)]
        )
        slm = np.array([t.slm[i] for t, i in zip(picked, stream.item_ids, strict=True)])
        strong_parts = [t.strong for t in picked]
        strong = (
            np.array([s[i] for s, i in zip(strong_parts, stream.item_ids, strict=True)])
            if all(s is not None for s in strong_parts)
            else None
        )
        keys = {
            "coarse": [t.key for t in picked],
            "fine": [t.fine_key for t in picked],
            "task": [f"{t.key}:{t.name}" for t in picked],
        }
        grid = np.linspace(0.0, 1.0, 51)
        reference = (
            np.array(
                [pgr(hindsight(conf, stream.task_ids, x, job["seed"]), slm, strong) for x in grid]
            )
            if strong is not None
            else None
        )
        for name in job["policies"]:
            factory, key_kind = POLICIES[name]
            curve, achieved, per_rate = [], [], []
            started = time.perf_counter()
            for rate in rates:
                policy = factory(rate, profile)
                escalated = np.array(
                    [
                        policy.decide(None if c < 0 else float(c), answer_format=k).escalate
                        for c, k in zip(conf, keys[key_kind], strict=True)
                    ]
                )
                errors = window_errors(escalated, rate)
                per_rate.append(
                    {
                        "rate": rate,
                        "median_window_error": float(np.median(errors)),
                        "p90_window_error": float(np.quantile(errors, 0.9)),
                        "max_window_error": float(errors.max()),
                        "long_run_error": abs(float(escalated.mean()) - rate),
                        "recovery": recovery(escalated, rate, stream.switches),
                        "segment_recovery": segment_recovery(escalated, rate, stream.switches),
                    }
                )
                achieved.append(float(escalated.mean()))
                if strong is not None:
                    curve.append(pgr(escalated, slm, strong))
            policy_apgr = area(rates, curve) if strong is not None else None
            # the reference escalates the same share as the policy did, each task at its own
            # quantile: a policy gains nothing by overspending
            best = (
                area(rates, list(np.interp(achieved, grid, reference)))
                if reference is not None
                else None
            )
            rows.append(
                {
                    "method": method,
                    "fold": job["fold"],
                    "pattern": pattern,
                    "policy": name,
                    "per_rate": per_rate,
                    "apgr": policy_apgr,
                    "hindsight_apgr": best,
                    "achieved": achieved,
                    "apgr_loss": None
                    if best is None or policy_apgr is None
                    else best - policy_apgr,
                    "seconds": time.perf_counter() - started,
                }
            )
    return rows


# -- summary -------------------------------------------------------------------------------


def _worst(rows: Sequence[dict[str, Any]], field: str) -> float | None:
    values = [r[field] for row in rows for r in row["per_rate"] if r[field] is not None]
    return max(values) if values else None


def summary(
    rows: Sequence[dict[str, Any]], policy: str, method: str | None = None
) -> dict[str, Any]:
    """Worst case over streams and rates for one policy (and method)."""
    mine = [r for r in rows if r["policy"] == policy and (method is None or r["method"] == method)]
    losses = [r["apgr_loss"] for r in mine if r["apgr_loss"] is not None]
    medians = [x["median_window_error"] for r in mine for x in r["per_rate"]]
    return {
        "policy": policy,
        "median_window_error": float(np.median(medians)) if medians else None,
        "p90_window_error": _worst(mine, "p90_window_error"),
        "max_window_error": _worst(mine, "max_window_error"),
        "long_run_error": _worst(mine, "long_run_error"),
        "recovery": _worst(mine, "recovery"),
        "segment_recovery": _worst(mine, "segment_recovery"),
        "apgr_loss": max(losses) if losses else None,
        "mean_apgr_loss": float(np.mean(losses)) if losses else None,
        "streams": len(mine),
    }


def markdown(rows: Sequence[dict[str, Any]], policies: Sequence[str]) -> str:
    """Per method: one line per policy, worst case over streams and target rates."""

    def cell(value: float | None, digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    lines = []
    for method in sorted({r["method"] for r in rows}):
        lines += [
            f"method `{method}` (worst over streams x rates; APGR loss vs per-task hindsight)",
            "",
            "| policy | median win. err | p90 win. err | max win. err | long-run err | "
            "recovery | segment recovery | APGR loss (max) | APGR loss (mean) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for policy in policies:
            s = summary(rows, policy, method)
            recovered = "-" if s["recovery"] is None else str(int(s["recovery"]))
            segment = "-" if s["segment_recovery"] is None else str(int(s["segment_recovery"]))
            lines.append(
                f"| {policy} | {cell(s['median_window_error'])} | {cell(s['p90_window_error'])} "
                f"| {cell(s['max_window_error'])} | {cell(s['long_run_error'])} | {recovered} "
                f"| {segment} "
                f"| {cell(s['apgr_loss'])} | {cell(s['mean_apgr_loss'])} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Build the streams, replay every policy, print the tables (and the JSON line)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=None, help="a bench run directory")
    parser.add_argument("--from-profiles", action="store_true", help="shipped profiles' items")
    parser.add_argument("--slm", default=SLM)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--length", type=int, default=2000, help="requests per stream")
    parser.add_argument("--rates", default="0.1,0.3,0.5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="perplexity, 1,000 requests")
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    parser.add_argument("--out", type=Path, default=None, help="write every row as JSON")
    args = parser.parse_args(argv)
    methods = ["perplexity"] if args.quick else args.methods.split(",")
    length = 1000 if args.quick else args.length
    rates = [float(r) for r in args.rates.split(",")]
    policies = args.policies.split(",")
    unknown = sorted(set(policies) - set(POLICIES))
    if unknown:
        parser.error(f"unknown policies {unknown}; choose from {sorted(POLICIES)}")
    notes: list[str] = []
    run_dir = None if args.from_profiles else args.run_dir
    if run_dir is None:
        tasks, source = tasks_from_profiles(args.slm, methods)
        data_source = f"shipped profiles of {args.slm}" + (
            " (the 1.5B's correctness on the same items as the strong model's)"
            if args.slm != STRONG
            else " (no stronger model: no APGR)"
        )
        expected: list[str] = []
    else:
        tasks, source = tasks_from_run(run_dir, args.slm, methods)
        data_source = str(run_dir)
        expected = list(source.config.get("datasets", []))
    names = [t.name for t in tasks]
    missing = sorted(set(expected) - set(names))
    if missing:
        notes.append(f"datasets missing from the run (left out): {', '.join(missing)}")
    no_strong = [t.name for t in tasks if t.strong is None]
    if no_strong:
        notes.append(f"no complete strong-model answers (APGR n/a): {', '.join(no_strong)}")
    methods = [m for m in methods if all(m in t.confidence for t in tasks)]
    folds = max(1, min(args.folds, len(tasks) // 2))
    if len(tasks) < 3 or not methods:
        print(
            f"budget_streams: need >= 3 datasets with {args.methods} confidences; found "
            f"{names or 'none'} in {data_source}. Wait for the run or pass --from-profiles.",
            file=sys.stderr,
        )
        return 2
    order = np.random.default_rng(args.seed).permutation(len(tasks))
    jobs = []
    for fold in range(folds):
        mine = [tasks[i] for i in order[fold::folds]]
        others = [t.name for t in tasks if t not in mine]
        for method in methods:
            jobs.append(
                {
                    "tasks": mine,
                    "profile": profile_for(source, run_dir, args.slm, method, others),
                    "method": method,
                    "fold": ",".join(t.name for t in mine),
                    "patterns": PATTERNS,
                    "policies": policies,
                    "rates": rates,
                    "length": length,
                    "seed": args.seed + fold,
                }
            )
    started = time.perf_counter()
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            rows = [row for part in pool.map(run_unit, jobs) for row in part]
    else:
        rows = [row for job in jobs for row in run_unit(job)]
    print(
        f"data: {data_source}; tasks {', '.join(names)}; {folds} folds (stream tasks never in "
        f"the profile); {len(PATTERNS)} patterns x {length} requests, items resampled with "
        f"replacement (seed {args.seed}); rates {rates}; W={WINDOW}; "
        f"{time.perf_counter() - started:.0f} s"
    )
    for note in notes:
        print(f"note: {note}")
    print()
    print(markdown(rows, policies))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    if args.json:
        result = {
            k: round(v, 4) if isinstance(v, float) else v
            for k, v in summary(rows, DEFAULT_POLICY).items()
        }
        result.update(
            slm=args.slm,
            data=data_source,
            methods=methods,
            missing_datasets=missing,
            resampled_with_replacement=True,
            window=WINDOW,
            rates=rates,
            notes=notes,
        )
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
