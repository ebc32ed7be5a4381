"""The estimator contract: one small class per uncertainty method.

Every estimator returns a *confidence* in [0, 1]: higher means the local model is more likely
right, and the router escalates when it is low. An estimator that cannot produce a number (an
unparseable verbalized confidence, an empty answer) returns ``None``; the policy treats that as
the lowest confidence. Thresholds never live here: they belong to the routing policy.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from confroute.generation import Generation

if TYPE_CHECKING:
    from confroute.backend import LocalBackend
    from confroute.generation import GenerationConfig

__all__ = [
    "PROBE_LAYER",
    "EstimationContext",
    "Estimator",
    "Requirement",
    "ashared_confidence",
    "shared_confidence",
]

logger = logging.getLogger(__name__)


class Requirement:
    """Names of the extra work an estimator needs beyond one greedy generation."""

    HIDDEN_STATE = "hidden_state"
    """The hidden state of a layer at the last answer token (captured during generation)."""
    FOLLOW_UP = "follow_up"
    """One more prompt to the local model after the answer (p_true, verbalized 2-step)."""
    SAMPLES = "samples"
    """Several sampled answers to the same prompt."""
    PROMPT = "prompt"
    """A changed answer prompt (verbalized 1-step asks for a confidence with the answer)."""
    ENTROPIES = "entropies"
    """The entropy of the full next-token distribution at each answer step."""


PROBE_LAYER = -8
"""Layer whose hidden state the probes read: the 8th-to-last (``hidden_states[-8]``)."""


@dataclass
class EstimationContext:
    """What an estimator may read besides the generation.

    Attributes:
        messages: The conversation the answer responds to (OpenAI shape), as the user sent it.
        local_model: The model that wrote the answer, for estimators that ask it more.
        extras: Per-request scratch space shared by the estimators of one request (for
            example ``extras["confidences"]``, filled by :func:`shared_confidence`).
        prompt_ids: The token ids the answer was generated from, when known.
        config: The generation settings of the answer, when known.
        tools: The tools offered with the request, if any.
    """

    messages: Sequence[dict[str, Any]]
    local_model: LocalBackend | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    prompt_ids: Sequence[int] | None = None
    config: GenerationConfig | None = None
    tools: Sequence[Mapping[str, Any]] | None = None


class Estimator(ABC):
    """Turns one generation into a confidence in [0, 1]; higher = more sure.

    Subclasses set ``name`` (the registry key) and ``requires`` (a set of
    :class:`Requirement` names), and implement :meth:`confidence`.
    """

    name: ClassVar[str]
    requires: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def confidence(self, generation: Generation, context: EstimationContext) -> float | None:
        """Return the confidence in ``generation``, or None when none can be computed."""

    async def aconfidence(self, generation: Generation, context: EstimationContext) -> float | None:
        """Async form of :meth:`confidence`, which the async routing path awaits.

        The default runs :meth:`confidence` in a worker thread. An estimator that asks a
        server one more question (p_true, verbalized 2-step) overrides it to await the call
        where the backend can (:class:`~confroute.backend.AsyncMessageFollowUp`).
        """
        return await asyncio.to_thread(self.confidence, generation, context)

    def prepare(self, local_model: LocalBackend | None) -> None:  # noqa: B027 - optional hook
        """Load what the estimator needs for ``local_model`` and fail early if it cannot.

        The router calls this once, when it is built. The default does nothing.

        Raises:
            ConfigurationError: The estimator cannot work with this model (for example a probe
                trained for another model, or no probe file).
        """

    def transform_messages(self, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The conversation the local model answers (only :data:`Requirement.PROMPT` changes it)."""
        return [dict(m) for m in messages]

    def clean_answer(self, text: str) -> str:
        """The answer text shown to the user (a ``PROMPT`` estimator strips what it added)."""
        return text

    def params(self) -> dict[str, Any]:
        """The settings that change this estimator's output (part of a profile's fingerprint)."""
        return {}

    def __repr__(self) -> str:
        """Name and parameters."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


def shared_confidence(
    estimator: Estimator, generation: Generation, context: EstimationContext
) -> float | None:
    """``estimator``'s confidence, computed at most once per request.

    The result is kept in ``context.extras["confidences"]`` under the estimator's name, so a
    combination estimator and the router never pay twice for the same follow-up or samples.
    """
    cache: dict[str, float | None] = context.extras.setdefault("confidences", {})
    key = repr(estimator)
    if key not in cache:
        cache[key] = estimator.confidence(generation, context)
    return cache[key]


async def ashared_confidence(
    estimator: Estimator,
    generation: Generation,
    context: EstimationContext,
    *,
    none_on: tuple[type[Exception], ...] = (),
) -> float | None:
    """Async form of :func:`shared_confidence` (through :meth:`Estimator.aconfidence`).

    Args:
        estimator: The estimator.
        generation: The answer.
        context: The request's context; the result is kept in it as by
            :func:`shared_confidence`, which then returns it without asking again.
        none_on: Exceptions that make the confidence None (the lowest), logged and kept, so a
            failed follow-up call is not made a second time.
    """
    cache: dict[str, float | None] = context.extras.setdefault("confidences", {})
    key = repr(estimator)
    if key not in cache:
        try:
            cache[key] = await estimator.aconfidence(generation, context)
        except none_on as error:
            logger.warning("%s could not be computed: %s", estimator.name, error)
            cache[key] = None
    return cache[key]
