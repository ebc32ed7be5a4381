"""What one local generation returns: the text and every per-token signal the estimators use."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from confroute.errors import ConfigurationError

__all__ = [
    "Generation",
    "GenerationConfig",
    "StepMonitor",
    "StepMonitorFactory",
    "TokenAlternative",
]


@dataclass(frozen=True)
class TokenAlternative:
    """One of the top-k candidates at a generation step."""

    token: str
    token_id: int
    logprob: float


@dataclass(frozen=True)
class Generation:
    """One answer of the local model with the statistics of the forward pass that wrote it.

    All per-token sequences cover the answer tokens only: special tokens (end of turn, padding)
    and anything after a stop sequence are excluded.

    Attributes:
        text: The answer text (stop sequence excluded).
        token_ids: The answer's token ids.
        tokens: Each answer token decoded on its own.
        logprobs: Natural-log probability of each chosen token under the model (temperature 1,
            before any sampling transform).
        top_logprobs: The top-k alternatives at each step, most likely first.
        entropies: Entropy (nats) of the full next-token distribution at each step.
        finish_reason: ``"stop"`` (end of turn or a stop sequence) or ``"length"`` (token cap).
        prompt_tokens: Number of prompt tokens.
        hidden_state: The requested layer's hidden state at the last answer token, or None.
        hidden_layer: Which layer ``hidden_state`` comes from (negative counts from the end).
        model: Name of the model that wrote it.
        latency_s: Wall time of the batch this generation was part of.
        extras: Free slot for estimators' cached intermediate results.
    """

    text: str
    token_ids: tuple[int, ...]
    tokens: tuple[str, ...]
    logprobs: tuple[float, ...]
    top_logprobs: tuple[tuple[TokenAlternative, ...], ...]
    entropies: tuple[float, ...]
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    model: str = ""
    latency_s: float = 0.0
    hidden_state: np.ndarray | None = field(default=None, compare=False, repr=False)
    hidden_layer: int | None = None
    extras: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def completion_tokens(self) -> int:
        """Number of answer tokens."""
        return len(self.token_ids)

    def openai_logprobs(self) -> dict[str, Any]:
        """The log-probabilities in the OpenAI chat-completions shape (``choices[0].logprobs``)."""
        content = []
        for token, logprob, alternatives in zip(
            self.tokens, self.logprobs, self.top_logprobs, strict=True
        ):
            content.append(
                {
                    "token": token,
                    "logprob": logprob,
                    "bytes": list(token.encode("utf-8")),
                    "top_logprobs": [
                        {
                            "token": alt.token,
                            "logprob": alt.logprob,
                            "bytes": list(alt.token.encode("utf-8")),
                        }
                        for alt in alternatives
                    ],
                }
            )
        return {"content": content}


# -- step monitor hook (used by confroute.serving.early) ------------------------------------
StepMonitor = Callable[[int, Sequence[int], Sequence[float], Sequence[float]], Sequence[bool]]
"""Called after every decoding step with (step, chosen token ids, their log-probabilities,
entropies), one entry per batch row; returns one flag per row, True to stop that row now."""
StepMonitorFactory = Callable[[int], StepMonitor]
"""Called once per decoded batch with its number of rows; returns that batch's monitor."""
# -- end of step monitor hook -------------------------------------------------------------


@dataclass(frozen=True)
class GenerationConfig:
    """How to decode.

    Attributes:
        max_new_tokens: Token cap of the answer.
        temperature: 0 for greedy decoding; otherwise sampling at this temperature.
        top_p: Nucleus sampling mass (sampling only).
        stop: Strings that end the answer; they are not part of the returned text.
        num_samples: Answers to draw per conversation (sampling only when > 1).
        hidden_layer: Return the hidden state of this layer (negative counts from the last,
            ``-8`` is the 8th-to-last) at the last answer token; None returns none.
        seed: Seed of the sampler, for reproducible samples.
        keep_cache: Keep the key/value cache of prompt plus answer in each generation's
            ``extras["prefix"]`` (a :class:`KeptPrefix`), so that a follow-up turn
            (:meth:`~confroute.backend.LocalBackend.next_token_logprobs`,
            :meth:`~confroute.backend.LocalBackend.continue_greedy`)
            prefills only the new tokens.
        step_monitor: Optional hook (see :data:`StepMonitorFactory`) that may stop rows during
            decoding; a stopped row ends with ``finish_reason="length"`` and
            ``extras["stopped_early_at"]`` set to its answer length in steps. Used by early
            escalation (:mod:`confroute.serving.early`).
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    num_samples: int = 1
    hidden_layer: int | None = None
    seed: int | None = None
    keep_cache: bool = False
    step_monitor: StepMonitorFactory | None = None

    def __post_init__(self) -> None:
        """Reject settings that cannot work."""
        if self.max_new_tokens < 1:
            raise ConfigurationError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}.")
        if not self.temperature >= 0:  # also refuses NaN
            raise ConfigurationError(f"temperature must be >= 0, got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise ConfigurationError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.num_samples < 1:
            raise ConfigurationError(f"num_samples must be >= 1, got {self.num_samples}.")
