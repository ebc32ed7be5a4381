"""Confidence of a free-text answer grounded in a context (RAG): what was copied, how sure the rest.

An answer built from retrieved passages is mostly copied from them. Copying is cheap for the
model and says little; what carries the risk is (a) the words it did *not* copy, where it had to
make something up, and (b) the choice of *where* to copy from. :class:`GroundedAnswer` reads the
answer's own token log-probs and the context in the conversation (every non-assistant message:
system, user and tool turns, so a chain that stuffs the passages into the system prompt works
too) and computes:

- the **copied tokens**: the answer is matched greedily, left to right, against the context
  (case-insensitive longest match); a match counts when it is at least ``min_chars`` long or
  is made of whole words (in the answer and in the context); a token is copied when at
  least half of its non-space characters lie in a counted match. Tokens with no letter or
  digit (spaces, punctuation) are neutral and left out;
- ``coverage`` ``c``: the share of the answer's content tokens that are copied;
- ``U``: how sure the model was of the uncopied tokens, the geometric mean of their
  probabilities (``statistic="mean"``) or the least of them (``statistic="min"``); 1 when
  every token was copied;
- ``S``: how sure the model was at the first token of each copied span (where to copy
  from; pieces spliced from different places of the context are separate spans), aggregated
  the same way; only with ``copy_starts=True`` (else 1).

The confidence is ``S * (c + (1 - c) * U)``: a fully copied answer is worth ``S``; each
uncopied token pulls it towards the model's own probability for it. There are no fitted
weights. The defaults (``statistic="mean"``, ``copy_starts=True``, ``min_chars=4``) are set
a priori, not fitted: on extractive answers nearly every token is copied, so without ``S``
the confidence is 1 for most answers. ``benchmarks/rag_confidence.py`` compares the variants
on a development split of SQuAD and reports its choice on a separate split.

It needs only per-token log-probs (any backend; no hidden state, no follow-up) and returns
None when there is nothing to score: no tokens, no content token, or no context text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from confroute.errors import ConfigurationError
from confroute.estimators.base import EstimationContext, Estimator
from confroute.generation import Generation

__all__ = [
    "GroundedAnswer",
    "context_text",
    "copied_mask",
    "copy_spans",
    "copy_start_tokens",
    "covered_chars",
]

Statistic = Literal["mean", "min"]


def context_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text of every non-assistant message (string content or ``text`` parts), joined."""
    parts: list[str] = []
    for message in messages:
        if message.get("role") == "assistant":
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, Sequence):
            parts.extend(
                str(p.get("text", ""))
                for p in content
                if isinstance(p, Mapping) and p.get("type") == "text"
            )
    return "\n".join(parts)


def _word_edge(text: str, index: int) -> bool:
    """Whether ``index`` is a word boundary of ``text`` (start, end, or next to a non-word)."""
    if index <= 0 or index >= len(text):
        return True
    return not (text[index - 1].isalnum() and text[index].isalnum())


def copy_spans(answer: str, context: str, min_chars: int = 4) -> list[tuple[int, int]]:
    """The ``(start, end)`` character spans of ``answer`` that count as copied from ``context``.

    Greedy longest match from left to right, case-insensitive; each span is one match, so two
    pieces copied from different places are two spans even when they touch. A match counts
    when it is at least ``min_chars`` long, or is made of whole words both in the answer and
    in the context and holds a letter or digit (so a short whole word such as ``42`` counts,
    a stray ``an`` inside ``want`` does not). Hand-written: :mod:`difflib` finds
    order-preserving blocks, not the longest match at each position.
    """
    low_answer, low_context = answer.lower(), context.lower()
    spans: list[tuple[int, int]] = []
    start = 0
    while start < len(low_answer):
        if low_answer[start].isspace():
            start += 1
            continue
        length = 0
        # substring presence is monotone in the length, so extend while it still matches
        while (
            start + length < len(low_answer)
            and low_answer[start : start + length + 1] in low_context
        ):
            length += 1
        end = start + length
        piece = low_answer[start:end]
        whole_words = (
            length > 0
            and _word_edge(low_answer, start)
            and _word_edge(low_answer, end)
            and any(ch.isalnum() for ch in piece)
            and re.search(rf"(?<!\w){re.escape(piece)}(?!\w)", low_context) is not None
        )
        if length >= min_chars or whole_words:
            spans.append((start, end))
            start = end
        else:
            start += 1
    return spans


def covered_chars(answer: str, context: str, min_chars: int = 4) -> list[bool]:
    """For each character of ``answer``: whether it lies in a span of :func:`copy_spans`."""
    covered = [False] * len(answer)
    for start, end in copy_spans(answer, context, min_chars):
        covered[start:end] = [True] * (end - start)
    return covered


def _token_offsets(tokens: Sequence[str]) -> list[tuple[int, int]]:
    offsets, position = [], 0
    for token in tokens:
        offsets.append((position, position + len(token)))
        position += len(token)
    return offsets


def copied_mask(tokens: Sequence[str], context: str, min_chars: int = 4) -> list[bool | None]:
    """Per token: True (copied), False (not copied) or None (no letter or digit: neutral)."""
    answer = "".join(tokens)
    covered = covered_chars(answer, context, min_chars)
    mask: list[bool | None] = []
    for first, last in _token_offsets(tokens):
        chars = [i for i in range(first, last) if not answer[i].isspace()]
        if not any(answer[i].isalnum() for i in chars):
            mask.append(None)
            continue
        mask.append(sum(covered[i] for i in chars) * 2 >= len(chars))
    return mask


def copy_start_tokens(tokens: Sequence[str], context: str, min_chars: int = 4) -> list[int]:
    """Indices of the tokens where a copied span begins (where the model chose a source)."""
    answer = "".join(tokens)
    starts = sorted(start for start, _ in copy_spans(answer, context, min_chars))
    offsets = _token_offsets(tokens)
    found: list[int] = []
    for index, (first, last) in enumerate(offsets):
        if any(first <= s < last for s in starts):
            found.append(index)
    return found


def _aggregate(logprobs: Sequence[float], statistic: Statistic) -> float:
    if not logprobs:
        return 1.0
    if statistic == "min":
        return math.exp(min(logprobs))
    return math.exp(math.fsum(logprobs) / len(logprobs))


class GroundedAnswer(Estimator):
    """Confidence of a context-grounded answer: ``S * (c + (1 - c) * U)`` (see the module).

    Args:
        statistic: ``"mean"`` (geometric mean probability) or ``"min"`` for ``U`` and ``S``.
        copy_starts: Multiply by ``S``, the model's sureness at the first token of each copy.
        min_chars: Shortest match that counts as copied when it does not cover whole words.

    Raises:
        ConfigurationError: Unknown ``statistic`` or ``min_chars < 1``.
    """

    name: ClassVar[str] = "grounded_answer"

    def __init__(
        self, statistic: Statistic = "mean", copy_starts: bool = True, min_chars: int = 4
    ) -> None:
        if statistic not in ("mean", "min"):
            raise ConfigurationError(
                f"grounded_answer statistic must be 'mean' or 'min', got {statistic!r}."
            )
        if min_chars < 1:
            raise ConfigurationError(f"grounded_answer min_chars must be >= 1, got {min_chars}.")
        self.statistic: Statistic = statistic
        self.copy_starts = copy_starts
        self.min_chars = min_chars

    def parts(self, generation: Generation, context: EstimationContext) -> dict[str, float] | None:
        """``coverage``, ``uncopied`` (U) and ``starts`` (S), or None with nothing to score."""
        source = context_text(context.messages)
        if not generation.logprobs or not source.strip():
            return None
        mask = copied_mask(generation.tokens, source, self.min_chars)
        content = [m for m in mask if m is not None]
        if not content:
            return None
        uncopied = [lp for lp, m in zip(generation.logprobs, mask, strict=True) if m is False]
        starts = [
            generation.logprobs[i]
            for i in copy_start_tokens(generation.tokens, source, self.min_chars)
            if mask[i] is True
        ]
        return {
            "coverage": sum(content) / len(content),
            "uncopied": _aggregate(uncopied, self.statistic),
            "starts": _aggregate(starts, self.statistic) if self.copy_starts else 1.0,
        }

    def confidence(self, generation: Generation, context: EstimationContext) -> float | None:
        """``S * (c + (1 - c) * U)``, in [0, 1]; None when there is nothing to score."""
        parts = self.parts(generation, context)
        if parts is None:
            return None
        coverage = parts["coverage"]
        value = parts["starts"] * (coverage + (1.0 - coverage) * parts["uncopied"])
        return min(1.0, max(0.0, value))

    def params(self) -> dict[str, Any]:
        """The formula's settings."""
        return {
            "statistic": self.statistic,
            "copy_starts": self.copy_starts,
            "min_chars": self.min_chars,
        }
