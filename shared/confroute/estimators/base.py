"""The estimator contract: one small class per uncertainty method.

Every estimator returns a *confidence* in [0, 1]: higher means the local model is more likely
right, and the router escalates when it is low. An estimator that cannot produce a number (an
unparseable verbalized confidence, an empty answer) returns ``None``; the policy treats that as
the lowest confidence. Thresholds never live here: they belong to the routing policy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from confroute.generation import Generation

if TYPE_CHECKING:
    from confroute.local import LocalModel

__all__ = ["EstimationContext", "Estimator", "Requirement"]


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


@dataclass
class EstimationContext:
    """What an estimator may read besides the generation.

    Attributes:
        messages: The conversation the answer responds to (OpenAI shape).
        local_model: The model that wrote the answer, for estimators that ask it more.
        extras: Per-request scratch space shared by the estimators of one request.
    """

    messages: Sequence[dict[str, Any]]
    local_model: LocalModel | None = None
    extras: dict[str, Any] = field(default_factory=dict)


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

    def params(self) -> dict[str, Any]:
        """The settings that change this estimator's output (part of a profile's fingerprint)."""
        return {}

    def __repr__(self) -> str:
        """Name and parameters."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"
