"""The router's default ``tool_threshold``: chosen on BFCL's dev split, checked on the report.

Reads the answers ``benchmarks/tool_confidence.py`` cached (same splits: the item ids in the
seeded hash order, the first ``--dev`` for development, the next ``--report`` to report), scores
every answer that is a well-formed call with ``tool_call`` (``combine="product"``, the dev
split's choice), and picks the threshold that escalates the least confident
``DEFAULT_ESCALATION_RATE`` (30%) of the development split's calls, the tool-call analogue of
the rate the router holds by default for the primary estimator. The report split then shows
what that fixed threshold does on unseen items: the share of calls escalated and the accuracy
of the calls kept against all calls.

Usage:
    python benchmarks/tool_threshold.py --data-dir DIR --dev 40 --report 120 \
        --cache runs/tool_confidence/answers-0.5b.jsonl
"""

from __future__ import annotations

import argparse
import json
import math

from tool_confidence import answer, score, split

from confroute.bench.bfcl import load_bfcl
from confroute.settings import DEFAULT_ESCALATION_RATE

COLUMN = "tool_call[product]"


def rate_threshold(confidences: list[float], rate: float) -> float:
    """The midpoint between the ``ceil(rate * n)``-th least confidence and the next one."""
    ordered = sorted(confidences)
    k = math.ceil(rate * len(ordered))
    if k <= 0:
        return 0.0
    if k >= len(ordered):
        return 1.0
    return (ordered[k - 1] + ordered[k]) / 2


def main() -> None:
    """Choose on dev, print the report split's figures and one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--dev", type=int, default=40)
    parser.add_argument("--report", type=int, default=120)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default="runs/tool_confidence/answers.jsonl")
    parser.add_argument("--threshold", type=float, default=None, help="check this one instead")
    args = parser.parse_args()
    dev, report = split(load_bfcl(args.data_dir), args.dev, args.report, args.seed)
    answers = answer(dev + report, args, args.model)
    dev_calls = [r for r in score(dev, answers) if r["called"] and not r["malformed"]]
    report_calls = [r for r in score(report, answers) if r["called"] and not r["malformed"]]
    threshold = rate_threshold([r[COLUMN] for r in dev_calls], DEFAULT_ESCALATION_RATE)
    if args.threshold is not None:  # e.g. the rounded default, RouterSettings.tool_threshold
        threshold = args.threshold
    kept = [r for r in report_calls if r[COLUMN] >= threshold]
    result = {
        "dev_calls": len(dev_calls),
        "threshold": round(threshold, 4),
        "report_calls": len(report_calls),
        "report_escalated_share": 1 - len(kept) / len(report_calls),
        "report_call_accuracy": sum(r["correct"] for r in report_calls) / len(report_calls),
        "report_kept_accuracy": sum(r["correct"] for r in kept) / len(kept) if kept else None,
        "report_escalated_wrong": sum(
            not r["correct"] for r in report_calls if r[COLUMN] < threshold
        ),
        "report_wrong": sum(not r["correct"] for r in report_calls),
    }
    print(
        f"{COLUMN}: threshold {threshold:.4f} ({len(dev_calls)} dev calls; chosen to escalate "
        f"{DEFAULT_ESCALATION_RATE:.0%} of them unless --threshold); report: "
        f"{result['report_escalated_share']:.1%} of {len(report_calls)} calls escalated, "
        f"{result['report_escalated_wrong']} of {result['report_wrong']} wrong ones; "
        f"accuracy of calls {result['report_call_accuracy']:.3f}, kept "
        f"{result['report_kept_accuracy']:.3f}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
