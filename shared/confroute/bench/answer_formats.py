"""Confidence that is comparable across answer formats: the benchmark's confidence variants.

The calibration study (``docs/calibration.md``, BENCHMARKS.md) measures these against the raw
confidence; the router does not apply them (it only needs
:func:`confroute.answer_format.detect_format`):

- :func:`answer_span`: the statistics of the final-answer tokens only (the text after the last
  ``Answer:``, the option letter, the yes/no word or the last number), so that reasoning before
  the answer does not dilute the answer's confidence.
- :func:`chance_corrected`: ``c' = (c - 1/k) / (1 - 1/k)`` for an answer among ``k`` options,
  so that a guess among two options and a guess among five both score 0.
- :func:`chance_lift`: ``c' = 1 - (1/k) / c``, the share of the answer's probability that lies
  above chance; unlike the linear correction it compares *ratios* to chance, which is what
  lines up the bundled models' confidence distributions across 2-, 4- and 5-option questions
  (BENCHMARKS.md, calibration transfer).
- :func:`option_probability`: the chosen option's probability renormalised over every
  option's token variants.
"""

from __future__ import annotations

import dataclasses
import math
import re

from confroute.answer_format import ANY, AnswerFormat
from confroute.generation import Generation

__all__ = [
    "answer_span",
    "chance_corrected",
    "chance_lift",
    "final_answer_text",
    "option_probability",
]

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
