"""Does a probe earn its place? Its AUROC beside the token-probability methods, per dataset.

Reads a ``confroute bench run`` directory whose records hold hidden states (a run with
``ood_probe`` or ``trained_probe`` among its methods) and, per dataset, scores each probe file
given with ``--probe NAME=PATH`` on the cached hidden states, beside the confidences the run
cached (``perplexity``, ``min_token_prob``, ``ood_probe`` as shipped, ...). AUROC is that of
the confidence as a detector of right answers, with a 95% bootstrap interval over items.

``--skip-first N`` leaves out the first N items of each dataset's seeded sample (seed 0), the
items the shipped probes were trained on (``limit_per_dataset`` in their metadata: 100), so
that no probe is scored on its own training items. Only numbers are read: no dataset text is
stored.

Usage:
    python benchmarks/probe_auroc.py --run-dir runs/probe-eval-0.5b \
        --data-dir /work/shared/data/benchmarks --model qwen2.5-coder-0.5b-instruct \
        --probe new=runs/probe-out/qwen2.5-coder-0.5b-instruct/ood_probe.json --json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from confroute.bench.cache import decode_hidden, slm_record_files
from confroute.bench.datasets import load_dataset
from confroute.bench.metrics import auroc_cell, effective_confidence
from confroute.estimators.probe_network import Probe
from confroute.models import BUNDLED_MODELS


def _text(cell: dict[str, float]) -> str:
    return f"{cell['auroc']:.3f} [{cell['low']:.2f}, {cell['high']:.2f}]"


def score_run(
    run_dir: Path,
    model: str,
    probes: dict[str, Probe],
    data_dir: str | None,
    skip_first: int,
    prompt_format: str,
) -> dict[str, Any]:
    """Per dataset: items, accuracy and the AUROC of every cached confidence and probe."""
    out: dict[str, Any] = {}
    for dataset, record_file in slm_record_files(run_dir, model, prompt_format).items():
        records = record_file.load()
        if skip_first:
            for item in load_dataset(dataset, data_dir, limit=skip_first):
                records.pop(item.item_id, None)
        rows = [r for r in records.values() if r.get("hidden")]
        if not rows:
            continue
        correct = np.asarray([bool(r["correct"]) for r in rows])
        states = np.stack([h for r in rows if (h := decode_hidden(r["hidden"])) is not None])
        table: dict[str, dict[str, float]] = {}
        for name in sorted({k for r in rows for k in r.get("confidences", {})}):
            values = effective_confidence([r["confidences"].get(name) for r in rows])
            table[name] = auroc_cell(values, correct)
        for name, probe in probes.items():
            table[name] = auroc_cell(probe.predict(states), correct)
        out[dataset] = {
            "items": len(rows),
            "accuracy": round(float(correct.mean()), 3),
            "auroc": table,
        }
    return out


def main() -> None:
    """Parse the arguments, score, print a markdown table (and one JSON line with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--data-dir", default=os.environ.get("CONFROUTE_DATA_DIR"))
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--format", default="answer_only")
    parser.add_argument("--probe", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--skip-first", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    probes = {}
    for spec in args.probe:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            parser.error(f"--probe takes NAME=PATH, got {spec!r}.")
        probes[name] = Probe.load(path, fingerprint=BUNDLED_MODELS[args.model].sha256)
    result = score_run(
        args.run_dir, args.model, probes, args.data_dir, args.skip_first, args.format
    )
    if not result:
        parser.error(f"{args.run_dir} holds no hidden states for {args.model}.")
    names = sorted({n for d in result.values() for n in d["auroc"]})
    print("| dataset | items | accuracy | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for dataset, entry in result.items():
        cells = [_text(entry["auroc"][n]) if n in entry["auroc"] else "-" for n in names]
        print(
            f"| {dataset} | {entry['items']} | {entry['accuracy']:.3f} | "
            + " | ".join(cells)
            + " |"
        )
    if args.json:
        print(json.dumps({"model": args.model, "skip_first": args.skip_first, "datasets": result}))


if __name__ == "__main__":
    main()
