"""Rebuild the MLP probe (and the logistic combination) of a local model from benchmark data.

Generates answers to a fixed sample of each dataset with the local model, capturing the hidden
state of the 8th-to-last layer at the last answer token during generation, grades them, and
trains the paper's 4-layer MLP probe (20 epochs; lr 1e-4 for ``ood``, 5e-4 for ``trained``).
With ``--combination`` it also fits the logistic combination of the single-pass signals on the
same generations. Files are written as ``OUT/MODEL/{kind}_probe.safetensors`` + ``.json`` and
``OUT/MODEL/logistic_combination.json``. Only numbers are stored: no dataset text.

With ``--run-dir RUN`` nothing is generated: the hidden states, grades and single-pass
confidences cached by ``confroute bench run`` (which captures the same layer in the same
decoding loop) are read instead, for every dataset of the run (or ``--datasets``).

``--validation 0.1`` holds a tenth of the items out for early stopping (the network of the
epoch with the lowest held-out loss is kept; ``--patience`` epochs without a better one stop
training).

Usage:
    python benchmarks/train_probes.py --data-dir /work/shared/data/benchmarks \
        --model qwen2.5-coder-0.5b-instruct --kind ood --limit 40 --combination
    python benchmarks/train_probes.py --run-dir runs/full \
        --model qwen2.5-coder-1.5b-instruct --kind ood --combination
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np

from confroute import LocalModel, estimators
from confroute.bench.datasets import BenchItem, load_dataset
from confroute.bench.formats import FORMATS, extract_answer, grade, messages_for
from confroute.estimators import PROBE_LAYER, EstimationContext, LogisticCombination
from confroute.estimators.combined import DEFAULT_SIGNALS
from confroute.estimators.probe_network import train_probe
from confroute.local import GenerationConfig
from confroute.models import DEFAULT_SLM

DEFAULT_DATASETS = ("mmlu", "commonsenseqa", "openbookqa", "boolq")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "shared" / "confroute" / "probe_files"
logger = logging.getLogger("train_probes")


def generate_labelled(
    model: LocalModel, items: list[BenchItem], prompt_format: str, batch_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hidden states, 0/1 correctness and single-pass signals of the model's answers."""
    fmt = FORMATS[prompt_format]
    states, labels, signals = [], [], []
    singles = [estimators.get(name) for name in DEFAULT_SIGNALS]
    by_cap: dict[int, list[BenchItem]] = defaultdict(list)
    for item in items:
        by_cap[fmt.cap(item.answer_format)].append(item)
    for cap, group in by_cap.items():
        config = GenerationConfig(max_new_tokens=cap, hidden_layer=PROBE_LAYER)
        for start in range(0, len(group), batch_size):
            batch = group[start : start + batch_size]
            conversations = [messages_for(item, prompt_format) for item in batch]
            generations = model.generate(conversations, config)
            for item, conversation, generation in zip(
                batch, conversations, generations, strict=True
            ):
                if generation.hidden_state is None:
                    continue
                context = EstimationContext(messages=conversation)
                states.append(generation.hidden_state)
                labels.append(int(grade(extract_answer(generation.text, item), item)))
                values = [e.confidence(generation, context) for e in singles]
                signals.append([0.0 if v is None else v for v in values])
    return np.stack(states), np.asarray(labels), np.asarray(signals)


def from_run(
    run_dir: Path, model: str, prompt_format: str, datasets: list[str] | None
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], int]:
    """Per dataset: hidden states, correctness and single-pass signals cached in a bench run."""
    from confroute.bench.cache import decode_hidden, slm_record_files

    out: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    limit = 0
    for name, record_file in slm_record_files(run_dir, model, prompt_format).items():
        if datasets and name not in datasets:
            continue
        records = [r for r in record_file.load().values() if r.get("hidden")]
        if not records:
            continue
        # every record has a hidden state (filtered above), so nothing is dropped here
        x = np.stack([h for r in records if (h := decode_hidden(r["hidden"])) is not None])
        y = np.asarray([int(bool(r["correct"])) for r in records])
        s = np.asarray(
            [[float(r["confidences"].get(k) or 0.0) for k in DEFAULT_SIGNALS] for r in records]
        )
        out[name] = (x, y, s)
        limit = max(limit, len(records))
    return out, limit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("CONFROUTE_DATA_DIR"))
    parser.add_argument("--model", default=DEFAULT_SLM)
    parser.add_argument("--kind", choices=("ood", "trained"), default="ood")
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=None,
        help="default: "
        + " ".join(DEFAULT_DATASETS)
        + " (with --run-dir: every dataset of the run)",
    )
    parser.add_argument("--run-dir", type=Path, default=None, help="read a bench run's cache")
    parser.add_argument("--limit", type=int, default=40, help="items per dataset")
    parser.add_argument("--format", default="answer_only", choices=sorted(FORMATS))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--combination", action="store_true", help="also fit the combination")
    parser.add_argument("--epochs", type=int, default=20, help="most passes (the paper: 20)")
    parser.add_argument(
        "--validation",
        type=float,
        default=0.0,
        help="share held out for early stopping (0: none, train every epoch)",
    )
    parser.add_argument("--patience", type=int, default=3, help="epochs without a better loss")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.kind == "trained" and (args.datasets is None or len(args.datasets) != 1):
        parser.error("--kind trained is in-domain: give exactly one dataset.")
    started = time.perf_counter()
    per_dataset: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    if args.run_dir is not None:
        from confroute.models import BUNDLED_MODELS

        per_dataset, args.limit = from_run(args.run_dir, args.model, args.format, args.datasets)
        if not per_dataset:
            parser.error(f"{args.run_dir} holds no hidden states for {args.model}.")
        name, fingerprint = args.model, BUNDLED_MODELS[args.model].sha256
    else:
        model = LocalModel(args.model)
        name, fingerprint = model.name, model.fingerprint
        for dataset in args.datasets or DEFAULT_DATASETS:
            items = load_dataset(dataset, args.data_dir, limit=args.limit, seed=args.seed)
            per_dataset[dataset] = generate_labelled(model, items, args.format, args.batch_size)
    xs, ys, ss, summary = [], [], [], {}
    for dataset, (x, y, s) in per_dataset.items():
        xs.append(x)
        ys.append(y)
        ss.append(s)
        summary[dataset] = {"items": len(y), "accuracy": round(float(y.mean()), 4)}
        logger.info("%s: %d items, accuracy %.3f", dataset, len(y), y.mean())
    x, y, s = np.concatenate(xs), np.concatenate(ys), np.concatenate(ss)
    training = {
        "datasets": summary,
        "prompt_format": args.format,
        "limit_per_dataset": args.limit,
        "sample_seed": args.seed,
        "sampler": "confroute.bench.datasets.sample_items",
        "source": "bench run cache" if args.run_dir is not None else "generated",
    }
    probe = train_probe(
        x,
        y,
        model=name,
        fingerprint=fingerprint,
        kind=args.kind,
        seed=args.seed,
        training=training,
        epochs=args.epochs,
        validation=args.validation,
        patience=args.patience,
    )
    weights, _ = probe.save(args.out_dir / name / f"{args.kind}_probe")
    logger.info("probe written to %s", weights)
    if args.combination:
        combination = LogisticCombination.fit(
            s, y, DEFAULT_SIGNALS, model=name, fingerprint=fingerprint, training=training
        )
        path = combination.save(args.out_dir / name / "logistic_combination.json")
        logger.info("combination written to %s", path)
    logger.info("done in %.0f s", time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
