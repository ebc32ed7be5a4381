"""Token texts and stop strings, shared by every backend that decodes token by token.

A backend hands :class:`TokenTexts` anything with a ``decode(ids, skip_special_tokens=...)``
method (a transformers tokenizer, or an adapter over llama.cpp's detokenizer);
:class:`StopScanner` then finds a stop string in a growing answer by decoding only its tail,
and :func:`cut_at_stop` cuts the finished answer before it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

__all__ = ["EDGE", "Detokenizer", "StopScanner", "TokenTexts", "cut_at_stop", "kept_answer"]

EDGE = 8
"""Characters of slack at each end of a stop-string window (partial UTF-8 characters at its
left edge, clean-up of a space before the new token, a SentencePiece leading space)."""


class Detokenizer(Protocol):
    """What :class:`TokenTexts` needs of a tokenizer."""

    def decode(self, token_ids: list[int], skip_special_tokens: bool = False) -> str:
        """The text of ``token_ids``; special tokens dropped with ``skip_special_tokens``."""
        ...


class TokenTexts:
    """Each token decoded on its own, decoded once per id."""

    def __init__(self, tokenizer: Detokenizer) -> None:
        self._tokenizer = tokenizer
        self._pieces: dict[int, str] = {}

    def piece(self, token: int) -> str:
        """``tokenizer.decode([token])`` (special tokens kept)."""
        text = self._pieces.get(token)
        if text is None:
            text = self._pieces[token] = str(self._tokenizer.decode([token]))
        return text

    def decode(self, tokens: Sequence[int]) -> str:
        """``tokens`` decoded together, special tokens dropped."""
        return str(self._tokenizer.decode(list(tokens), skip_special_tokens=True))


class StopScanner:
    """Finds a stop string in a growing answer by decoding only its tail at each step.

    The answer had no stop string before its newest token, so a new one must overlap the text
    that token changed. The window decodes enough tokens that, before the newest token's text,
    it holds the longest stop string plus :data:`EDGE` characters; a row shorter than that is
    decoded whole. The verdict is the one decoding the whole answer would give.
    """

    def __init__(self, stop: Sequence[str], texts: TokenTexts) -> None:
        self._stop = tuple(stop)
        self._texts = texts
        self._longest = max(len(s) for s in self._stop)
        self._spans: dict[int, int] = {}

    def hit(self, row: int, tokens: Sequence[int]) -> bool:
        """Whether the decoded ``tokens`` of ``row`` hold a stop string (they grew by one)."""
        need = self._longest + len(self._texts.piece(tokens[-1])) + EDGE
        # window in tokens: most hold a character or more; a row whose tokens hold less
        # (pieces of UTF-8 characters, special tokens) keeps the wider window it needed
        span = self._spans.get(row, self._longest + EDGE + 2)
        while True:
            start = max(0, len(tokens) - span)
            text = self._texts.decode(tokens[start:])
            if start == 0 or len(text) >= need:
                self._spans[row] = span
                return any(s in text for s in self._stop)
            span *= 2


def cut_at_stop(
    text: str, ids: Sequence[int], stop: Sequence[str], texts: TokenTexts
) -> tuple[str, int]:
    """``text`` cut before its first stop string, and how many of ``ids`` lie before the cut.

    ``text`` is ``texts.decode(ids)``; without a stop string in it both come back whole.
    """
    cut = min((text.find(s) for s in stop if s in text), default=-1)
    if cut < 0:
        return text, len(ids)
    # keep the tokens whose decoded text lies before the stop sequence
    count = len(ids)
    while count > 0 and len(texts.decode(ids[:count])) > cut:
        count -= 1
    return text[:cut], count


def kept_answer(
    tokens: Sequence[int], special_ids: Collection[int], stop: Sequence[str], texts: TokenTexts
) -> tuple[str, list[int], list[int]]:
    """The answer of decoded ``tokens``: its text, the kept steps' indices and their ids.

    Special tokens are dropped, and with ``stop`` strings the text is cut before the first one
    and only the tokens before the cut are kept (every token-by-token backend assembles its
    :class:`~confroute.generation.Generation` from these).
    """
    keep = [i for i, t in enumerate(tokens) if t not in special_ids]
    ids = [tokens[i] for i in keep]
    text = texts.decode(ids)
    if stop:
        text, count = cut_at_stop(text, ids, stop, texts)
        keep, ids = keep[:count], ids[:count]
    return text, keep, ids
