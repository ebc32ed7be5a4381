"""Estimators that compare several sampled answers to the same prompt."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np

from confroute.errors import ConfigurationError
from confroute.estimators.base import EstimationContext, Estimator, Requirement
from confroute.generation import Generation, GenerationConfig

__all__ = ["JaccardDegree", "jaccard_degree_confidence", "word_set"]

_WORD = re.compile(r"\w+")


def word_set(text: str) -> frozenset[str]:
    """The set of lower-cased words of a text."""
    return frozenset(_WORD.findall(text.lower()))


def jaccard_degree_confidence(texts: Sequence[str]) -> float:
    """``1 - U`` with ``U = trace(m I - D) / m**2`` over Jaccard similarities of word sets.

    ``W_ij = |S_i & S_j| / |S_i | S_j|`` (two empty sets are identical: 1), ``D`` is the
    diagonal degree matrix ``D_ii = sum_j W_ij``. The confidence is the mean of ``W`` over all
    pairs, diagonal included, so it lies in ``[1/m, 1]``: 1 when every sample says the same.

    Raises:
        ConfigurationError: ``texts`` is empty.
    """
    m = len(texts)
    if m == 0:
        raise ConfigurationError("jaccard_degree needs at least one sample.")
    sets = [word_set(t) for t in texts]
    similarity = np.ones((m, m))
    for i in range(m):
        for j in range(i + 1, m):
            union = sets[i] | sets[j]
            value = len(sets[i] & sets[j]) / len(union) if union else 1.0
            similarity[i, j] = similarity[j, i] = value
    degree = np.diag(similarity.sum(axis=1))
    uncertainty = float(np.trace(m * np.eye(m) - degree)) / m**2
    return min(1.0, max(0.0, 1.0 - uncertainty))


class JaccardDegree(Estimator):
    """Semantic consistency of ``m`` samples at temperature 1.0 (one batched call).

    The samples are drawn from the same prompt with the answer's token cap and stop strings;
    the greedy answer itself is not one of them. A backend without a tokenizer is asked by
    messages (:meth:`~confroute.backend.LocalBackend.generate` with ``num_samples``).
    """

    name: ClassVar[str] = "jaccard_degree"
    requires: ClassVar[frozenset[str]] = frozenset({Requirement.SAMPLES})

    def __init__(
        self,
        num_samples: int = 5,
        temperature: float = 1.0,
        seed: int | None = None,
        max_new_tokens: int | None = None,
    ) -> None:
        """Build the estimator.

        Args:
            num_samples: ``m``, the number of samples (at least 2).
            temperature: Sampling temperature.
            seed: Seed for reproducible samples (None: a fresh seed per request).
            max_new_tokens: Cap of each sample (None: the answer's own cap).
        """
        if num_samples < 2:
            raise ConfigurationError(f"jaccard_degree needs num_samples >= 2, got {num_samples}.")
        if temperature <= 0:
            raise ConfigurationError(f"temperature must be > 0, got {temperature}.")
        self.num_samples = num_samples
        self.temperature = temperature
        self.seed = seed
        self.max_new_tokens = max_new_tokens

    def confidence(self, generation: Generation, context: EstimationContext) -> float | None:
        """Sample ``m`` answers in one batch and score their agreement."""
        model = context.local_model
        if model is None:
            raise ConfigurationError(
                "jaccard_degree draws samples from the local model; pass "
                "EstimationContext(local_model=...) (ConfRouter does this)."
            )
        base = context.config or GenerationConfig()
        config = replace(
            base,
            temperature=self.temperature,
            num_samples=self.num_samples,
            seed=self.seed,
            max_new_tokens=self.max_new_tokens or base.max_new_tokens,
            hidden_layer=None,
            keep_cache=False,
        )
        if model.capabilities.tokenizer:
            prompt = context.prompt_ids
            if prompt is None:
                prompt = model.encode(model.render(context.messages, context.tools))
            samples = model.generate_from_ids([list(prompt)], config)
        else:  # a model behind an API: by messages, `n` samples in one call where it can
            samples = model.generate([list(context.messages)], config, tools=context.tools)
        texts = [s.text for s in samples]
        context.extras["jaccard_samples"] = texts
        return jaccard_degree_confidence(texts)

    def params(self) -> dict[str, Any]:
        """Sampling settings."""
        return {
            "num_samples": self.num_samples,
            "temperature": self.temperature,
            "max_new_tokens": self.max_new_tokens,
        }
