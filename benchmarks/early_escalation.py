"""How much local-model time early escalation saves, and how many routing decisions it changes.

Each item is answered twice by the local model, one request at a time (as on a device): once in
full, once with early escalation (:class:`confroute.serving.EarlyEscalation`) watching the
running perplexity-confidence. The routing threshold is the confidence quantile of the full
answers at ``--rate`` (so that ``--rate`` of the items escalate without early escalation),
unless ``--threshold`` is given. A decision *changes* when an answer that the full run keeps
local is stopped early (early escalation never keeps what the full run escalates: an answer it
does not stop is written in full, greedy, exactly as before).

The data is read from ``--data-dir`` (``GSM8K/test.jsonl`` under it), never copied.

Usage:
    python benchmarks/early_escalation.py --data-dir /work/shared/data/benchmarks \
        [--items 40] [--max-new-tokens 64] [--every 8] [--margin 0.1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from confroute import ConfRouter, LocalModel
from confroute.models import DEFAULT_SLM
from confroute.serving import EarlyEscalation, EarlyEscalationRouter, stopped_early_at

INSTRUCTION = "Solve the problem step by step, then end with 'The answer is N.'"
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def load_items(data_dir: Path, count: int, seed: int) -> list[dict[str, str]]:
    """A fixed random sample of GSM8K test items: question and gold number."""
    path = data_dir / "GSM8K" / "test.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    sample = random.Random(seed).sample(rows, count)
    return [
        {"question": r["question"], "gold": r["answer"].split("####")[-1].strip().replace(",", "")}
        for r in sample
    ]


def is_correct(text: str, gold: str) -> bool:
    """Whether the last number of the answer equals the gold number."""
    numbers = _NUMBER.findall(text)
    if not numbers:
        return False
    try:
        return float(numbers[-1].replace(",", "")) == float(gold)
    except ValueError:
        return False


def run(
    router: ConfRouter, items: list[dict[str, str]], max_new_tokens: int, batch: int
) -> list[dict[str, Any]]:
    """Answer the items ``batch`` at a time; record time, tokens, confidence, where it stopped.

    An item's ``seconds`` is its share of its batch's wall time.
    """
    rows: list[dict[str, Any]] = []
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        started = time.perf_counter()
        responses = router.route_batch(
            [f"{item['question']}\n{INSTRUCTION}" for item in chunk],
            max_new_tokens=max_new_tokens,
        )
        share = (time.perf_counter() - started) / len(chunk)
        rows.extend(
            {
                "seconds": share,
                "tokens": response.decision.local_completion_tokens,
                "confidence": response.decision.confidence,
                "stopped_at": stopped_early_at(response.local),
                "correct": is_correct(response.text, item["gold"]),
                "logprobs": list(response.local.logprobs) if response.local else [],
            }
            for item, response in zip(chunk, responses, strict=True)
        )
        print(".", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return rows


def quantile(values: list[float], q: float) -> float:
    """The q-quantile by linear interpolation."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Both runs and the comparison."""
    items = load_items(Path(args.data_dir), args.items, args.seed)
    model = LocalModel(args.model)
    full_router = ConfRouter(model, None, threshold=0.0)
    full_router.route("What is 2+2?", max_new_tokens=4)  # warm-up
    full = run(full_router, items, args.max_new_tokens, args.batch)
    confidences = [r["confidence"] if r["confidence"] is not None else 0.0 for r in full]
    threshold = args.threshold if args.threshold is not None else quantile(confidences, args.rate)
    early = EarlyEscalation(
        threshold=threshold, every=args.every, margin=args.margin, min_tokens=args.min_tokens
    )
    early_router = EarlyEscalationRouter(model, None, threshold=threshold, early_escalation=early)
    stopped_run = run(early_router, items, args.max_new_tokens, args.batch)

    escalate_full = [c < threshold for c in confidences]
    escalate_early = [
        e["stopped_at"] is not None or (e["confidence"] or 0.0) < threshold for e in stopped_run
    ]
    changed = [
        i for i, (a, b) in enumerate(zip(escalate_full, escalate_early, strict=False)) if a != b
    ]
    replayed = [early.replay(r["logprobs"]) for r in full]
    full_s = sum(r["seconds"] for r in full)
    early_s = sum(r["seconds"] for r in stopped_run)
    kept_full = [r for r, e in zip(full, escalate_full, strict=False) if not e]
    kept_early = [r for r, e in zip(full, escalate_early, strict=False) if not e]
    return {
        "model": model.name,
        "dataset": "GSM8K test",
        "items": len(items),
        "seed": args.seed,
        "max_new_tokens": args.max_new_tokens,
        "batch": args.batch,
        "threshold": round(threshold, 4),
        "early": {"every": args.every, "margin": args.margin, "min_tokens": args.min_tokens},
        "slm_seconds_full": round(full_s, 2),
        "slm_seconds_early": round(early_s, 2),
        "slm_time_saved_fraction": round(1 - early_s / full_s, 3),
        "tokens_full": sum(r["tokens"] for r in full),
        "tokens_early": sum(r["tokens"] for r in stopped_run),
        "tokens_saved_fraction": round(
            1 - sum(r["tokens"] for r in stopped_run) / max(sum(r["tokens"] for r in full), 1), 3
        ),
        "stopped_early": sum(r["stopped_at"] is not None for r in stopped_run),
        "escalated_full": sum(escalate_full),
        "escalated_early": sum(escalate_early),
        "decisions_changed": len(changed),
        "changed_items_correct_in_full_run": sum(full[i]["correct"] for i in changed),
        "stop_points_match_replay": sum(
            r["stopped_at"] == p for r, p in zip(stopped_run, replayed, strict=False)
        ),
        "accuracy_of_kept_answers_full": round(
            sum(r["correct"] for r in kept_full) / max(len(kept_full), 1), 3
        ),
        "accuracy_of_kept_answers_early": round(
            sum(r["correct"] for r in kept_early) / max(len(kept_early), 1), 3
        ),
        "slm_accuracy_all": round(sum(r["correct"] for r in full) / len(full), 3),
    }


def main() -> int:
    """Parse the arguments, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("CONFROUTE_DATA_DIR"),
        required=os.environ.get("CONFROUTE_DATA_DIR") is None,
        help="folder holding GSM8K/test.jsonl (env CONFROUTE_DATA_DIR)",
    )
    parser.add_argument("--model", default=DEFAULT_SLM)
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--rate", type=float, default=0.3, help="escalation rate of the full run")
    parser.add_argument("--threshold", type=float, default=None, help="overrides --rate")
    parser.add_argument("--every", type=int, default=8)
    parser.add_argument("--margin", type=float, default=0.1)
    parser.add_argument("--min-tokens", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1, help="items per local batch")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    report = measure(args)
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:38s} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
