"""An optional LLM-as-judge grader for free-form answers, through LiteLLM (any provider)."""

from __future__ import annotations

import logging

from confroute.bench.datasets import BenchItem
from confroute.bench.formats import extract_yes_no
from confroute.errors import EscalationError
from confroute.escalation import Escalation

__all__ = ["JUDGE_PROMPT", "LLMJudge"]

logger = logging.getLogger(__name__)

JUDGE_PROMPT = (
    "Question: {question}\nReference answer: {reference}\nProposed answer: {answer}\n\n"
    "Does the proposed answer give the same final answer as the reference? "
    "Reply with just yes or no."
)
"""The judge's prompt; its reply is read with the yes/no extractor."""


class LLMJudge:
    """Grades a free-form answer against the reference by asking a (strong) model."""

    def __init__(self, model: str, *, max_tokens: int = 4) -> None:
        """Args: model: a LiteLLM model string; max_tokens: reply cap."""
        self.escalation = Escalation(model)
        self.max_tokens = max_tokens

    def grade(self, item: BenchItem, answer: str) -> bool | None:
        """True / False by the judge, or None when it failed or gave no yes/no."""
        prompt = JUDGE_PROMPT.format(question=item.question, reference=item.answer, answer=answer)
        try:
            result = self.escalation.complete(
                [{"role": "user", "content": prompt}], temperature=0.0, max_tokens=self.max_tokens
            )
        except EscalationError as error:
            logger.warning("judge failed on %s/%s: %s", item.dataset, item.item_id, error)
            return None
        verdict = extract_yes_no(result.text)
        return None if verdict is None else verdict == "yes"
