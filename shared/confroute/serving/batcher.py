"""Micro-batching: concurrent generation calls share one batched forward pass of the local model.

On a CPU or a small GPU the local model is the bottleneck, and one decoding step of a batch of
16 costs little more than a step of one. :class:`MicroBatcher` wraps any
:class:`~confroute.backend.LocalBackend` by composition: calls that arrive within a short window
(a few milliseconds) are merged into one ``generate_from_ids`` call of the wrapped backend, and
each caller gets back exactly its own generations. It is a ``LocalBackend`` itself, so a router
uses it unchanged::

    slm = MicroBatcher(LocalModel("qwen2.5-coder-0.5b-instruct", max_batch_size=16))
    router = ConfRouter(local_model=slm, strong_model=None)

Only calls with equal :class:`GenerationConfig` are merged (a batch decodes with one config);
sampled calls with a fixed seed run alone, so that their samples stay reproducible.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

from confroute.backend import Capabilities, LocalBackend, check_prompts_fit
from confroute.errors import ConfigurationError
from confroute.generation import Generation, GenerationConfig
from confroute.serving.batch_worker import STOP, BatchStats, Request, serve

__all__ = ["BatchStats", "MicroBatcher"]

logger = logging.getLogger(__name__)

DEFAULT_WINDOW_MS = 5.0
"""How long the first call of a batch waits for company, in milliseconds."""

DEFAULT_MAX_BATCH = 8
"""Most prompts merged into one call when the backend names no ``max_batch_size``."""


class MicroBatcher:
    """A :class:`~confroute.backend.LocalBackend` that merges concurrent generation calls.

    It wraps any backend by composition and is one itself: :meth:`generate`,
    :meth:`agenerate`, :meth:`generate_from_ids` and :meth:`agenerate_from_ids` join the next
    batch; everything else (``name``, ``fingerprint``, ``context_window``, ``capabilities``,
    template, tokenizer, follow-up turns) is the wrapped backend's, delegated one by one.

    Thread-safe and asyncio-friendly: :meth:`generate_from_ids` / :meth:`generate` block the
    calling thread until its answers are ready; :meth:`agenerate` and
    :meth:`agenerate_from_ids` await them without holding a thread.

    Example:
        >>> slm = MicroBatcher(LocalModel(max_batch_size=16), window_ms=5)  # doctest: +SKIP
        >>> router = ConfRouter(local_model=slm)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: LocalBackend,
        *,
        window_ms: float = DEFAULT_WINDOW_MS,
        max_batch: int | None = None,
    ) -> None:
        """Wrap a loaded local backend.

        Args:
            model: The backend that generates (a :class:`~confroute.local.LocalModel` still
                splits a merged batch into forward passes of its own ``max_batch_size``: load
                it with ``max_batch_size >= max_batch``).
            window_ms: How long the first call of a batch waits for more calls. Calls that
                queued while the previous batch ran join the next one without waiting.
            max_batch: Most prompts (samples counted) merged into one call; defaults to the
                backend's ``max_batch_size`` where it has one, else
                :data:`DEFAULT_MAX_BATCH`. A single larger call still runs, alone.

        Raises:
            ConfigurationError: ``model`` is not a LocalBackend, is already a MicroBatcher, or
                a setting is out of range.
        """
        if isinstance(model, MicroBatcher) or not isinstance(model, LocalBackend):
            raise ConfigurationError(
                "MicroBatcher wraps one LocalBackend (not another MicroBatcher); got "
                f"{type(model).__name__}. Load it with LocalModel(...) first, or pass an object "
                "that implements confroute.backend.LocalBackend."
            )
        if window_ms < 0:
            raise ConfigurationError(f"window_ms must be >= 0, got {window_ms}.")
        own = getattr(model, "max_batch_size", DEFAULT_MAX_BATCH)  # a LocalModel's pass size
        chosen = own if max_batch is None else max_batch
        if chosen < 1:
            raise ConfigurationError(f"max_batch must be >= 1, got {max_batch}.")
        self._inner = model
        self.window_s = window_ms / 1000.0
        self.max_batch = int(chosen)
        self.stats = BatchStats()
        self._queue: queue.SimpleQueue[Request | None] = queue.SimpleQueue()
        self._start_lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._closed = False
        self._finalizer = weakref.finalize(self, self._queue.put, STOP)

    # -- the wrapped backend, delegated explicitly ---------------------------------------------

    @property
    def wrapped(self) -> LocalBackend:
        """The backend that generates."""
        return self._inner

    @property
    def name(self) -> str:
        """The wrapped backend's model name."""
        return self._inner.name

    @property
    def fingerprint(self) -> str:
        """The wrapped backend's weights hash."""
        return self._inner.fingerprint

    @property
    def context_window(self) -> int:
        """The wrapped backend's context window."""
        return self._inner.context_window

    @property
    def capabilities(self) -> Capabilities:
        """The wrapped backend's capabilities (batching changes none of them)."""
        return self._inner.capabilities

    @property
    def tokenizer(self) -> Any:
        """The wrapped backend's tokenizer (AttributeError where it has none)."""
        inner: Any = self._inner
        return inner.tokenizer

    def __repr__(self) -> str:
        """The wrapped backend and the batching settings."""
        return (
            f"MicroBatcher({self._inner!r}, window_ms={self.window_s * 1000:g}, "
            f"max_batch={self.max_batch})"
        )

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        """The wrapped backend's prompt text for a conversation."""
        return self._inner.render(messages, tools)

    def encode(self, text: str) -> list[int]:
        """The wrapped backend's token ids of a prompt text."""
        return self._inner.encode(text)

    def count_tokens(self, messages: Sequence[Mapping[str, Any]]) -> int:
        """Number of prompt tokens of a conversation."""
        return self._inner.count_tokens(messages)

    def vocabulary(self) -> Sequence[tuple[str, int]]:
        """The wrapped backend's ``(token string, id)`` pairs."""
        return self._inner.vocabulary()

    def special_token_ids(self) -> frozenset[int]:
        """The wrapped backend's special token ids."""
        return self._inner.special_token_ids()

    def next_token_logprobs(self, token_ids: Sequence[int], prefix: Any = None) -> np.ndarray:
        """The wrapped backend's next-token log-probabilities (not batched)."""
        return self._inner.next_token_logprobs(token_ids, prefix)

    def continue_greedy(
        self, token_ids: Sequence[int], max_new_tokens: int, prefix: Any = None
    ) -> str:
        """The wrapped backend's greedy continuation (not batched)."""
        return self._inner.continue_greedy(token_ids, max_new_tokens, prefix)

    # -- generation, batched -------------------------------------------------------------------

    def generate(
        self,
        conversations: Sequence[Sequence[Mapping[str, Any]]],
        config: GenerationConfig | None = None,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[Generation]:
        """Render and encode here, then answer in the next batch; blocks until done.

        Raises:
            ContextOverflowError: A prompt plus ``max_new_tokens`` exceeds the context window.
        """
        return self.generate_from_ids(
            self._prompts(conversations, tools), config or GenerationConfig()
        )

    async def agenerate(
        self,
        conversations: Sequence[Sequence[Mapping[str, Any]]],
        config: GenerationConfig | None = None,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[Generation]:
        """Async form of :meth:`generate`; waits for the batch without holding a thread."""
        prompts = self._prompts(conversations, tools)
        return await self.agenerate_from_ids(prompts, config or GenerationConfig())

    def generate_from_ids(
        self, prompts: Sequence[Sequence[int]], config: GenerationConfig
    ) -> list[Generation]:
        """Answer tokenised prompts in the next batch; blocks until they are done.

        Raises:
            ContextOverflowError: A prompt plus ``max_new_tokens`` exceeds the context window
                (raised here, before the prompt joins a batch).
        """
        if not prompts:
            return []
        return self._submit(prompts, config).result()

    async def agenerate_from_ids(
        self, prompts: Sequence[Sequence[int]], config: GenerationConfig
    ) -> list[Generation]:
        """Async form of :meth:`generate_from_ids`."""
        if not prompts:
            return []
        return await asyncio.wrap_future(self._submit(prompts, config))

    def close(self) -> None:
        """Stop the batching thread after the queued calls are answered. Idempotent."""
        with self._start_lock:
            self._closed = True
            worker = self._worker
        if worker is not None and self._finalizer.alive:
            self._finalizer()
            worker.join()

    def __enter__(self) -> MicroBatcher:
        """Use as a context manager that closes the batching thread."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the batching thread."""
        self.close()

    def _prompts(
        self,
        conversations: Sequence[Sequence[Mapping[str, Any]]],
        tools: Sequence[Mapping[str, Any]] | None,
    ) -> list[list[int]]:
        return [self.encode(self.render(c, tools)) for c in conversations]

    def _submit(
        self, prompts: Sequence[Sequence[int]], config: GenerationConfig
    ) -> Future[list[Generation]]:
        check_prompts_fit(
            prompts, config.max_new_tokens, self._inner.context_window, self._inner.name
        )
        future: Future[list[Generation]] = Future()
        request = Request([list(p) for p in prompts], config, future, time.monotonic())
        with self._start_lock:
            if self._closed:
                raise ConfigurationError("This MicroBatcher is closed; create a new one.")
            if self._worker is None:
                self._worker = threading.Thread(
                    target=serve,
                    args=(self._queue, self._inner, self.window_s, self.max_batch, self.stats),
                    name="confroute-microbatcher",
                    daemon=True,
                )
                self._worker.start()
            self.stats.requests += 1
            self._queue.put(request)
        return future
