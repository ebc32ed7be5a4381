"""What a routing call returns: the answer with the decision that produced it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from confroute.decision import RoutingDecision
from confroute.generation import Generation
from confroute.target import EscalationResult

__all__ = ["RoutedChunk", "RoutedResponse"]


@dataclass
class RoutedResponse:
    """The answer returned to the caller, with the decision that produced it.

    Attributes:
        text: The answer text.
        decision: The routing decision (also sent to the hooks).
        local: The local model's generation (None when the prompt did not fit the SLM).
        remote: The strong model's result when it answered.
        tool_calls: Tool calls in the OpenAI shape (from whichever model answered).
        confidences: Every chosen estimator's confidence in the local answer, by name (the
            primary one, which the policy used, and the ``extra_estimators``).
    """

    text: str
    decision: RoutingDecision
    local: Generation | None = None
    remote: EscalationResult | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    confidences: dict[str, float | None] = field(default_factory=dict)

    @property
    def logprobs(self) -> dict[str, Any] | None:
        """Log-probabilities of the returned answer in the OpenAI shape, when known."""
        if self.remote is not None and self.decision.answered_by == self.remote.model:
            return self.remote.logprobs
        return self.local.openai_logprobs() if self.local is not None else None

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens of the model that answered."""
        if self.remote is not None and self.remote.prompt_tokens is not None:
            return self.remote.prompt_tokens
        return self.decision.local_prompt_tokens

    @property
    def completion_tokens(self) -> int:
        """Completion tokens of the model that answered."""
        if self.remote is not None and self.remote.completion_tokens is not None:
            return self.remote.completion_tokens
        return self.decision.local_completion_tokens

    @property
    def reported_finish_reason(self) -> str | None:
        """Why the answer ended, as the model that answered reported it (None when unknown).

        ``"tool_calls"`` when the answer holds tool calls; otherwise the strong model's finish
        reason when it answered, else the local generation's (``"stop"`` or ``"length"``).
        """
        if self.tool_calls:
            return "tool_calls"
        if self.remote is not None and self.decision.answered_by == self.remote.model:
            return self.remote.finish_reason
        return self.local.finish_reason if self.local is not None else None

    @property
    def finish_reason(self) -> str:
        """The OpenAI finish reason: ``"stop"``, ``"length"`` or ``"tool_calls"``.

        :attr:`reported_finish_reason`, with ``"stop"`` when the model reported none (a
        provider's own value, such as ``"content_filter"``, is passed through).
        """
        return self.reported_finish_reason or "stop"

    @property
    def usage(self) -> dict[str, int]:
        """Token counts of the model that answered, in the OpenAI shape.

        Keys ``prompt_tokens``, ``completion_tokens`` and ``total_tokens`` (their sum).
        """
        prompt, completion = self.prompt_tokens, self.completion_tokens
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }


@dataclass
class RoutedChunk:
    """One piece of a streamed answer; the last one carries the full response."""

    text: str = ""
    response: RoutedResponse | None = None
