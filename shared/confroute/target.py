"""What the router needs of a strong model: the :class:`EscalationTarget` Protocol and its results.

:class:`~confroute.escalation.Escalation` (LiteLLM, any provider) is the implementation the
router builds from a model string; anything with the same four calls and a ``model`` name can
be passed as ``strong_model`` instead (a test double, a cascade's next tier).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from confroute.decision import TierAttempt

__all__ = ["EscalationResult", "EscalationTarget", "StreamDelta"]


@dataclass
class EscalationResult:
    """The strong model's answer.

    Attributes:
        text: Answer text ("" when the answer is only tool calls).
        model: The LiteLLM model string that answered (a fallback when the primary failed).
        tool_calls: Tool calls in the OpenAI shape.
        prompt_tokens: Billed prompt tokens, when reported.
        completion_tokens: Billed completion tokens, when reported.
        cost_usd: From LiteLLM's cost map; 0 for in-process models; None when unknown.
        latency_s: Wall time, retries included.
        attempts: Calls made, retries and fallbacks included.
        logprobs: ``choices[0].logprobs`` in the OpenAI shape, when the provider returned them.
        finish_reason: The provider's finish reason.
        errors: Failures met before success (one line each, secrets redacted).
        tiers: Each tier a :class:`~confroute.cascade.Cascade` tried (empty otherwise).
    """

    text: str
    model: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    latency_s: float = 0.0
    attempts: int = 0
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None
    errors: list[str] = field(default_factory=list)
    tiers: list[TierAttempt] = field(default_factory=list)


@dataclass
class StreamDelta:
    """One piece of a streamed escalation: a text delta, or the final result (``done``)."""

    text: str = ""
    result: EscalationResult | None = None


@runtime_checkable
class EscalationTarget(Protocol):
    """A strong model the router escalates to.

    Attributes:
        model: The model's name (reported in decisions as ``remote_model``).
    """

    model: str

    def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        stop: Sequence[str] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> EscalationResult:
        """Answer the conversation.

        Raises:
            EscalationError: The strong model could not answer (secrets redacted).
        """
        ...

    async def acomplete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        stop: Sequence[str] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> EscalationResult:
        """Async form of :meth:`complete`."""
        ...

    def stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        stop: Sequence[str] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> Iterator[StreamDelta]:
        """Text deltas, then one delta holding the :class:`EscalationResult`."""
        ...

    def astream(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        stop: Sequence[str] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> AsyncIterator[StreamDelta]:
        """Async form of :meth:`stream`."""
        ...
