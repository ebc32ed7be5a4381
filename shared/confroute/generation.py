"""What one local generation returns: the text and every per-token signal the estimators use."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = ["Generation", "TokenAlternative"]


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
