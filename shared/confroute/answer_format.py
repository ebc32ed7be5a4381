"""Answer formats: what a request asks for, so that each format gets its own threshold.

The pilot found that a raw confidence threshold does not transfer between datasets because
each answer format has its own confidence scale: a letter out of five options, a yes/no, a
number and free text spread their token probabilities differently. The router therefore
recognises the format of each request with :func:`detect_format` (options ``A. ... B. ...``
give ``letter:k``; "yes or no" gives ``yes_no``; "the final number" gives ``number``). A
request that matches none is ``any``, and a per-format profile falls back to its pooled
distribution for it (see ``docs/calibration.md``).

The confidence variants the benchmark measures against each other (the final-answer span,
chance correction, the renormalised option probability) live in
:mod:`confroute.bench.answer_formats`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ANY", "AnswerFormat", "detect_format"]


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
