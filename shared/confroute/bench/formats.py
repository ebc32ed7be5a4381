"""Prompt formats, answer extraction and graders.

Three formats, reported side by side (the pilot showed that the format decides what the
benchmark measures):

- ``answer_only``: the option letter / yes or no / the number, with a firm instruction
  ("Reply with just the letter, no explanation.") and a small token cap.
- ``brief_reasoning``: think briefly, then finish with a line ``Answer: X``.
- ``cot``: zero-shot chain of thought ("Let's think step by step."), ending ``Answer: X``;
  meant for math word problems.

An answer that cannot be parsed is graded wrong; the runner gives it the lowest confidence.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from confroute.bench.datasets import BenchItem
from confroute.bench.squad import squad_correct
from confroute.errors import ConfigurationError

__all__ = [
    "FORMATS",
    "PromptFormat",
    "extract_answer",
    "extract_letter",
    "extract_number",
    "extract_text",
    "extract_yes_no",
    "grade",
    "messages_for",
    "numbers_match",
]


@dataclass(frozen=True)
class PromptFormat:
    """How a question is asked and how long the answer may be.

    Attributes:
        name: Registry key.
        max_new_tokens: Default token cap per answer format (letter, yes_no, number, text).
        reasoning: Whether the model writes reasoning before ``Answer: X``.
    """

    name: str
    max_new_tokens: dict[str, int]
    reasoning: bool

    def cap(self, answer_format: str) -> int:
        """The token cap for an answer format."""
        return self.max_new_tokens[answer_format]


FORMATS: dict[str, PromptFormat] = {
    "answer_only": PromptFormat(
        "answer_only", {"letter": 16, "yes_no": 16, "number": 24, "text": 16}, reasoning=False
    ),
    "brief_reasoning": PromptFormat(
        "brief_reasoning", {"letter": 96, "yes_no": 96, "number": 160, "text": 96}, reasoning=True
    ),
    "cot": PromptFormat(
        "cot", {"letter": 256, "yes_no": 256, "number": 256, "text": 256}, reasoning=True
    ),
}
"""Format name -> :class:`PromptFormat`."""

_ANSWER_ONLY_INSTRUCTION = {
    "letter": "Answer with the letter of the correct option. Reply with just the letter, "
    "no explanation.",
    "yes_no": "Answer with yes or no. Reply with just one word, yes or no, no explanation.",
    "number": "Reply with just the final number, no explanation and no units.",
    "text": "Reply with just the answer, no explanation.",
}
_ANSWER_ONLY_SOFT = {
    "letter": "Answer with the letter of the correct option.",
    "yes_no": "Answer with yes or no.",
    "number": "Give the final number.",
    "text": "Give the answer.",
}
"""Answer-only instructions without "no explanation", for methods that add their own request
(verbalized confidence would otherwise conflict with "reply with just the letter")."""
_WHAT = {
    "letter": "the letter of the correct option",
    "yes_no": "yes or no",
    "number": "the final number",
    "text": "the answer",
}


def _body(item: BenchItem) -> str:
    parts = []
    if item.passage:
        parts.append(f"Passage: {item.passage.strip()}\n")
    parts.append(f"Question: {item.question}" if item.passage else item.question)
    if item.answer_format == "letter":
        parts.append("")
        parts.extend(
            f"{letter}. {text}" for letter, text in zip(item.letters, item.options, strict=True)
        )
    return "\n".join(parts)


def messages_for(item: BenchItem, prompt_format: str, *, firm: bool = True) -> list[dict[str, Any]]:
    """The conversation that asks ``item`` in ``prompt_format`` (one user message).

    Args:
        item: The question.
        prompt_format: A key of :data:`FORMATS`.
        firm: In ``answer_only``, end with "Reply with just ..., no explanation." (False drops
            that sentence, for a method that appends its own request).

    Raises:
        ConfigurationError: Unknown format.
    """
    if prompt_format not in FORMATS:
        raise ConfigurationError(
            f"Unknown prompt format {prompt_format!r}; choose from {', '.join(FORMATS)}."
        )
    kind = item.answer_format
    if prompt_format == "answer_only":
        instruction = (_ANSWER_ONLY_INSTRUCTION if firm else _ANSWER_ONLY_SOFT)[kind]
    elif prompt_format == "brief_reasoning":
        instruction = (
            "Think briefly (at most three short sentences), then finish with a last line "
            f"'Answer: X' where X is {_WHAT[kind]}."
        )
    else:
        instruction = (
            f"Let's think step by step. At the end, write a last line 'Answer: X' where X is "
            f"{_WHAT[kind]}."
        )
    return [{"role": "user", "content": f"{_body(item)}\n\n{instruction}"}]


# -- extraction ------------------------------------------------------------------------------

_ANSWER_LINE = re.compile(r"answer\s*(?:is|:)\s*[*_\s]*(.+)", re.IGNORECASE)
_HEDGE = re.compile(r"^\W*(yes|no)\s+(and|or)\s+(yes|no)\b", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def _answer_tail(text: str) -> str | None:
    """What follows the last ``Answer:`` / ``answer is`` in ``text``, or None."""
    matches = list(_ANSWER_LINE.finditer(text))
    return matches[-1].group(1).strip() if matches else None


def extract_letter(text: str, item: BenchItem) -> str | None:
    """The chosen option letter, or None.

    Reads, in order: a last ``Answer: X`` line; a whole answer that is one letter (``B``,
    ``(B)``, ``B.``, ``B) text``); an answer that starts with the full text of exactly one
    option; an answer containing exactly one option's full text.
    """
    letters = item.letters
    pattern = re.compile(rf"^\W*\(?([{letters}{letters.lower()}])\b\)?(?:[.:)\s]|$)")
    tail = _answer_tail(text)
    for candidate in ([tail] if tail else []) + [text.strip()]:
        match = pattern.match(candidate)
        if match and (candidate is tail or match.group(1).isupper()):
            return match.group(1).upper()
    lowered = text.strip().lower().rstrip(".")
    hits = [
        letter
        for letter, option in zip(letters, item.options, strict=False)
        if option and option.lower().rstrip(".") in lowered
    ]
    exact = [
        letter
        for letter, option in zip(letters, item.options, strict=False)
        if option.lower().rstrip(".") == lowered
    ]
    if len(exact) == 1:
        return exact[0]
    return hits[0] if len(hits) == 1 else None


def extract_yes_no(text: str) -> str | None:
    """``"yes"`` or ``"no"`` (true/false accepted), or None."""
    tail = _answer_tail(text)
    for candidate in ([tail] if tail else []) + [text]:
        if _HEDGE.match(candidate.strip()):
            return None
        match = re.match(r"^\W*(yes|no|true|false)\b", candidate.strip(), re.IGNORECASE)
        if match:
            return "yes" if match.group(1).lower() in ("yes", "true") else "no"
    words = re.findall(r"\b(yes|no)\b", text.lower())
    return words[-1] if words and len(set(words)) == 1 else None


def extract_number(text: str) -> str | None:
    """The final number: after the last ``Answer:``, else after ``####``, else the last one."""
    tail = _answer_tail(text)
    hash_tail = text.rsplit("####", 1)[1] if "####" in text else None
    for candidate in (tail, hash_tail, text):
        if not candidate:
            continue
        cleaned = candidate.replace("$", "").replace("\\", " ")
        numbers = _NUMBER.findall(cleaned)
        if numbers:
            chosen = str(numbers[0] if candidate is not text else numbers[-1])
            return chosen.replace(",", "").rstrip(".")
    return None


def extract_text(text: str) -> str | None:
    """Free text: after ``Answer:``, else the first non-empty line; lower-cased, unquoted."""
    tail = _answer_tail(text)
    candidate = tail if tail else next((ln for ln in text.splitlines() if ln.strip()), "")
    cleaned = candidate.strip().strip("\"'`*.").strip().lower()
    return cleaned or None


def extract_answer(text: str, item: BenchItem) -> str | None:
    """The answer ``text`` gives to ``item`` in the item's answer format, or None."""
    if item.answer_format == "letter":
        return extract_letter(text, item)
    if item.answer_format == "yes_no":
        return extract_yes_no(text)
    if item.answer_format == "number":
        return extract_number(text)
    return extract_text(text)


def numbers_match(predicted: str, gold: str, rel_tol: float = 1e-4, abs_tol: float = 1e-6) -> bool:
    """Whether two numbers agree within the tolerance (``"18.00"`` matches ``"18"``)."""
    try:
        a, b = float(predicted), float(gold)
    except ValueError:
        return False
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)


def grade(predicted: str | None, item: BenchItem) -> bool:
    """Whether an extracted answer is correct; None (unparsed) is wrong."""
    if predicted is None:
        return False
    if item.answer_format == "number":
        return numbers_match(predicted, item.answer)
    if item.dataset == "squad":
        return squad_correct(predicted, item)
    if item.answer_format == "text":
        golds = {item.answer.lower(), *(a.lower() for a in item.aliases)}
        return predicted.strip().lower() in golds
    return predicted == item.answer
