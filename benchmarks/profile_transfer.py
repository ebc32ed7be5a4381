"""Does a calibration profile made on transformers transfer to llama.cpp? Measured item by item.

The shipped profiles were made on the transformers backend (bf16 weights dequantized from the
GGUF). The llama.cpp backend runs the same GGUF with its quantized kernels, so its log-probs,
and hence its confidences, differ a little. This script scores the same calibration items
(the kit datasets of ``confroute calibrate``, answer-only prompts, greedy, the formats' token
caps) on both engines through the calibration path (:class:`confroute.bench.SweepRunner`,
answers cached per engine in ``--run-dir``, so a rerun only reads them) and reports per
estimator:

- ``max_abs_diff`` / ``mean_abs_diff``: |llama.cpp - transformers| confidence over all items,
  and the same over the items whose greedy tokens were identical (``same_tokens``);
- ``flips``: at each escalation rate 0.1 ... 0.5, the threshold of the shipped (transformers)
  profile, and how many items it routes differently on the two engines;
- ``realised_rate``: the share of items that threshold escalates on each engine (the target
  rate is what the profile promises on its own calibration set).

Usage:
    nice -n 19 python benchmarks/profile_transfer.py --limit 18 --json
    python benchmarks/profile_transfer.py --from-profiles --json   # no model, seconds

``--from-profiles`` compares the shipped profiles of both engines item by item instead (each
holds every calibration item's confidence: 11 datasets x 100, so the figures are on 1,100
items; a profile holds no tokens, so ``same_tokens`` is not reported).

``--limit 18`` is 18 items of each of the 11 datasets (198 items). The last line with
``--json`` is one JSON object: ``{"items": ..., "same_tokens": ..., "estimators": {name:
{...}}, "rule": {name: "allowed" | "refused"}}``; the rule is
:mod:`confroute.calibration_transfer`'s, and its table holds this script's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np

from confroute import LocalModel
from confroute.backend import LocalBackend
from confroute.bench import SweepConfig, SweepRunner
from confroute.bench.cache import RecordFile, model_slug
from confroute.calibrate_cli import CALIBRATION_DATASETS
from confroute.calibration import CalibrationProfile, default_profile_path
from confroute.calibration_transfer import FLIP_TOLERANCE, RATE_TOLERANCE
from confroute.llamacpp import LlamaCppModel
from confroute.models import DEFAULT_SLM

ESTIMATORS = ("perplexity", "avg_token_prob", "min_token_prob", "mean_token_entropy", "p_true")
"""The estimators that ship a profile and that the llama.cpp backend serves."""
RATES = (0.1, 0.2, 0.3, 0.4, 0.5)
ENGINES: dict[str, Callable[[str], LocalBackend]] = {
    "transformers": lambda name: LocalModel(name, device="cpu"),
    "llama.cpp": lambda name: LlamaCppModel(name),
}


def score(
    engine: str, slm: str, data_dir: str, run_dir: Path, limit: int, estimators: Sequence[str]
) -> tuple[dict[tuple[str, str], dict[str, Any]], float]:
    """Every item's cached record on ``engine`` (computed when missing), and the seconds spent."""
    config = SweepConfig(
        datasets=CALIBRATION_DATASETS,
        slms=(slm,),
        strong_models=(),
        methods=tuple(estimators),
        limit=limit,
        data_dir=data_dir,
        baseline=False,
        batch_size=4,
        device="cpu",
    )
    root = run_dir / engine.replace(".", "")
    started = time.perf_counter()
    SweepRunner(config, root, load_local=ENGINES[engine]).run()
    seconds = time.perf_counter() - started
    records = {}
    for dataset in CALIBRATION_DATASETS:
        path = root / "slm" / model_slug(slm) / dataset / "answer_only.jsonl"
        for item_id, record in RecordFile(path).load().items():
            records[(dataset, item_id)] = record
    return records, seconds


def confidence(record: dict[str, Any], name: str) -> float:
    """The record's confidence as a profile counts it (None or below 0 as 0)."""
    value = record["confidences"].get(name)
    return 0.0 if value is None else max(0.0, float(value))


def compare(
    name: str,
    slm: str,
    keys: Sequence[tuple[str, str]],
    base: dict[tuple[str, str], dict[str, Any]],
    other: dict[tuple[str, str], dict[str, Any]],
) -> dict[str, Any]:
    """Differences and decision flips of one estimator between the two engines."""
    a = np.array([confidence(base[k], name) for k in keys])
    b = np.array([confidence(other[k], name) for k in keys])
    same = np.array([base[k]["token_ids"] == other[k]["token_ids"] for k in keys])
    path = default_profile_path(slm, name, "transformers")
    profile = CalibrationProfile.load(path) if path is not None else None
    return shift_figures(a, b, same, profile)


def shipped_profile(slm: str, name: str, engine: str) -> CalibrationProfile | None:
    """The shipped profile made on ``engine`` (None: none, or only another engine's fallback)."""
    path = default_profile_path(slm, name, engine)
    if path is None:
        return None
    profile = CalibrationProfile.load(path)
    return profile if profile.fingerprint.backend == engine else None


def by_item(profile: CalibrationProfile) -> dict[tuple[str, str], float]:
    """A profile's confidence of each calibration item."""
    return {
        (entry.dataset, entry.item_id): max(0.0, value)
        for entry, value in zip(profile.manifest, profile.confidences, strict=True)
    }


def compare_profiles(slm: str, name: str) -> dict[str, Any] | None:
    """:func:`compare` on the two engines' shipped profiles (the items both hold)."""
    made_on = shipped_profile(slm, name, "transformers")
    twin = shipped_profile(slm, name, "llama.cpp")
    if made_on is None or twin is None:
        return None
    base, other = by_item(made_on), by_item(twin)
    keys = sorted(set(base) & set(other))
    a = np.array([base[k] for k in keys])
    b = np.array([other[k] for k in keys])
    return {"items": len(keys), **shift_figures(a, b, None, made_on)}


def shift_figures(
    a: np.ndarray,
    b: np.ndarray,
    same: np.ndarray | None,
    profile: CalibrationProfile | None,
) -> dict[str, Any]:
    """Differences of confidences ``a`` (transformers) and ``b`` (llama.cpp) of the same items,
    and the flips at ``profile``'s thresholds for :data:`RATES` (``a``'s quantiles without one).

    ``same``: which items had identical greedy tokens (None: not known).
    """
    diff = np.abs(a - b)
    if same is None:
        same = np.zeros(len(a), dtype=bool)
    points = []
    for rate in RATES:
        threshold = profile.threshold_for(rate) if profile else float(np.quantile(a, rate))
        points.append(
            {
                "rate": rate,
                "threshold": round(threshold, 6),
                "flips": int(np.sum((a < threshold) != (b < threshold))),
                "realised_transformers": round(float(np.mean(a < threshold)), 4),
                "realised_llamacpp": round(float(np.mean(b < threshold)), 4),
            }
        )
    return {
        "max_abs_diff": round(float(diff.max()), 4),
        "mean_abs_diff": round(float(diff.mean()), 4),
        "p95_abs_diff": round(float(np.quantile(diff, 0.95)), 4),
        "max_abs_diff_same_tokens": round(float(diff[same].max()), 4) if same.any() else None,
        "mean_abs_diff_same_tokens": round(float(diff[same].mean()), 4) if same.any() else None,
        "max_flips": max(p["flips"] for p in points),
        "max_flip_share": round(max(p["flips"] for p in points) / len(a), 4),
        "max_rate_shift": round(
            max(abs(p["realised_llamacpp"] - p["realised_transformers"]) for p in points), 4
        ),
        "thresholds_from": "shipped profile" if profile else "transformers quantiles",
        "points": points,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run both engines (or read their cache), compare, print; ``--json`` adds the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slm", default=DEFAULT_SLM)
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("CONFROUTE_DATA_DIR", "/work/shared/data/benchmarks"),
    )
    parser.add_argument("--limit", type=int, default=18, help="items per dataset (default 18)")
    parser.add_argument("--estimators", default=",".join(ESTIMATORS))
    parser.add_argument("--run-dir", type=Path, default=Path("runs/profile_transfer"))
    parser.add_argument(
        "--from-profiles",
        action="store_true",
        help="compare the shipped profiles of both engines (1,100 items, no model is run)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args(argv)
    estimators = [e for e in args.estimators.split(",") if e]
    summary: dict[str, Any] = {"slm": args.slm}
    if args.from_profiles:
        found = {name: compare_profiles(args.slm, name) for name in estimators}
        results = {name: r for name, r in found.items() if r is not None}
        missing = sorted(set(found) - set(results))
        if not results:
            print(f"no estimator has a profile on both engines for {args.slm}")
            return 1
        items = min(r["items"] for r in results.values())
        print(f"shipped profiles, {items} items; no profile on both engines: {missing or 'none'}")
        summary.update(source="shipped profiles", items=items, missing=missing)
    else:
        scored = {}
        seconds = {}
        for engine in ENGINES:
            scored[engine], seconds[engine] = score(
                engine, args.slm, args.data_dir, args.run_dir, args.limit, estimators
            )
        base, other = scored["transformers"], scored["llama.cpp"]
        keys = sorted(set(base) & set(other))
        same = sum(base[k]["token_ids"] == other[k]["token_ids"] for k in keys)
        results = {name: compare(name, args.slm, keys, base, other) for name in estimators}
        print(f"{len(keys)} items, greedy tokens identical on {same}; seconds {seconds}")
        summary.update(
            items=len(keys),
            same_tokens=same,
            seconds={k: round(v, 1) for k, v in seconds.items()},
        )
    print(f"{'estimator':20s} {'max':>7s} {'mean':>7s} {'p95':>7s} {'flips':>6s} {'rate±':>6s}")
    for name, r in results.items():
        print(
            f"{name:20s} {r['max_abs_diff']:7.4f} {r['mean_abs_diff']:7.4f} "
            f"{r['p95_abs_diff']:7.4f} {r['max_flips']:6d} {r['max_rate_shift']:6.3f}"
        )
        for p in r["points"]:
            print(
                f"    rate {p['rate']:.1f} threshold {p['threshold']:.4f}: {p['flips']} flips, "
                f"escalates {p['realised_transformers']:.3f} (transformers) vs "
                f"{p['realised_llamacpp']:.3f} (llama.cpp)"
            )
    rule = {
        name: "allowed"
        if r["max_rate_shift"] <= RATE_TOLERANCE and r["max_flip_share"] <= FLIP_TOLERANCE
        else "refused"
        for name, r in results.items()
    }
    print(f"rule (rate shift <= {RATE_TOLERANCE}, flips <= {FLIP_TOLERANCE:.0%}): {rule}")
    if args.json:
        summary.update(estimators=results, rule=rule)
        print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
