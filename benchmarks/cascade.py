"""Three-tier cascade against two-tier routes: cost (tokens by tier) against accuracy.

Tiers: the bundled 0.5B -> the bundled 1.5B -> an ORACLE last tier. The oracle is "always
right": it stands for a hosted model and makes every accuracy here an UPPER BOUND on what a
real hosted last tier would give (a real one is sometimes wrong). Its cost is counted as
calls (and the prompt tokens they would send).

Each model answers every item once (``ConfRouter(model, None)``: generation and its
perplexity confidence, recorded with the tokens, grade and confidence into ``--cache``); the
routes are then simulated offline from those records:

* ``0.5B->1.5B``, ``0.5B->oracle``, ``1.5B->oracle``: one threshold on the first model;
* ``0.5B->1.5B->oracle``: a threshold on the 0.5B and one on the 1.5B (the 1.5B's answer is
  kept when it is confident, else the oracle answers).

Thresholds are confidence quantiles chosen on a DEV split (half of each dataset's items, by a
hash of the item id) at target escalation rates; every figure is reported on the other half
(TEST). For each route the table lists the test accuracy and cost at each dev-chosen rate.

The data is read from ``--data-dir`` (default env ``CONFROUTE_DATA_DIR``), never copied.

Usage:
    python benchmarks/cascade.py --data-dir /work/shared/data/benchmarks \
        [--datasets arc_challenge,commonsenseqa,boolq,mmlu] [--items 60] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import numpy as np

from confroute import ConfRouter
from confroute.bench.datasets import BenchItem, load_dataset
from confroute.bench.formats import FORMATS, extract_answer, grade, messages_for

SMALL, LARGE = "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"
FORMAT = "answer_only"
RATES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def records_for(model: str, items: list[BenchItem], cache_dir: Path) -> dict[str, dict[str, Any]]:
    """Each item's answer record by ``model`` (read from its file in ``cache_dir``; missing
    ones computed and appended)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache = cache_dir / f"{model}.jsonl"
    done = cached(model, cache_dir)
    todo = [i for i in items if f"{i.dataset}/{i.item_id}" not in done]
    if todo:
        router = ConfRouter(model, None, threshold=0.5, local_backend="llama.cpp")
        started = time.perf_counter()
        with cache.open("a") as out:
            for item in todo:  # one at a time: every answer is recorded as it is made
                cap = FORMATS[FORMAT].cap(item.answer_format)
                response = router.route(messages_for(item, FORMAT), max_new_tokens=cap)
                decision = response.decision
                row: dict[str, Any] = {
                    "key": f"{item.dataset}/{item.item_id}",
                    "model": model,
                    "confidence": decision.confidence,
                    "correct": grade(extract_answer(response.text, item), item),
                    "prompt_tokens": decision.local_prompt_tokens,
                    "completion_tokens": decision.local_completion_tokens,
                }
                out.write(json.dumps(row) + "\n")
                out.flush()
                done[row["key"]] = row
        print(
            f"{model}: {len(todo)} items in {time.perf_counter() - started:.0f}s", file=sys.stderr
        )
    return done


def cached(model: str, cache_dir: Path) -> dict[str, dict[str, Any]]:
    """The records ``model`` already has in ``cache_dir``."""
    path = cache_dir / f"{model}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return {row["key"]: row for row in rows}


def is_dev(key: str) -> bool:
    """Half the items, by a hash of the key: the dev split."""
    return hashlib.sha256(key.encode()).digest()[0] % 2 == 0


def threshold_at(confidences: np.ndarray, rate: float) -> float:
    """The threshold that escalates ``rate`` of ``confidences`` (escalate when below)."""
    if rate <= 0:
        return -1.0
    if rate >= 1:
        return 2.0
    return float(np.quantile(confidences, rate))


def simulate(
    rows: list[tuple[dict[str, Any], dict[str, Any]]], t_small: float | None, t_large: float | None
) -> dict[str, float]:
    """Accuracy and cost per item of a route over (0.5B record, 1.5B record) pairs.

    ``t_small`` None: the route starts at the 1.5B. ``t_large`` None: the 1.5B answers
    whatever (two-tier 0.5B->1.5B). ``t_large`` 2.0 with ``t_small``: 0.5B->oracle.
    """
    right = small_tok = large_tok = oracle = 0.0
    for small, large in rows:
        if t_small is not None:
            small_tok += small["prompt_tokens"] + small["completion_tokens"]
            if (small["confidence"] or 0.0) >= t_small:
                right += small["correct"]
                continue
        if t_large == 2.0 and t_small is not None:  # 0.5B -> oracle: the 1.5B is skipped
            oracle += 1
            right += 1
            continue
        large_tok += large["prompt_tokens"] + large["completion_tokens"]
        if t_large is None or (large["confidence"] or 0.0) >= t_large:
            right += large["correct"]
        else:
            oracle += 1
            right += 1  # the ORACLE: always right (an upper bound)
    n = max(len(rows), 1)
    return {
        "accuracy": right / n,
        "tokens_0.5b": small_tok / n,
        "tokens_1.5b": large_tok / n,
        "oracle_calls": oracle / n,
    }


def routes(
    dev: list[tuple[dict[str, Any], dict[str, Any]]],
    test: list[tuple[dict[str, Any], dict[str, Any]]],
) -> list[dict[str, Any]]:
    """Every route at every dev-chosen rate, evaluated on test."""
    small_dev = np.array([s["confidence"] or 0.0 for s, _ in dev])
    large_dev = np.array([g["confidence"] or 0.0 for _, g in dev])
    table: list[dict[str, Any]] = []
    for rate in RATES:
        t_small, t_large = threshold_at(small_dev, rate), threshold_at(large_dev, rate)
        table.append({"route": "0.5B->1.5B", "rates": [rate], **simulate(test, t_small, None)})
        table.append({"route": "0.5B->oracle", "rates": [rate], **simulate(test, t_small, 2.0)})
        table.append({"route": "1.5B->oracle", "rates": [rate], **simulate(test, None, t_large)})
    for rate_small in RATES[1:-1]:
        escalated = [
            g for s, g in dev if (s["confidence"] or 0.0) < threshold_at(small_dev, rate_small)
        ]
        reached = np.array([g["confidence"] or 0.0 for g in escalated]) if escalated else large_dev
        for rate_large in RATES[1:-1]:  # rate_large: share of what reaches the 1.5B
            t_small = threshold_at(small_dev, rate_small)
            t_large = threshold_at(reached, rate_large)
            table.append(
                {
                    "route": "0.5B->1.5B->oracle",
                    "rates": [rate_small, rate_large],
                    **simulate(test, t_small, t_large),
                }
            )
    return table


def pareto(table: list[dict[str, Any]], route: str) -> list[dict[str, Any]]:
    """A route's rows not beaten on both accuracy and oracle calls (then 1.5B tokens)."""
    rows = sorted(
        (r for r in table if r["route"] == route),
        key=lambda r: (r["oracle_calls"], r["tokens_1.5b"]),
    )
    kept: list[dict[str, Any]] = []
    for row in rows:
        if not kept or row["accuracy"] > kept[-1]["accuracy"] + 1e-9:
            kept.append(row)
    return kept


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("CONFROUTE_DATA_DIR"))
    parser.add_argument("--datasets", default="arc_challenge,commonsenseqa,boolq,mmlu")
    parser.add_argument("--items", type=int, default=60, help="items per dataset")
    parser.add_argument("--cache", default="cascade_records", help="answer records directory")
    parser.add_argument(
        "--only", choices=(SMALL, LARGE), help="only answer with this model (run two at once)"
    )
    parser.add_argument("--json", action="store_true", help="print the full table as JSON")
    parser.add_argument(
        "--cached-only",
        action="store_true",
        help="simulate on the items both models already answered (compute nothing)",
    )
    args = parser.parse_args(argv)
    items = [
        item
        for name in args.datasets.split(",")
        for item in load_dataset(name, args.data_dir, limit=args.items)
    ]
    cache = Path(args.cache)
    if args.only:
        records_for(args.only, items, cache)
        return 0
    if args.cached_only:
        small, large = (cached(m, cache) for m in (SMALL, LARGE))
        items = [i for i in items if f"{i.dataset}/{i.item_id}" in small.keys() & large.keys()]
    else:
        small = records_for(SMALL, items, cache)
        large = records_for(LARGE, items, cache)
    pairs = [(small[k], large[k]) for k in (f"{i.dataset}/{i.item_id}" for i in items)]
    dev = [p for p in pairs if is_dev(p[0]["key"])]
    test = [p for p in pairs if not is_dev(p[0]["key"])]
    table = routes(dev, test)
    if args.json:
        print(json.dumps(table, indent=1))
        return 0
    print(f"{len(items)} items ({args.datasets}), {FORMAT}; dev {len(dev)} / test {len(test)}")
    print("thresholds chosen on dev at the escalation rates shown; figures on test")
    print("ORACLE = always-right last tier: accuracies are an UPPER BOUND")
    header = f"{'route':20} {'rates':>10} {'acc':>6} {'tok0.5B':>8} {'tok1.5B':>8} {'oracle':>7}"
    for route in ("0.5B->1.5B", "0.5B->oracle", "1.5B->oracle", "0.5B->1.5B->oracle"):
        print(header)
        for row in (
            pareto(table, route)
            if "->oracle" in route
            else [r for r in table if r["route"] == route]
        ):
            rates = "/".join(f"{r:.1f}" for r in row["rates"])
            print(
                f"{route:20} {rates:>10} {row['accuracy']:6.3f} {row['tokens_0.5b']:8.1f} "
                f"{row['tokens_1.5b']:8.1f} {row['oracle_calls']:7.3f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
