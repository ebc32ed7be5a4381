"""What the router needs of a local model: the :class:`LocalBackend` Protocol and its capabilities.

A backend writes answers and reports the per-token statistics the estimators read. The
transformers :class:`~confroute.local.LocalModel` is one implementation; the micro-batcher
(:class:`~confroute.serving.batcher.MicroBatcher`) wraps any backend by composition, and the
unit tests' fakes implement the Protocol directly. A backend says what it can do in
:attr:`LocalBackend.capabilities`; the router refuses, at construction, an estimator whose
:class:`~confroute.estimators.Requirement` the backend cannot serve.

Example:
    >>> from confroute.backend import Capabilities
    >>> Capabilities(hidden_state=False).missing({"hidden_state", "samples"})
    ['hidden_state']
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable

import numpy as np

from confroute.errors import ContextOverflowError
from confroute.generation import Generation, GenerationConfig, TokenAlternative

__all__ = [
    "AsyncMessageFollowUp",
    "AsyncTokenGeneration",
    "Capabilities",
    "LocalBackend",
    "MessageFollowUp",
    "check_prompts_fit",
    "prompt_fits",
]


@dataclass(frozen=True)
class Capabilities:
    """What a backend can compute; each flag names one kind of work.

    Attributes:
        backend: The engine's name, reported in decisions (``"transformers"``,
            ``"llama.cpp"``, ``"server"``, or a user's own).
        tokenizer: The backend exposes its tokenizer and runs token ids
            (:meth:`LocalBackend.render`, :meth:`~LocalBackend.encode`,
            :meth:`~LocalBackend.vocabulary`, :meth:`~LocalBackend.generate_from_ids`,
            :meth:`~LocalBackend.next_token_logprobs`, :meth:`~LocalBackend.continue_greedy`).
            A backend without one (a model behind an HTTP API) is reached by messages only and
            serves follow-ups through :class:`MessageFollowUp`.
        logprobs: Log-probability of each chosen answer token (every single-pass estimator).
        top_logprobs: Number of alternatives reported per token (0: none).
        entropies: Entropy of the full next-token distribution at each step.
        samples: Several sampled answers per prompt (``GenerationConfig.num_samples``).
        follow_up: :meth:`LocalBackend.next_token_logprobs` and
            :meth:`LocalBackend.continue_greedy` (p_true, verbalized 2-step).
        kept_prefix: A follow-up reuses the answer's key/value cache
            (``GenerationConfig.keep_cache``); without it a follow-up prefills in full.
        hidden_state: A layer's hidden state at the last answer token (the probes).
        step_monitor: ``GenerationConfig.step_monitor`` is called after every step (early
            escalation).
    """

    backend: str = "transformers"
    tokenizer: bool = True
    logprobs: bool = True
    top_logprobs: int = 5
    entropies: bool = True
    samples: bool = True
    follow_up: bool = True
    kept_prefix: bool = True
    hidden_state: bool = True
    step_monitor: bool = True

    def missing(self, requirements: Collection[str]) -> list[str]:
        """The :class:`~confroute.estimators.Requirement` names this backend cannot serve.

        ``"prompt"`` (a changed answer prompt) needs nothing of the backend.
        """
        needs = {
            "hidden_state": self.hidden_state,
            "follow_up": self.follow_up,
            "samples": self.samples,
            "entropies": self.entropies,
        }
        return sorted(r for r in requirements if not needs.get(r, True))

    def as_dict(self) -> dict[str, Any]:
        """The flags by name (for ``/health`` and logs)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@runtime_checkable
class LocalBackend(Protocol):
    """A local model that writes answers and reports their per-token statistics.

    The four attributes are read-only here: a plain attribute (``LocalModel``) or a property
    (the micro-batcher, which reads them from the backend it wraps) both serve.
    """

    @property
    def name(self) -> str:
        """The model's name (decisions, profiles and probe files are keyed by it)."""
        ...

    @property
    def fingerprint(self) -> str:
        """A hash of the weights (a calibration profile is checked against it)."""
        ...

    @property
    def context_window(self) -> int:
        """Prompt plus answer tokens the model can hold."""
        ...

    @property
    def capabilities(self) -> Capabilities:
        """What this backend can compute."""
        ...

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        """The prompt text of a conversation, with the generation prompt appended."""
        ...

    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt text (no special tokens added: the template has them)."""
        ...

    def count_tokens(self, messages: Sequence[Mapping[str, Any]]) -> int:
        """Number of prompt tokens of a conversation."""
        ...

    def vocabulary(self) -> Sequence[tuple[str, int]]:
        """Every ``(token string, id)`` pair of the tokenizer (p_true finds its words here)."""
        ...

    def special_token_ids(self) -> frozenset[int]:
        """Ids of the special tokens (end of turn, padding), never part of an answer."""
        ...

    def generate(
        self,
        conversations: Sequence[Sequence[Mapping[str, Any]]],
        config: GenerationConfig | None = None,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[Generation]:
        """Answer a batch of conversations (``num_samples`` consecutive results each).

        Raises:
            ContextOverflowError: A prompt plus ``max_new_tokens`` exceeds the context window.
        """
        ...

    async def agenerate(
        self,
        conversations: Sequence[Sequence[Mapping[str, Any]]],
        config: GenerationConfig | None = None,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[Generation]:
        """Async form of :meth:`generate`; never blocks the event loop."""
        ...

    def generate_from_ids(
        self, prompts: Sequence[Sequence[int]], config: GenerationConfig
    ) -> list[Generation]:
        """Answer already tokenised prompts (see :meth:`generate`)."""
        ...

    def next_token_logprobs(self, token_ids: Sequence[int], prefix: Any = None) -> np.ndarray:
        """Natural-log probabilities (whole vocabulary) of the token after ``token_ids``.

        ``prefix`` is a generation's ``extras["prefix"]`` (kept with
        ``GenerationConfig.keep_cache``); a backend without ``kept_prefix`` ignores it.
        """
        ...

    def continue_greedy(
        self, token_ids: Sequence[int], max_new_tokens: int, prefix: Any = None
    ) -> str:
        """Greedy continuation of ``token_ids`` (special tokens dropped), reusing ``prefix``."""
        ...


@runtime_checkable
class AsyncTokenGeneration(Protocol):
    """A backend whose tokenised prompts can be awaited without holding a thread.

    The micro-batcher (:class:`~confroute.serving.batcher.MicroBatcher`) has it: an async
    caller waits for its batch as a future, so any number of concurrent requests join one
    batch. A backend without it is run in a worker thread by the async routing path.
    """

    async def agenerate_from_ids(
        self, prompts: Sequence[Sequence[int]], config: GenerationConfig
    ) -> list[Generation]:
        """Async form of :meth:`LocalBackend.generate_from_ids`."""
        ...


@runtime_checkable
class MessageFollowUp(Protocol):
    """Follow-up turns by messages, for a backend without a tokenizer (``tokenizer=False``).

    p_true and verbalized 2-step ask the model one more question after its answer. A backend
    that runs token ids answers it from the kept cache (:meth:`LocalBackend.next_token_logprobs`,
    :meth:`LocalBackend.continue_greedy`); one behind an HTTP API answers it as a second call.
    """

    def follow_up_alternatives(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> tuple[TokenAlternative, ...]:
        """The top-k alternatives (most likely first) of the first token of the reply."""
        ...

    def follow_up_reply(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        max_new_tokens: int = 8,
    ) -> str:
        """The greedy reply to ``messages``, at most ``max_new_tokens`` tokens."""
        ...


@runtime_checkable
class AsyncMessageFollowUp(Protocol):
    """Async forms of :class:`MessageFollowUp`, for a backend behind an HTTP API.

    With them the async routing path awaits p_true's and verbalized 2-step's second call
    (:meth:`Estimator.aconfidence <confroute.estimators.Estimator.aconfidence>`) instead of
    making it from a worker thread, so concurrent callers' follow-ups reach a batching server
    together, as their answers do.
    """

    async def afollow_up_alternatives(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> tuple[TokenAlternative, ...]:
        """Async form of :meth:`MessageFollowUp.follow_up_alternatives`."""
        ...

    async def afollow_up_reply(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        max_new_tokens: int = 8,
    ) -> str:
        """Async form of :meth:`MessageFollowUp.follow_up_reply`."""
        ...


def prompt_fits(prompt_tokens: int, max_new_tokens: int, context_window: int) -> bool:
    """Whether a prompt of ``prompt_tokens`` plus ``max_new_tokens`` fits ``context_window``.

    The one place the rule is written: the router (which escalates a prompt that does not
    fit), every backend and the micro-batcher (which raise) all ask it.
    """
    return prompt_tokens + max_new_tokens <= context_window


def check_prompts_fit(
    prompts: Sequence[Sequence[int]], max_new_tokens: int, context_window: int, model: str
) -> None:
    """Raise :class:`~confroute.errors.ContextOverflowError` for the first prompt that does not fit.

    Raises:
        ContextOverflowError: A prompt plus ``max_new_tokens`` exceeds ``context_window``.
    """
    for ids in prompts:
        if not prompt_fits(len(ids), max_new_tokens, context_window):
            raise ContextOverflowError(
                f"The prompt has {len(ids)} tokens; with max_new_tokens={max_new_tokens} it "
                f"exceeds {model}'s context window of {context_window} tokens. Shorten the "
                "prompt or lower max_new_tokens.",
                prompt_tokens=len(ids),
                context_window=context_window,
            )
