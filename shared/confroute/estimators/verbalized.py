"""Verbalized confidence: the model says how sure it is, and we parse the number.

:func:`parse_confidence` accepts the forms small models actually write: ``85``, ``85%``,
``0.85``, ``Confidence: 85/100``, ``8/10``, ``85 percent``, with words around them. An answer
with no readable confidence gives None, which the policy treats as the lowest confidence.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any, ClassVar

from confroute.estimators.base import EstimationContext, Estimator, Requirement
from confroute.estimators.prompts import VERBALIZED_1S_INSTRUCTION
from confroute.generation import Generation

__all__ = ["Verbalized1S", "parse_confidence", "strip_confidence"]

logger = logging.getLogger(__name__)

_NUMBER = r"(?<![\d.])(\d{1,3}(?:\.\d+)?|\.\d+)"
_SCALE = r"\s*(%|percent\b|/\s*100\b|/\s*10\b|out\s+of\s+100\b|out\s+of\s+10\b)?"
_VALUE = re.compile(_NUMBER + _SCALE, re.IGNORECASE)
_KEYWORD = re.compile(r"confiden(?:ce|t)", re.IGNORECASE)
_KEYWORD_WINDOW = 40
_CONFIDENCE_TAIL = re.compile(
    r"[\s(*_\[-]*\bconfidence\b(?:\s*(?:level|score))?\s*(?:is|of)?\s*[:=-]?\s*[*_]*\s*"
    r"(?:about|around|approximately|~)?\s*" + _NUMBER + _SCALE + r"[\s*_)\].]*$",
    re.IGNORECASE | re.MULTILINE,
)


def _value(match: re.Match[str]) -> float | None:
    number = float(match.group(1))
    scale = (match.group(2) or "").lower().replace(" ", "")
    if scale in ("%", "percent", "/100", "outof100"):
        result = number / 100.0
    elif scale in ("/10", "outof10"):
        result = number / 10.0
    elif "." in match.group(1) and number <= 1.0:
        result = number  # already a probability: "0.85"
    else:
        result = number / 100.0  # the asked-for 0-100 scale: "85", "1" (= 1%)
    return result if 0.0 <= result <= 1.0 else None


def parse_confidence(text: str, *, require_keyword: bool = False) -> float | None:
    """Read a verbalized confidence from model output, as a number in [0, 1].

    The number after the last "confidence"/"confident" wins; without that word, the first
    number in the text is read (unless ``require_keyword``). ``85``, ``85%``, ``85/100`` and
    ``85 percent`` mean 0.85; ``0.85`` (a decimal not above 1) is already a probability;
    ``8/10`` means 0.8. Values outside [0, 1] after scaling are rejected.

    Args:
        text: What the model wrote.
        require_keyword: Only accept a number that follows the word "confidence".

    Returns:
        The confidence, or None when no valid number was found.

    Example:
        >>> parse_confidence("Confidence: 85/100")
        0.85
        >>> parse_confidence("I'd say 0.7.")
        0.7
        >>> parse_confidence("no idea") is None
        True
    """
    keywords = list(_KEYWORD.finditer(text))
    for keyword in reversed(keywords):
        window = text[keyword.end() : keyword.end() + _KEYWORD_WINDOW]
        match = _VALUE.search(window)
        if match is not None:
            return _value(match)
    if require_keyword:
        return None
    match = _VALUE.search(text)
    return _value(match) if match is not None else None


def strip_confidence(text: str) -> str:
    """The answer without its trailing ``Confidence: N`` statement (the rest is kept)."""
    return _CONFIDENCE_TAIL.sub("", text).rstrip()


class Verbalized1S(Estimator):
    """One prompt asks for the answer and a 0-100 confidence; the stated number is parsed.

    The router appends :data:`~confroute.estimators.prompts.VERBALIZED_1S_INSTRUCTION` to the
    last user message before the local model answers, and strips the ``Confidence: N`` line
    from the answer it returns. The escalated request gets the user's original messages. When
    the model states no confidence, the result is None (lowest confidence).
    """

    name: ClassVar[str] = "verbalized_1s"
    requires: ClassVar[frozenset[str]] = frozenset({Requirement.PROMPT})

    def confidence(self, generation: Generation, context: EstimationContext) -> float | None:
        """The stated confidence, or None when none can be read."""
        del context
        last_line = generation.text.strip().rsplit("\n", 1)[-1]
        value = parse_confidence(generation.text, require_keyword=True)
        if value is None and re.fullmatch(r"\W*" + _NUMBER + _SCALE + r"\W*", last_line):
            value = parse_confidence(last_line)
        if value is None:
            logger.debug("No verbalized confidence in %r", generation.text[-80:])
        return value

    def transform_messages(self, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append the confidence instruction to the last user message."""
        result = [dict(m) for m in messages]
        for message in reversed(result):
            if message.get("role") == "user":
                message["content"] = f"{message.get('content') or ''}{VERBALIZED_1S_INSTRUCTION}"
                break
        return result

    def clean_answer(self, text: str) -> str:
        """The answer without the stated confidence."""
        return strip_confidence(text)

    def params(self) -> dict[str, Any]:
        """The instruction is part of the method."""
        return {"instruction": VERBALIZED_1S_INSTRUCTION}
