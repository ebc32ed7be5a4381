"""Model switches and accuracy per turn of multi-turn conversations, with and without stickiness.

Each conversation is ``--turns`` consecutive ARC-Easy test questions asked as follow-ups in one
chat (the history, with the answers returned so far, is resent each turn, as an OpenAI-style
client does). Three passes over the same conversations:

1. local only: the threshold is the ``--rate`` quantile of the local confidences of all turns
   (so about ``--rate`` of the turns escalate without stickiness);
2. per-turn routing: :class:`~confroute.policies.FixedThreshold` at that threshold;
3. sticky routing: the same threshold inside :class:`~confroute.policies.ConversationPolicy`
   (``--sticky-turns``, ``--release``).

The conversations of a pass are routed together, one turn index at a time (one batched local
generation per turn); no conversation_id is passed, so each conversation is keyed by its
opening (the derived key of :mod:`confroute.conversation`). A *switch* is a turn answered by a
different model than the turn before. The data is read from ``--data-dir``, never copied.

The strong model defaults to the bundled 0.5B in process, standing in for a strong model on
this 2-core machine (``--strong confroute/qwen2.5-coder-1.5b-instruct`` for the bundled 1.5B).

Usage:
    python benchmarks/sticky_routing.py --data-dir /work/shared/data/benchmarks \
        [--conversations 12] [--turns 5] [--rate 0.3] [--sticky-turns 3] [--release 0.95]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np

from confroute import ConfRouter
from confroute.policies import ConversationPolicy, FixedThreshold, RoutingPolicy

SYSTEM = "Answer each question with the format it asks for, and nothing else."
_CHOICE = re.compile(r"answer\s*([1-9])", re.IGNORECASE)


def load_conversations(
    data_dir: Path, count: int, turns: int, seed: int
) -> list[list[dict[str, Any]]]:
    """``count`` conversations of ``turns`` ARC-Easy test items each (a fixed random sample)."""
    rows = json.loads((data_dir / "ARC-Easy" / "test.json").read_text(encoding="utf-8"))
    sample = random.Random(seed).sample(rows, count * turns)
    return [sample[i * turns : (i + 1) * turns] for i in range(count)]


def choice(text: str) -> str | None:
    """The first ``answerN`` of an answer, as ``N``."""
    found = _CHOICE.search(text)
    return found.group(1) if found else None


def run(
    router: ConfRouter, conversations: list[list[dict[str, Any]]], max_new_tokens: int
) -> list[list[dict[str, Any]]]:
    """Route every conversation turn by turn; one record per turn."""
    histories: list[list[dict[str, Any]]] = [
        [{"role": "system", "content": SYSTEM}] for _ in conversations
    ]
    records: list[list[dict[str, Any]]] = [[] for _ in conversations]
    for turn in range(len(conversations[0])):
        for history, items in zip(histories, conversations, strict=True):
            history.append({"role": "user", "content": items[turn]["instruction"]})
        responses = router.route_batch([list(h) for h in histories], max_new_tokens=max_new_tokens)
        for c, response in enumerate(responses):
            decision = response.decision
            gold = choice(conversations[c][turn]["answer"])
            records[c].append(
                {
                    "correct": choice(response.text) == gold,
                    "answered_by": decision.answered_by,
                    "escalated": decision.escalated,
                    "reason": decision.reason,
                    "confidence": decision.confidence,
                    "remote_s": decision.remote_latency_s or 0.0,
                }
            )
            histories[c].append({"role": "assistant", "content": response.text})
    return records


def summary(records: list[list[dict[str, Any]]], seconds: float) -> dict[str, Any]:
    """Switches per conversation, accuracy per turn, escalation rate, reasons."""
    turns = len(records[0])
    switches = [
        sum(a["answered_by"] != b["answered_by"] for a, b in itertools.pairwise(r)) for r in records
    ]
    flat = [t for r in records for t in r]
    reasons: dict[str, int] = {}
    for t in flat:
        reasons[t["reason"]] = reasons.get(t["reason"], 0) + 1
    return {
        "switches_per_conversation": round(float(np.mean(switches)), 3),
        "conversations_with_a_switch": sum(s > 0 for s in switches),
        "accuracy": round(float(np.mean([t["correct"] for t in flat])), 4),
        "accuracy_per_turn": [
            round(float(np.mean([r[i]["correct"] for r in records])), 3) for i in range(turns)
        ],
        "escalation_rate": round(float(np.mean([t["escalated"] for t in flat])), 4),
        "reasons": reasons,
        "strong_seconds": round(sum(t["remote_s"] for t in flat), 1),
        "wall_seconds": round(seconds, 1),
    }


def timed(
    router: ConfRouter, conversations: list[list[dict[str, Any]]], max_new_tokens: int
) -> tuple[list[list[dict[str, Any]]], float]:
    """``run`` and its wall time."""
    started = time.perf_counter()
    records = run(router, conversations, max_new_tokens)
    return records, time.perf_counter() - started


def main() -> None:
    """Run the three passes and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--local", default="smollm2-135m-instruct")
    parser.add_argument("--strong", default="confroute/qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--conversations", type=int, default=12)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--rate", type=float, default=0.3)
    parser.add_argument("--sticky-turns", type=int, default=3)
    parser.add_argument("--release", type=float, default=0.95)
    parser.add_argument("--max-new-tokens", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    conversations = load_conversations(args.data_dir, args.conversations, args.turns, args.seed)
    local_only = ConfRouter(args.local, None, estimator="perplexity", threshold=0.0)
    local_records, local_s = timed(local_only, conversations, args.max_new_tokens)
    confidences = [t["confidence"] for r in local_records for t in r if t["confidence"] is not None]
    threshold = float(np.quantile(confidences, args.rate))

    def routed(policy: RoutingPolicy) -> ConfRouter:
        return ConfRouter(local_only.local, args.strong, estimator="perplexity", policy=policy)

    per_turn = routed(FixedThreshold(threshold))
    per_turn_records, per_turn_s = timed(per_turn, conversations, args.max_new_tokens)
    sticky_policy = ConversationPolicy(
        FixedThreshold(threshold), args.sticky_turns, release_confidence=args.release
    )
    sticky = ConfRouter(
        local_only.local, per_turn.escalation, estimator="perplexity", policy=sticky_policy
    )
    sticky_records, sticky_s = timed(sticky, conversations, args.max_new_tokens)
    print(
        json.dumps(
            {
                "benchmark": "sticky_routing",
                "data": "ARC-Easy test",
                "local": args.local,
                "strong": args.strong,
                "conversations": args.conversations,
                "turns": args.turns,
                "threshold": round(threshold, 4),
                "sticky_turns": args.sticky_turns,
                "release_confidence": args.release,
                "local_only": summary(local_records, local_s),
                "per_turn": summary(per_turn_records, per_turn_s),
                "sticky": summary(sticky_records, sticky_s),
            }
        )
    )


if __name__ == "__main__":
    main()
