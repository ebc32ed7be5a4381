"""Which confidence says when a local model's tool call is wrong? BFCL, graded by its AST rules.

The SLM (llama.cpp, greedy) answers BFCL items (``simple_python``, ``multiple``,
``irrelevance``) with the tools rendered by its own chat template; each answer is parsed with
:func:`confroute.tools.parse_tool_calls` and graded by :func:`confroute.bench.bfcl.grade_calls`.
Every estimator is then scored by AUROC (confidence as a detector of right answers):
``perplexity``, ``min_token_prob``, ``avg_token_prob``, ``tool_call`` (both combination rules)
and each part of ``tool_call`` alone (a part stands for the call's confidence; answers that
are not calls keep perplexity, as in the estimator).

Splits: the 840 items are ordered by a hash of their id (seeded, stable); the development split
is the first ``--dev`` items, the report split the next ``--report``. The combination rule of
``tool_call`` is chosen on the development split (higher AUROC) and only the report split's
figures are the result. Answers are cached in ``--cache`` (JSON Lines, one per item id and
model), so a stopped run resumes. The JSON also gives, per estimator, the accuracy of the
answers kept when the least confident 10-50% are set aside (``kept_accuracy``).

``--route SMALL LARGE`` (two model names, both answered with the same splits and ``--cache``;
missing answers are generated) gives the route SMALL -> LARGE on the report split per
estimator: APGR, CPT(50%), the routed accuracy at escalation rates 0.1-0.5 and LARGE's kept
accuracy.

Usage:
    python benchmarks/tool_confidence.py --data-dir DIR --dev 60 --report 200 --json
    python benchmarks/tool_confidence.py --data-dir DIR --dev 120 --report 720 \
        --route qwen2.5-coder-0.5b-instruct qwen2.5-coder-1.5b-instruct
    python benchmarks/tool_confidence.py --data-dir DIR --quick     # 2 + 2 items, a smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from confroute.bench.bfcl import BfclItem, grade_calls, load_bfcl
from confroute.bench.metrics import (
    ROUTE_RATES,
    auroc,
    bootstrap_ci,
    effective_confidence,
    kept_accuracy_curve,
    route_summary,
)
from confroute.estimators import EstimationContext, get
from confroute.estimators.tool_call import ToolCallConfidence
from confroute.generation import Generation, GenerationConfig, TokenAlternative
from confroute.tools import parse_tool_calls

BASELINES = ("perplexity", "min_token_prob", "avg_token_prob")
PARTS = ("decision", "name", "arguments_min")


def split(items: list[BfclItem], dev: int, report: int, seed: int) -> tuple[list[BfclItem], ...]:
    """The development and report splits: a seeded hash order of the item ids."""
    ordered = sorted(items, key=lambda i: hashlib.sha256(f"{seed}:{i.item_id}".encode()).digest())
    return ordered[:dev], ordered[dev : dev + report]


def _encode(generation: Generation) -> dict[str, Any]:
    return {
        "text": generation.text,
        "token_ids": list(generation.token_ids),
        "tokens": list(generation.tokens),
        "logprobs": list(generation.logprobs),
        "top": [
            [[a.token, a.token_id, a.logprob] for a in step] for step in generation.top_logprobs
        ],
        "finish_reason": generation.finish_reason,
        "prompt_tokens": generation.prompt_tokens,
    }


def _decode(row: dict[str, Any]) -> Generation:
    return Generation(
        text=row["text"],
        token_ids=tuple(row["token_ids"]),
        tokens=tuple(row["tokens"]),
        logprobs=tuple(row["logprobs"]),
        top_logprobs=tuple(tuple(TokenAlternative(*a) for a in step) for step in row["top"]),
        entropies=(),
        finish_reason=row["finish_reason"],
        prompt_tokens=row["prompt_tokens"],
    )


def answer(
    items: list[BfclItem], args: argparse.Namespace, model_name: str
) -> dict[str, Generation]:
    """Greedy answers of ``model_name``, read from the cache where there, generated otherwise."""
    cache = Path(args.cache)
    done: dict[str, Generation] = {}
    if cache.exists():
        for line in cache.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row.get("model") == model_name and row.get("max_new_tokens") == args.max_new_tokens:
                done[row["id"]] = _decode(row)
    todo = [i for i in items if i.item_id not in done]
    if todo:
        from confroute import LlamaCppModel

        model = LlamaCppModel(model_name, n_threads=args.threads)
        config = GenerationConfig(max_new_tokens=args.max_new_tokens)
        cache.parent.mkdir(parents=True, exist_ok=True)
        with cache.open("a", encoding="utf-8") as handle:
            for item in todo:
                [generation] = model.generate([list(item.messages)], config, tools=item.tools)
                done[item.item_id] = generation
                row = {"id": item.item_id, "model": model_name, **_encode(generation)}
                row["max_new_tokens"] = args.max_new_tokens
                handle.write(json.dumps(row) + "\n")
                handle.flush()
    return done


def score(items: list[BfclItem], answers: dict[str, Generation]) -> list[dict[str, Any]]:
    """Per item: right or wrong, why, and every confidence."""
    baselines = {name: get(name) for name in BASELINES}
    rows = []
    for item in items:
        generation = answers[item.item_id]
        parsed = parse_tool_calls(generation.text, item.tools)
        verdict = grade_calls(item, parsed.calls)
        row: dict[str, Any] = {
            "id": item.item_id,
            "category": item.category,
            "correct": verdict.correct,
            "reason": verdict.reason,
            "called": bool(parsed.calls),
            "malformed": bool(parsed.malformed),
        }
        for name, estimator in baselines.items():
            row[name] = estimator.confidence(generation, EstimationContext(list(item.messages)))
        for combine in ("min", "product"):
            context = EstimationContext(list(item.messages), tools=item.tools)
            row[f"tool_call[{combine}]"] = ToolCallConfidence(combine).confidence(
                generation, context
            )
        parts = context.extras["tool_call_parts"]
        for part in PARTS:
            value = parts.get(part) if parts["called"] else None
            row[f"part:{part}"] = value if value is not None else row["perplexity"]
        # the decision read both ways: call mass for a call, 1 - call mass for no call
        both = parts.get("decision")
        row["part:decision(both ways)"] = both if both is not None else row["perplexity"]
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]], names: list[str]) -> dict[str, dict[str, float]]:
    """AUROC (with a 95% bootstrap interval) of each named confidence on ``rows``."""
    correct = [r["correct"] for r in rows]
    out = {}
    for name in names:
        confidence = effective_confidence([r[name] for r in rows])
        low, high = bootstrap_ci(auroc, confidence, correct, n_boot=500)
        out[name] = {"auroc": auroc(confidence, correct), "low": low, "high": high}
    return out


NAMES = [
    *BASELINES,
    "tool_call[min]",
    "tool_call[product]",
    *(f"part:{p}" for p in PARTS),
    "part:decision(both ways)",
]


def route(report: list[BfclItem], args: argparse.Namespace) -> dict[str, Any]:
    """The route SMALL -> LARGE on the report split, per estimator."""
    small_name, large_name = args.route
    small = score(report, answer(report, args, small_name))
    large = score(report, answer(report, args, large_name))
    summary = route_summary(
        {name: [r[name] for r in small] for name in NAMES},
        [r["correct"] for r in small],
        [r["correct"] for r in large],
        {name: [r[name] for r in large] for name in NAMES},
    )
    return {"small": small_name, "large": large_name, "report": len(report), **summary}


def main() -> None:
    """Parse the arguments, run, print the table (and one JSON line with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True, help="the folder that holds BFCL/")
    parser.add_argument("--dev", type=int, default=60)
    parser.add_argument("--report", type=int, default=200)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default="runs/tool_confidence/answers.jsonl")
    parser.add_argument("--quick", action="store_true", help="2 dev + 2 report items")
    parser.add_argument(
        "--route", nargs=2, metavar=("SMALL", "LARGE"), help="two model names: the route's table"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.dev, args.report = 2, 2
    started = time.perf_counter()
    dev, report = split(load_bfcl(args.data_dir), args.dev, args.report, args.seed)
    if args.route:
        print(json.dumps(_no_nan(route(report, args))))
        return
    answers = answer(dev + report, args, args.model)
    dev_rows, report_rows = score(dev, answers), score(report, answers)
    combos = ["tool_call[min]", "tool_call[product]"]
    dev_table = table(dev_rows, combos)
    chosen = max(combos, key=lambda c: _or_minus(dev_table[c]["auroc"]))
    names = NAMES
    calls = [r for r in report_rows if r["called"]]
    result: dict[str, Any] = {
        "model": args.model,
        "dev": len(dev_rows),
        "report": len(report_rows),
        "chosen_on_dev": chosen,
        "dev_auroc": {k: v["auroc"] for k, v in dev_table.items()},
        "accuracy": _mean([r["correct"] for r in report_rows]),
        "accuracy_by_category": {
            c: _mean([r["correct"] for r in report_rows if r["category"] == c])
            for c in sorted({r["category"] for r in report_rows})
        },
        "called": len(calls),
        "auroc": table(report_rows, names),
        "auroc_calls_only": table(calls, names),
        "kept_accuracy": {
            name: kept_accuracy_curve(
                [r[name] for r in report_rows], [r["correct"] for r in report_rows], ROUTE_RATES
            )
            for name in names
        },
        "wall_s": round(time.perf_counter() - started, 1),
    }
    _print_table(result, names)
    if args.json:
        print(json.dumps(_no_nan(result)))


def _no_nan(value: Any) -> Any:
    """``value`` with NaN as None, so that the JSON line is strict JSON."""
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    return None if isinstance(value, float) and value != value else value


def _or_minus(value: float) -> float:
    return value if value == value else -1.0  # NaN (one class only) loses


def _mean(values: list[bool]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _cell(value: dict[str, float]) -> str:
    return f"{value['auroc']:.3f} [{value['low']:.2f}, {value['high']:.2f}]"


def _print_table(result: dict[str, Any], names: list[str]) -> None:
    print(
        f"{result['model']}: dev {result['dev']}, report {result['report']} items, "
        f"accuracy {result['accuracy']:.3f} {result['accuracy_by_category']}, "
        f"{result['called']} calls; combination chosen on dev: {result['chosen_on_dev']}"
    )
    print("| estimator | AUROC, all answers [95% CI] | AUROC, calls only [95% CI] |")
    print("|---|---|---|")
    for name in names:
        every, calls = result["auroc"][name], result["auroc_calls_only"][name]
        print(f"| {name} | {_cell(every)} | {_cell(calls)} |")
    print(f"wall time {result['wall_s']} s")


if __name__ == "__main__":
    main()
