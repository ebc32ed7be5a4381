"""Route two questions with the bundled models, offline, and print the decisions.

Run: python examples/quickstart.py
"""

from __future__ import annotations

from confroute import ConfRouter, RoutingDecision


def log(decision: RoutingDecision) -> None:
    route = "escalated" if decision.escalated else "local"
    print(f"  [{route}] confidence={decision.confidence} reason={decision.reason}")


def main() -> None:
    router = ConfRouter(threshold=0.8, max_new_tokens=64, hooks=[log])
    for question in ("What is 17*23?", "Name the capital of France in one word."):
        response = router.route(question)
        print(f"{question}\n  -> {response.text!r} (answered by {response.decision.answered_by})")


if __name__ == "__main__":
    main()
