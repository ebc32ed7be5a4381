"""Estimators computed from the statistics of the answer's own forward pass (no extra work)."""

from __future__ import annotations

import math
from typing import ClassVar

from confroute.estimators.base import EstimationContext, Estimator
from confroute.generation import Generation

__all__ = ["Perplexity"]


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
        return min(1.0, max(0.0, math.exp(mean)))
