"""Answer formats: what a request asks for, and confidence that is comparable across formats.

The pilot found that a raw confidence threshold does not transfer between datasets because
each answer format has its own confidence scale: a letter out of five options, a yes/no, a
number and free text spread their token probabilities differently. This module holds the three
tools the calibration measures against each other (see ``docs/calibration.md``):

- :func:`detect_format`: recognise the requested format from the conversation (options
  ``A. ... B. ...`` give ``letter:k``; "yes or no" gives ``yes_no``; "the final number" gives
  ``number``). A request that matches none is ``any``, and a per-format profile falls back to its
  pooled distribution for it.
- :func:`answer_span`: the statistics of the final-answer tokens only (the text after the last
  ``Answer:``, the option letter, the yes/no word or the last number), so that reasoning before
  the answer does not dilute the answer's confidence.
- :func:`chance_corrected`: ``c' = (c - 1/k) / (1 - 1/k)`` for an answer among ``k`` options,
  so that a guess among two options and a guess among five both score 0.
- :func:`chance_lift`: ``c' = 1 - (1/k) / c``, the share of the answer's probability that lies
  above chance; unlike the linear correction it compares *ratios* to chance, which is what
  lines up the bundled models' confidence distributions across 2-, 4- and 5-option questions
  (BENCHMARKS.md, calibration transfer).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confroute.generation import Generation

__all__ = [
    "ANY",
    "AnswerFormat",
    "answer_span",
    "chance_corrected",
    "chance_lift",
    "detect_format",
    "final_answer_text",
    "option_probability",
]


@dataclass(frozen=True)
class AnswerFormat:
    """The answer a request asks for.

    Attributes:
        kind: ``letter``, ``yes_no``, ``number`` or ``any`` (not recognised).
        options: Number of options for ``letter`` (2 for ``yes_no``, 0 otherwise).
    """

    kind: str
    options: int = 0

    @property
    def key(self) -> str:
        """The profile key: ``letter``, ``yes_no``, ``number`` or ``any``."""
        return self.kind

    @property
    def chance(self) -> float | None:
        """Probability of a right answer by guessing uniformly (None without options)."""
        return 1.0 / self.options if self.options >= 2 else None


ANY = AnswerFormat("any")
"""The format of a request that asks for nothing recognisable."""

_OPTION_LINE = re.compile(r"^\s*\(?([A-J])[.):]\s+\S", re.MULTILINE)
_YES_NO = re.compile(r"\b(yes or no|yes/no|true or false|true/false)\b", re.IGNORECASE)
_NUMBER = re.compile(
    r"\b(final number|just the number|numeric(al)? answer|final numerical)\b", re.IGNORECASE
)


def _text_of(message: Mapping[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, str):
        return content
    parts = [p.get("text", "") for p in content if isinstance(p, Mapping)]
    return "\n".join(str(p) for p in parts)


def detect_format(messages: Sequence[Mapping[str, Any]] | str) -> AnswerFormat:
    """The answer format the last user message asks for.

    Rules, in order: at least two option lines lettered from ``A`` in sequence (``A. ...``,
    ``(B) ...``, ``C) ...``) give ``letter`` with that many options; "yes or no" / "true or
    false" gives ``yes_no``; "final number" / "just the number" gives ``number``; anything else
    is :data:`ANY`.
    """
    if isinstance(messages, str):
        text = messages
    else:
        users = [m for m in messages if m.get("role") == "user"]
        text = _text_of(users[-1]) if users else ""
    letters = [m.group(1) for m in _OPTION_LINE.finditer(text)]
    count = 0
    for letter in letters:
        if letter == chr(ord("A") + count):
            count += 1
        elif letter == "A":
            count = 1  # a new option list starts; keep the last one
    if count >= 2:
        return AnswerFormat("letter", count)
    if _YES_NO.search(text):
        return AnswerFormat("yes_no", 2)
    if _NUMBER.search(text):
        return AnswerFormat("number")
    return ANY


_ANSWER_TAIL = re.compile(r"answer\s*(?:is|:)\s*", re.IGNORECASE)
_LAST_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_LETTER = re.compile(r"\b([A-J])\b")
_YES_NO_WORD = re.compile(r"\b(yes|no|true|false)\b", re.IGNORECASE)


def final_answer_text(text: str, answer_format: AnswerFormat = ANY) -> tuple[int, int]:
    """Character range ``(start, end)`` of the final answer in ``text``.

    The part after the last ``Answer:`` (or ``answer is``) when present, else the whole text;
    within it, for a known format, the last option letter / yes-no word / number. Falls back to
    the whole stripped text when nothing matches.
    """
    start, end = 0, len(text)
    tails = list(_ANSWER_TAIL.finditer(text))
    if tails:
        start = tails[-1].end()
    pattern = {"letter": _LETTER, "yes_no": _YES_NO_WORD, "number": _LAST_NUMBER}.get(
        answer_format.kind
    )
    region = text[start:end]
    if pattern is not None:
        hits = list(pattern.finditer(region))
        if hits:
            chosen = hits[0] if tails else hits[-1]
            return start + chosen.start(), start + chosen.end()
    stripped = region.strip()
    if not stripped:
        return 0, len(text)
    offset = region.find(stripped)
    return start + offset, start + offset + len(stripped)


def answer_span(generation: Generation, answer_format: AnswerFormat = ANY) -> Generation:
    """The generation restricted to the tokens that spell the final answer.

    Tokens are kept when they overlap the character range of :func:`final_answer_text`. When
    the tokens do not spell the text exactly (an unusual detokenisation) or nothing overlaps,
    the generation is returned unchanged.
    """
    if not generation.tokens or "".join(generation.tokens) != generation.text:
        return generation
    begin, end = final_answer_text(generation.text, answer_format)
    keep = []
    position = 0
    for index, token in enumerate(generation.tokens):
        token_end = position + len(token)
        if token_end > begin and position < end and token.strip():
            keep.append(index)
        position = token_end
    if not keep or len(keep) == len(generation.tokens):
        return generation
    first, last = keep[0], keep[-1] + 1
    return dataclasses.replace(
        generation,
        text="".join(generation.tokens[first:last]),
        token_ids=generation.token_ids[first:last],
        tokens=generation.tokens[first:last],
        logprobs=generation.logprobs[first:last],
        top_logprobs=generation.top_logprobs[first:last],
        entropies=generation.entropies[first:last],
    )


def chance_corrected(confidence: float | None, options: int) -> float | None:
    """``(c - 1/k) / (1 - 1/k)`` clipped to [0, 1]; unchanged when ``options < 2``.

    A confidence at or below the chance level of ``k`` options maps to 0, certainty stays 1.
    """
    if confidence is None or options < 2:
        return confidence
    chance = 1.0 / options
    return min(1.0, max(0.0, (confidence - chance) / (1.0 - chance)))


def chance_lift(confidence: float | None, options: int) -> float | None:
    """``1 - (1/k) / c`` clipped to [0, 1]; unchanged when ``options < 2``.

    0 at or below chance (``c <= 1/k``); ``1 - 1/k`` at certainty. Two answers that are twice
    as likely as a guess score the same whatever ``k`` is.
    """
    if confidence is None or options < 2:
        return confidence
    if confidence <= 0.0:
        return 0.0
    return min(1.0, max(0.0, 1.0 - (1.0 / options) / confidence))


_STRIP = " \t\n()*.:'\"`"
_YES_NO_VALUE = {"yes": "yes", "true": "yes", "no": "no", "false": "no"}


def _option_key(text: str, answer_format: AnswerFormat) -> str | None:
    word = text.strip(_STRIP)
    if answer_format.kind == "letter":
        letter = word.upper()
        if len(letter) == 1 and 0 <= ord(letter) - ord("A") < answer_format.options:
            return letter
        return None
    return _YES_NO_VALUE.get(word.lower())


def option_probability(
    generation: Generation, answer_format: AnswerFormat, answer: str | None = None
) -> float | None:
    """Probability of the chosen option, renormalised over every option's token variants.

    At the first answer token that spells an option (``B``, `` B``, ``b``; ``Yes``, ``yes``,
    ``true``), the top-k probability mass of the chosen option's variants is divided by the mass
    of all options' variants. The pilot found this repairs the mass a yes/no answer splits over
    ``No`` / ``no`` / `` No``. ``answer`` names the chosen option when already extracted.
    None for formats without options, or when no token spells an option.
    """
    if answer_format.kind not in ("letter", "yes_no"):
        return None
    wanted = None
    if answer is not None:
        wanted = _option_key(answer, answer_format)
    for token, alternatives in zip(generation.tokens, generation.top_logprobs, strict=False):
        key = _option_key(token, answer_format)
        if key is None or (wanted is not None and key != wanted):
            continue
        mass: dict[str, float] = {}
        for alternative in alternatives:
            option = _option_key(alternative.token, answer_format)
            if option is not None:
                mass[option] = mass.get(option, 0.0) + math.exp(alternative.logprob)
        total = sum(mass.values())
        return mass.get(key, 0.0) / total if total > 0 else None
    return None
