"""What the verbalized-confidence prompts made each SLM write, counted from a benchmark run.

Reads the records cached by ``confroute bench run`` (nothing is generated) and prints, per SLM:
for ``verbalized_1s`` (answer and confidence in one reply) how many answers could not be parsed,
the accuracy on that prompt, and what the stated confidence was ("100", "0", another number, or
missing); for ``verbalized_2s`` (the follow-up question) the most frequent replies. These are
the counts behind BENCHMARKS.md's "verbalized confidence is weak" finding.

Usage:
    python benchmarks/verbalized_counts.py runs/full
    python benchmarks/verbalized_counts.py runs/full --format answer_only --json
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from confroute.bench.cache import RecordFile
from confroute.estimators.verbalized import parse_confidence


def stated_confidence(text: str) -> str:
    """The confidence a one-step reply states: "100", "0", "other", or "missing"."""
    value = parse_confidence(text, require_keyword=True)
    if value is None:
        return "missing"
    return "100" if value == 1.0 else "0" if value == 0.0 else "other"


def count(run_dir: Path, prompt_format: str = "answer_only") -> dict[str, dict[str, Any]]:
    """Counts per SLM over every dataset of ``run_dir`` asked in ``prompt_format``."""
    out: dict[str, dict[str, Any]] = {}
    for model_dir in sorted(p for p in (run_dir / "slm").iterdir() if p.is_dir()):
        items = unparsed = correct = 0
        stated: Counter[str] = Counter()
        replies: Counter[str] = Counter()
        for path in sorted(model_dir.glob(f"*/{prompt_format}.jsonl")):
            for record in RecordFile(path).load().values():
                variant = (record.get("variants") or {}).get("verbalized_1s")
                if variant is not None:
                    items += 1
                    unparsed += variant.get("answer") is None
                    correct += bool(variant.get("correct"))
                    stated[stated_confidence(variant.get("text", ""))] += 1
                reply = (record.get("extras") or {}).get("verbalized_2s_reply")
                if reply is not None:
                    replies[str(reply).strip()] += 1
        out[model_dir.name] = {
            "verbalized_1s": {
                "items": items,
                "unparsed": unparsed,
                "accuracy": round(correct / items, 3) if items else None,
                "stated": dict(stated),
            },
            "verbalized_2s": {"items": sum(replies.values()), "replies": replies.most_common(5)},
        }
    return out


def main(argv: list[str] | None = None) -> None:
    """Print the counts as a table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run directory of `confroute bench run`")
    parser.add_argument("--format", default="answer_only", help="prompt format (answer_only)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    counts = count(args.run_dir, args.format)
    if args.json:
        print(json.dumps(counts))
        return
    for model, found in counts.items():
        one, two = found["verbalized_1s"], found["verbalized_2s"]
        print(
            f"{model}: verbalized_1s items={one['items']} unparsed={one['unparsed']} "
            f"accuracy={one['accuracy']} stated={one['stated']}"
        )
        print(f"{model}: verbalized_2s items={two['items']} top replies={two['replies']}")


if __name__ == "__main__":
    main()
