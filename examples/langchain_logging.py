"""Log every routing decision to a JSON Lines file with EscalationLogger, then summarise it.

Each call sends one ``confroute_decision`` event to the callback handlers; EscalationLogger
appends it (models, confidence, threshold, reason, tokens, cost; never a prompt or a key) to a
file. The questions run as one batch: one batched generation on the local model. Run::

    python examples/langchain_logging.py [decisions.jsonl]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from langchain_core.language_models import BaseChatModel, LanguageModelInput

from langchain_confroute import ChatConfRoute, EscalationLogger, summarize_escalation_log
from langchain_confroute.events import EscalationLogSummary

QUESTIONS = [
    "What is 17*23? Answer with the number only.",
    "What is the capital of France? One word.",
    "Write a four-line poem about a lighthouse keeper's cat.",
]


def log_decisions(
    path: Path, llm: BaseChatModel | None = None, questions: list[str] = QUESTIONS
) -> EscalationLogSummary:
    """Answer the questions with decisions logged to ``path``; return the log's summary."""
    model = llm or ChatConfRoute(max_tokens=32)
    handler = EscalationLogger(path)
    inputs: list[LanguageModelInput] = list(questions)  # batch takes a list (invariant)
    answers = model.batch(inputs, config={"callbacks": [handler]})
    for question, answer in zip(questions, answers, strict=True):
        decision = answer.response_metadata["confroute"]
        route = "escalated" if decision["escalated"] else "local"
        print(f"[{route:9}] {question} -> {str(answer.content)[:60]!r}")
    return summarize_escalation_log(path)


def main(argv: list[str]) -> None:
    path = Path(argv[0]) if argv else Path(tempfile.mkdtemp()) / "decisions.jsonl"
    summary = log_decisions(path)
    cost = f"${summary.cost_usd:.6f}" + (
        f" (+{summary.unknown_cost} unpriced)" if summary.unknown_cost else ""
    )
    print(
        f"{summary.calls} calls, {summary.escalated} escalated "
        f"({summary.escalation_rate:.0%}), cost {cost}; reasons {summary.reasons}; log: {path}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
