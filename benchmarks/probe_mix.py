"""Does a probe trained on a wide mix of labelled answers earn its place? Train, hold out, compare.

Reads a ``confroute bench run`` directory whose records hold hidden states (a run with
``ood_probe`` among its methods) and cuts each dataset's seeded sample (seed 0) by position:

- ``[0, --skip)``: the items the shipped probe was trained on (its metadata's
  ``limit_per_dataset``, 100). They are never scored, so the shipped probe is not scored on
  its own training items; the new probes train on them;
- the next ``--dev`` items: the DEVELOPMENT split, on which the ship rule is decided;
- the next ``--report`` items: the REPORT split, reported and used for no choice;
- those first items, every item after the report split, and every item of a ``*_train``
  dataset: TRAINING items.

Two kinds of probe are trained with the OOD recipe (lr 1e-4, at most 20 epochs, a tenth of the
training items held out for early stopping):

- ``mix``: on the training items of every dataset (the file that would ship);
- ``unseen``: for each dataset D, on the training items of every dataset of another task
  (``commonsenseqa_train`` counts as ``commonsenseqa``'s task), scored on D: the figure for a
  user whose task the probe never saw.

Printed per split and dataset: items, accuracy and the AUROC [95% bootstrap interval] of every
cached confidence (``perplexity``, ``min_token_prob``, ...), of the ``shipped`` probe (the
package's ``ood_probe``, or ``--shipped PATH``) and of both new probes, then their means over
datasets. The ship rule, fixed before the report split is read: ship ``mix`` when, on the
development split, the mean AUROC of ``unseen`` beats the mean of every other confidence (the
token probabilities and the shipped probe).

    python benchmarks/probe_mix.py --run-dir runs/probe10k-0.5b \
        --data-dir /work/shared/data/benchmarks --json
    python benchmarks/probe_mix.py ... --save runs/probe-out   # writes MODEL/ood_probe.*

Only numbers are read and written: no dataset text.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from confroute.bench.cache import decode_hidden, slm_record_files
from confroute.bench.datasets import load_dataset
from confroute.bench.metrics import auroc_cell, effective_confidence
from confroute.estimators.probe_network import Probe, default_probe_path, train_probe
from confroute.models import BUNDLED_MODELS, DEFAULT_SLM

SPLITS = ("dev", "report")
TRAIN_SUFFIX = "_train"
logger = logging.getLogger("probe_mix")


@dataclass
class Part:
    """The records of one dataset that fall in one split."""

    records: list[dict[str, Any]] = field(default_factory=list)

    def states(self) -> np.ndarray:
        """The hidden states, one row per record."""
        rows = [decode_hidden(r["hidden"]) for r in self.records]
        return np.stack([h for h in rows if h is not None])

    def correct(self) -> np.ndarray:
        """1 for a right answer, 0 for a wrong one."""
        return np.asarray([int(bool(r["correct"])) for r in self.records])


def task_of(dataset: str) -> str:
    """The task a dataset belongs to: a ``*_train`` split counts as its test split's task."""
    return dataset.removesuffix(TRAIN_SUFFIX)


def split_of(dataset: str, position: int, skip: int, dev: int, report: int) -> str:
    """``train``, ``dev`` or ``report`` for the item at ``position`` of a dataset's sample."""
    if dataset.endswith(TRAIN_SUFFIX) or not skip <= position < skip + dev + report:
        return "train"
    return "dev" if position < skip + dev else "report"


def load_parts(
    run_dir: Path,
    model: str,
    prompt_format: str,
    data_dir: str | None,
    cuts: tuple[int, int, int],
    seed: int = 0,
) -> dict[str, dict[str, Part]]:
    """Per dataset and split, the cached records that hold a hidden state."""
    out: dict[str, dict[str, Part]] = {}
    for dataset, record_file in slm_record_files(run_dir, model, prompt_format).items():
        records = {k: r for k, r in record_file.load().items() if r.get("hidden")}
        if not records:
            continue
        order = load_dataset(dataset, data_dir, seed=seed)
        parts: dict[str, Part] = {}
        for position, item in enumerate(order):
            record = records.get(item.item_id)
            split = split_of(dataset, position, *cuts)
            if record is not None:
                parts.setdefault(split, Part()).records.append(record)
        out[dataset] = parts
    return out


def train_on(
    parts: dict[str, dict[str, Part]], datasets: list[str], model: str, seed: int
) -> Probe:
    """The OOD recipe on the training items of ``datasets`` (a tenth held out to stop early)."""
    chosen = {d: parts[d]["train"] for d in datasets if "train" in parts[d]}
    summary = {
        d: {"items": len(p.records), "accuracy": round(float(p.correct().mean()), 4)}
        for d, p in chosen.items()
    }
    return train_probe(
        np.concatenate([p.states() for p in chosen.values()]),
        np.concatenate([p.correct() for p in chosen.values()]),
        model=model,
        fingerprint=BUNDLED_MODELS[model].sha256,
        kind="ood",
        seed=seed,
        validation=0.1,
        training={
            "datasets": summary,
            "source": "bench run cache (benchmarks/probe_mix.py)",
            "sampler": "confroute.bench.datasets.sample_items",
            "sample_seed": seed,
        },
    )


def score(
    parts: dict[str, dict[str, Part]], probes: dict[str, Probe], unseen: dict[str, Probe]
) -> dict[str, dict[str, Any]]:
    """Per split and evaluation dataset: items, accuracy and the AUROC of every confidence."""
    out: dict[str, dict[str, Any]] = {s: {} for s in SPLITS}
    for dataset, by_split in parts.items():
        for split in SPLITS:
            part = by_split.get(split)
            if part is None or not part.records:
                continue
            correct = part.correct()
            if correct.min() == correct.max():
                logger.info("%s %s: one class only, left out", dataset, split)
                continue
            names = sorted({k for r in part.records for k in r.get("confidences", {})})
            table = {
                name: auroc_cell(
                    effective_confidence([r["confidences"].get(name) for r in part.records]),
                    correct,
                )
                for name in names
            }
            states = part.states()
            for name, probe in probes.items():
                table[name] = auroc_cell(probe.predict(states), correct)
            table["unseen"] = auroc_cell(unseen[dataset].predict(states), correct)
            out[split][dataset] = {
                "items": len(correct),
                "accuracy": round(float(correct.mean()), 3),
                "auroc": table,
            }
    return out


def means(table: dict[str, Any]) -> dict[str, float]:
    """Mean AUROC of each confidence over the datasets that have it."""
    names = sorted({n for entry in table.values() for n in entry["auroc"]})
    return {
        n: round(
            float(np.mean([e["auroc"][n]["auroc"] for e in table.values() if n in e["auroc"]])), 3
        )
        for n in names
    }


def ship_verdict(dev_means: dict[str, float]) -> tuple[bool, str]:
    """The ship rule on the development split's means, and the competitor it was held against."""
    rivals = {n: v for n, v in dev_means.items() if n not in ("mix", "unseen")}
    best = max(rivals, key=lambda n: rivals[n])
    return dev_means["unseen"] > rivals[best], best


def print_tables(result: dict[str, dict[str, Any]]) -> None:
    """One markdown table per split, then the means."""
    for split in SPLITS:
        table = result[split]
        if not table:
            continue
        names = sorted({n for e in table.values() for n in e["auroc"]})
        print(f"\n{split} split\n")
        print("| dataset | items | accuracy | " + " | ".join(names) + " |")
        print("|---|---|---|" + "---|" * len(names))
        for dataset, entry in sorted(table.items()):
            cells = [
                f"{c['auroc']:.3f} [{c['low']:.2f}, {c['high']:.2f}]"
                if (c := entry["auroc"].get(n))
                else "-"
                for n in names
            ]
            print(
                f"| {dataset} | {entry['items']} | {entry['accuracy']:.3f} | "
                + " | ".join(cells)
                + " |"
            )
        mean = means(table)
        print("| mean | | | " + " | ".join(f"{mean[n]:.3f}" for n in names) + " |")


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, train, score, print (and save the ``mix`` probe with ``--save``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--data-dir", default=os.environ.get("CONFROUTE_DATA_DIR"))
    parser.add_argument("--model", default=DEFAULT_SLM, choices=sorted(BUNDLED_MODELS))
    parser.add_argument("--format", default="answer_only")
    parser.add_argument(
        "--skip", type=int, default=100, help="first items, never scored (the shipped probe's)"
    )
    parser.add_argument("--dev", type=int, default=100, help="development items per dataset")
    parser.add_argument("--report", type=int, default=100, help="report items per dataset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--shipped", type=Path, default=None, help="the probe to beat (default: the package's)"
    )
    parser.add_argument("--save", type=Path, default=None, help="write OUT/MODEL/ood_probe.*")
    parser.add_argument("--json", action="store_true", help="also print one JSON line")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    cuts = (args.skip, args.dev, args.report)
    parts = load_parts(args.run_dir, args.model, args.format, args.data_dir, cuts, args.seed)
    if not any("train" in p for p in parts.values()):
        parser.error(f"{args.run_dir} holds no training items with hidden states for {args.model}.")
    datasets = sorted(parts)
    trained = {d: len(p["train"].records) for d, p in parts.items() if "train" in p}
    logger.info("training items: %d (%s)", sum(trained.values()), trained)
    mix = train_on(parts, datasets, args.model, args.seed)
    evaluated = [d for d in datasets if any(s in parts[d] for s in SPLITS)]
    unseen = {
        d: train_on(parts, [o for o in datasets if task_of(o) != task_of(d)], args.model, args.seed)
        for d in evaluated
    }
    shipped = Probe.load(
        args.shipped or default_probe_path(args.model, "ood"),
        model=args.model,
        fingerprint=BUNDLED_MODELS[args.model].sha256,
    )
    result = score(parts, {"mix": mix, "shipped": shipped}, unseen)
    print_tables(result)
    dev_means = means(result["dev"])
    ship, rival = ship_verdict(dev_means)
    print(
        f"\nship rule (development split): unseen {dev_means['unseen']:.3f} against the best "
        f"other, {rival} {dev_means[rival]:.3f}: {'SHIP' if ship else 'do not ship'}"
    )
    if args.save is not None:
        weights, _ = mix.save(args.save / args.model / "ood_probe")
        logger.info("mix probe written to %s", weights)
    logger.info("done in %.0f s", time.perf_counter() - started)
    if args.json:
        summary = {
            "model": args.model,
            "cuts": {"skip": args.skip, "dev": args.dev, "report": args.report},
            "training_items": trained,
            "splits": result,
            "means": {s: means(result[s]) for s in SPLITS if result[s]},
            "ship": ship,
        }
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
