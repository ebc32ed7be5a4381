"""Confidence of free-text RAG answers on SQuAD: AUROC of every single-pass estimator and more.

The bundled SLM on llama.cpp answers SQuAD v1.1 dev questions with the RAG prompt
(:func:`confroute.bench.squad.rag_messages`, greedy, 24 tokens); each answer is graded by the
official EM / F1 (correct = F1 >= 0.5). The questions come in the benchmark's seeded order
(:func:`confroute.bench.datasets.sample_items`); the first ``--dev`` form the DEVELOPMENT
split, the next ``--report`` the REPORT split. The variants of ``grounded_answer`` are
compared on the development split only; the one that wins there is the ``grounded_answer
(dev choice)`` row of the report split.

    python benchmarks/rag_confidence.py --data-dir /work/shared/data/benchmarks --quick
    python benchmarks/rag_confidence.py --data-dir DIR --dev 100 --report 200 --json
    python benchmarks/rag_confidence.py --data-dir DIR ... --rows runs/squad-0.5b.jsonl
    python benchmarks/rag_confidence.py --route runs/squad-0.5b.jsonl runs/squad-1.5b.jsonl

``--rows`` writes each item's grades and confidences (JSON lines, with its split); ``--route
SMALL LARGE`` reads two such files (the same items, answered by two models) and prints, on the
report split, the route SMALL -> LARGE for each estimator: APGR, CPT(50%) and the routed
accuracy at escalation rates 0.1-0.5, and LARGE's own kept accuracy at the same rates (its
least confident answers set aside).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

import numpy as np

from confroute.bench.datasets import load_dataset
from confroute.bench.metrics import auroc, bootstrap_ci, effective_confidence, route_summary
from confroute.bench.squad import rag_messages, squad_scores
from confroute.estimators import EstimationContext, Estimator, GroundedAnswer, get
from confroute.generation import GenerationConfig
from confroute.llamacpp import LlamaCppModel
from confroute.models import DEFAULT_SLM

BASELINES = ("perplexity", "avg_token_prob", "min_token_prob", "mean_token_entropy", "p_true")
VARIANTS: dict[str, Estimator] = {
    "grounded[mean,starts]": GroundedAnswer("mean", copy_starts=True),
    "grounded[min,starts]": GroundedAnswer("min", copy_starts=True),
    "grounded[mean]": GroundedAnswer("mean", copy_starts=False),
    "grounded[min]": GroundedAnswer("min", copy_starts=False),
}


def answer_all(model: LlamaCppModel, items: list[Any], max_new_tokens: int) -> list[dict[str, Any]]:
    """Answer, grade and score every item; one row per item."""
    config = GenerationConfig(max_new_tokens=max_new_tokens, keep_cache=True)
    estimators = {name: get(name) for name in BASELINES} | VARIANTS
    rows = []
    for item in items:
        messages = rag_messages(item)
        ids = model.encode(model.render(messages))
        [generation] = model.generate_from_ids([ids], config)
        context = EstimationContext(messages, local_model=model, prompt_ids=ids, config=config)
        em, f1 = squad_scores(generation.text, (item.answer, *item.aliases))
        row: dict[str, Any] = {"id": item.item_id, "em": em, "f1": f1, "correct": f1 >= 0.5}
        row["tokens"] = generation.completion_tokens
        cost: dict[str, float] = {}
        for name, estimator in estimators.items():
            started = time.perf_counter()
            row[name] = estimator.confidence(generation, context)
            cost[name] = time.perf_counter() - started
        parts = VARIANTS["grounded[mean,starts]"].parts(generation, context)  # type: ignore[attr-defined]
        row["coverage"] = None if parts is None else parts["coverage"]
        row["cost"] = cost
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Accuracy, EM, F1 and each estimator's AUROC (95% bootstrap interval) and cost."""
    correct = np.array([r["correct"] for r in rows], dtype=bool)
    out: dict[str, Any] = {
        "n": len(rows),
        "accuracy": round(float(correct.mean()), 3),
        "em": round(float(np.mean([r["em"] for r in rows])), 3),
        "f1": round(float(np.mean([r["f1"] for r in rows])), 3),
        "mean_coverage": round(
            float(
                np.mean([r["coverage"] for r in rows if r["coverage"] is not None] or [math.nan])
            ),
            3,
        ),
        "auroc": {},
    }
    for name in names:
        conf = effective_confidence([r[name] for r in rows])
        low, high = bootstrap_ci(auroc, conf, correct, n_boot=500)
        cost_ms = 1000 * float(np.mean([r["cost"][name] for r in rows]))
        out["auroc"][name] = {
            "auroc": round(auroc(conf, correct), 3),
            "ci": [round(low, 3), round(high, 3)],
            "ms_per_answer": round(cost_ms, 2),
        }
    return out


def read_rows(path: str) -> dict[str, dict[str, Any]]:
    """The report-split rows of a ``--rows`` file, by item id."""
    with open(path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return {r["id"]: r for r in rows if r["split"] == "report"}


def route(small_path: str, large_path: str) -> dict[str, Any]:
    """The route SMALL -> LARGE on the items both files hold (report split), per estimator."""
    small, large = read_rows(small_path), read_rows(large_path)
    ids = sorted(set(small) & set(large))
    if not ids:
        raise SystemExit(
            "The two --route files share no report-split item; run both with "
            "the same --data-dir, --seed, --dev and --report."
        )
    names = list(BASELINES) + list(VARIANTS)
    return route_summary(
        {name: [small[i][name] for i in ids] for name in names},
        [small[i]["correct"] for i in ids],
        [large[i]["correct"] for i in ids],
        {name: [large[i][name] for i in ids] for name in names},
    )


def main() -> None:
    """Run the two splits and print the tables (the last line is one JSON object)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--rows", help="write each item's row here (JSON lines)")
    parser.add_argument("--route", nargs=2, metavar=("SMALL", "LARGE"), help="two --rows files")
    parser.add_argument("--dev", type=int, default=100)
    parser.add_argument("--report", type=int, default=200)
    parser.add_argument("--model", default=DEFAULT_SLM)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--quick", action="store_true", help="--dev 10 --report 20 (a smoke run)")
    parser.add_argument("--json", action="store_true", help="only the JSON summary line")
    args = parser.parse_args()
    if args.route:
        print(json.dumps(route(*args.route)))
        return
    if not args.data_dir:
        parser.error("--data-dir is required (or --route SMALL LARGE)")
    dev_n, report_n = (10, 20) if args.quick else (args.dev, args.report)
    started = time.perf_counter()
    items = load_dataset("squad", args.data_dir, limit=dev_n + report_n, seed=args.seed)
    model = LlamaCppModel(args.model)
    dev_rows = answer_all(model, items[:dev_n], args.max_new_tokens)
    report_rows = answer_all(model, items[dev_n:], args.max_new_tokens)
    if args.rows:
        with open(args.rows, "w", encoding="utf-8") as handle:
            for split, rows in (("dev", dev_rows), ("report", report_rows)):
                for row in rows:
                    handle.write(json.dumps({"split": split, **row}) + "\n")
    names = list(BASELINES) + list(VARIANTS)
    dev = table(dev_rows, names)
    choice = max(VARIANTS, key=lambda n: (dev["auroc"][n]["auroc"], -list(VARIANTS).index(n)))
    report = table(report_rows, names)
    report["auroc"]["grounded_answer (dev choice)"] = report["auroc"][choice]
    summary = {
        "model": args.model,
        "backend": "llama.cpp",
        "seed": args.seed,
        "dev_n": dev_n,
        "report_n": report_n,
        "dev_choice": choice,
        "dev": dev,
        "report": report,
        "wall_s": round(time.perf_counter() - started, 1),
        "command": " ".join(sys.argv),
    }
    if not args.json:
        for split in ("dev", "report"):
            print(f"{split}: " + json.dumps(summary[split]))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
