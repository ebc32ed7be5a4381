"""Estimators computed from the statistics of the answer's own forward pass (no extra work).

All four read the per-token log-probabilities and entropies that :class:`~confroute.local.
LocalModel` records while it writes the answer, so choosing any number of them costs nothing
beyond the one generation. An empty answer has no confidence (None).
"""

from __future__ import annotations

import math
import re
from typing import ClassVar

from confroute.estimators.base import EstimationContext, Estimator, Requirement
from confroute.generation import Generation

__all__ = ["AvgTokenProb", "MeanTokenEntropy", "MinTokenProb", "Perplexity"]

_OPTION_ANSWER = re.compile(r"\s*\(?([A-Ea-e])[).:]?\s*")


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value))


def option_token_index(generation: Generation) -> int | None:
    """Index of the option-letter token when the whole answer is one option (``B``, ``(B)``)."""
    match = _OPTION_ANSWER.fullmatch(generation.text)
    if match is None:
        return None
    letter = match.group(1)
    for index, token in enumerate(generation.tokens):
        if token.strip().strip("().:") == letter:
            return index
    return None


class AvgTokenProb(Estimator):
    """Mean probability of the answer tokens.

    For a multiple-choice answer (the whole answer is one option letter such as ``B`` or
    ``(B)``), the probability of the option-letter token itself, so that brackets and
    punctuation around the letter do not dilute it.
    """

    name: ClassVar[str] = "avg_token_prob"

    def confidence(self, generation: Generation, context: EstimationContext) -> float | None:
        """Mean token probability (or the option token's probability)."""
        del context
        if not generation.logprobs:
            return None
        option = option_token_index(generation)
        if option is not None:
            return _clip(math.exp(generation.logprobs[option]))
        probs = [math.exp(lp) for lp in generation.logprobs]
        return _clip(math.fsum(probs) / len(probs))


class Perplexity(Estimator):
    """Inverse perplexity: ``exp(mean token log-probability)`` of the answer tokens.

    Equals 1 when every token had probability 1, and falls towards 0 as the model hesitates.
    An empty answer has no confidence (None).
    """

    name: ClassVar[str] = "perplexity"

    def confidence(self, generation: Generation, context: EstimationContext) -> float | None:
        """``1 / PPL`` over the answer tokens."""
        del context
        if not generation.logprobs:
            return None
        mean = math.fsum(generation.logprobs) / len(generation.logprobs)
        return _clip(math.exp(mean))


class MeanTokenEntropy(Estimator):
    """``exp(-mean entropy)`` of the next-token distributions over the answer.

    Entropy is in nats over the full vocabulary; 0 entropy (a certain model) gives 1, and the
    confidence falls as the distributions spread.
    """

    name: ClassVar[str] = "mean_token_entropy"
    requires: ClassVar[frozenset[str]] = frozenset({Requirement.ENTROPIES})

    def confidence(self, generation: Generation, context: EstimationContext) -> float | None:
        """``exp(-mean H)`` over the answer tokens."""
        del context
        if not generation.entropies:
            return None
        mean = math.fsum(generation.entropies) / len(generation.entropies)
        return _clip(math.exp(-max(0.0, mean)))


class MinTokenProb(Estimator):
    """Probability of the least likely answer token: one weak step makes a weak answer."""

    name: ClassVar[str] = "min_token_prob"

    def confidence(self, generation: Generation, context: EstimationContext) -> float | None:
        """``min_t p(token_t)``."""
        del context
        if not generation.logprobs:
            return None
        return _clip(math.exp(min(generation.logprobs)))
