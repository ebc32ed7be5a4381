"""The small model behind an OpenAI-compatible server, reached through LiteLLM (ServerModel).

Any server whose chat completions return ``logprobs`` / ``top_logprobs`` can be confroute's
SLM: llama.cpp's server, vLLM (``hosted_vllm/...``), Ollama's OpenAI-compatible endpoint
(``openai/<name>`` with ``api_base="http://HOST:11434/v1"``), LM Studio, or a hosted API. The
backend is reached by messages only (``capabilities.tokenizer`` is False): one chat completion
per conversation gives the answer and its per-token log-probabilities and top-k alternatives;
p_true and verbalized 2-step are a second call (:class:`~confroute.backend.MessageFollowUp`);
jaccard_degree asks for ``n`` samples. The API reports neither token ids (each is ``-1``) nor
the full distribution, so there are no entropies (``mean_token_entropy`` is refused), no
hidden states (no probes) and no per-step monitor (no early escalation).

Retries, back-off, the call parameters and the masking of secrets are the escalation's
(:class:`~confroute.attempts.AttemptPlan`, driven by
:class:`~confroute.server_calls.ServerEndpoint`); the key, and a key in the base URL, never
appear in a repr, a log line or an error.

Example:
    >>> slm = ServerModel("openai/qwen2.5-coder-0.5b", api_base="http://127.0.0.1:8080/v1")
    >>> ConfRouter(local_model=slm, strong_model="openai/gpt-4o-mini")  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np
from pydantic import SecretStr

from confroute.backend import Capabilities
from confroute.errors import ConfigurationError
from confroute.generation import Generation, GenerationConfig, TokenAlternative
from confroute.server_calls import (
    UNKNOWN_CONTEXT_WINDOW,
    AsyncCompletion,
    Completion,
    SamplesRefusedError,
    ServerEndpoint,
    check_provider,
    count_tokens,
    known_context_window,
)
from confroute.server_response import NO_TOKEN_ID, read_generations
from confroute.settings import RouterSettings

__all__ = ["NO_KEY", "NO_TOKEN_ID", "UNKNOWN_CONTEXT_WINDOW", "ServerModel"]

_DEFAULT_TIMEOUT: float = RouterSettings.model_fields["timeout"].default
_DEFAULT_MAX_RETRIES: int = RouterSettings.model_fields["max_retries"].default

NO_KEY = "no-key"
"""The key sent to an ``openai/`` server given no ``api_key`` (servers that want none ignore
it), so that LiteLLM never forwards the environment's ``OPENAI_API_KEY`` to another host."""

_NO_TOKENIZER = (
    "{name} is a model behind an HTTP API (ServerModel): it has no tokenizer and runs no token "
    "ids, so {method}() is not available. Check `capabilities.tokenizer` and use generate() "
    "with messages (and follow_up_alternatives() / follow_up_reply() for follow-ups)."
)

Messages = Sequence[Mapping[str, Any]]
"""A conversation in the OpenAI shape."""
Tools = Sequence[Mapping[str, Any]] | None
"""OpenAI-shaped tool definitions, or None."""


class ServerModel:
    """A small model served over an OpenAI-compatible API, as a ``LocalBackend``.

    Capabilities: log-probabilities and ``top_logprobs`` alternatives of each answer token,
    samples, follow-ups as a second call; no tokenizer, entropies, kept prefix, hidden states
    or step monitor. Token-level methods (:meth:`render`, :meth:`encode`, :meth:`vocabulary`,
    :meth:`generate_from_ids`, :meth:`next_token_logprobs`, :meth:`continue_greedy`) raise
    :class:`~confroute.errors.ConfigurationError`. Thread-safe; :meth:`agenerate` never
    blocks the event loop.

    Each call is retried ``max_retries`` times with back-off on retryable errors (connection,
    timeout, 5xx, 429), like an escalation; a server that stays down raises
    :class:`~confroute.errors.LocalBackendError` naming the model and the masked base URL.
    """

    def __init__(
        self,
        model: str,
        *,
        api_base: str | SecretStr | None = None,
        api_key: str | SecretStr | None = None,
        top_logprobs: int = 5,
        timeout: float = _DEFAULT_TIMEOUT,
        max_retries: int = _DEFAULT_MAX_RETRIES,
        context_window: int | None = None,
        name: str | None = None,
        fingerprint: str | None = None,
        max_concurrency: int = 16,
        backoff_s: float = 0.5,
        completion: Completion | None = None,
        acompletion: AsyncCompletion | None = None,
    ) -> None:
        """Configure the server model.

        Args:
            model: A LiteLLM model string: ``"hosted_vllm/Qwen/Qwen2.5-1.5B-Instruct"``,
                ``"openai/<served name>"`` for any OpenAI-compatible server (with
                ``api_base``), or a hosted provider's model.
            api_base: The server's base URL (usually ending in ``/v1``); a key in its userinfo
                is a secret (:class:`~confroute.redaction.SecretURL`).
            api_key: The server's key, if it wants one; never logged or reported. With an
                ``openai/`` model, an ``api_base`` and no key, :data:`NO_KEY` is sent (never
                the environment's ``OPENAI_API_KEY``).
            top_logprobs: Alternatives asked for per token (vLLM caps it at
                ``--max-logprobs``, 20 by default; OpenAI at 20).
            timeout: Seconds per call (default: :class:`~confroute.settings.RouterSettings`'s).
            max_retries: Retries per call for retryable errors (default: the settings').
            context_window: Prompt plus answer tokens the model holds; None reads LiteLLM's
                model map, else :data:`UNKNOWN_CONTEXT_WINDOW` (the server's own refusal of
                a too-long prompt then raises :class:`~confroute.errors.ContextOverflowError`).
            name: The model's name in decisions and profiles (default: ``model``).
            fingerprint: Identifies the weights for calibration profiles (default: a hash of
                ``model``; pass e.g. the GGUF file's sha256 to tie profiles to the weights).
            max_concurrency: Most calls in flight at once for one :meth:`generate` /
                :meth:`agenerate` (the server's own batching does the rest).
            backoff_s: First back-off delay; doubles per retry, with jitter.
            completion: Called instead of ``litellm.completion`` (tests, custom transports).
            acompletion: Called instead of ``litellm.acompletion``.

        Raises:
            ConfigurationError: A setting is out of range, or LiteLLM cannot route ``model``.
            LogprobsUnavailableError: LiteLLM's provider for ``model`` drops log-probabilities
                (``ollama/`` and ``ollama_chat/``: the message names the working string).
        """
        if context_window is not None and (
            isinstance(context_window, bool)
            or not isinstance(context_window, int)
            or context_window < 2
        ):
            raise ConfigurationError(
                f"context_window must be an integer >= 2, got {context_window!r}."
            )
        provider = check_provider(model)
        if api_key is None and api_base and provider == "openai":
            # LiteLLM's openai/ provider would send OPENAI_API_KEY from the environment to
            # this server; a server that wants no key gets a placeholder instead.
            api_key = NO_KEY
        window = context_window or known_context_window(model)
        self._endpoint = ServerEndpoint(
            model,
            api_base=api_base,
            api_key=api_key,
            top_logprobs=top_logprobs,
            timeout=timeout,
            max_retries=max_retries,
            backoff_s=backoff_s,
            max_concurrency=max_concurrency,
            context_window=window,
            completion=completion,
            acompletion=acompletion,
        )
        self.model = model
        self.name = name or model
        self.fingerprint = (
            fingerprint or hashlib.sha256(f"server:{model}".encode()).hexdigest()[:16]
        )
        self.context_window = window
        self.capabilities = Capabilities(
            backend="server",
            tokenizer=False,
            logprobs=True,
            top_logprobs=top_logprobs,
            entropies=False,
            samples=True,
            follow_up=True,
            kept_prefix=False,
            hidden_state=False,
            step_monitor=False,
        )

    @property
    def server(self) -> str:
        """The model and its base URL with any userinfo masked (for messages)."""
        return self._endpoint.server

    def __repr__(self) -> str:
        """Model and masked base URL; never the key."""
        base = self._endpoint.plan.api_base
        shown = repr(str(base)) if base is not None else "None"
        return f"ServerModel(model={self.model!r}, api_base={shown})"

    # -- what a model behind an API cannot do ----------------------------------------------

    def _no_tokenizer(self, method: str) -> ConfigurationError:
        return ConfigurationError(_NO_TOKENIZER.format(name=self.name, method=method))

    def render(self, messages: Messages, tools: Tools = None) -> str:
        """Not available: the server applies its own chat template. Raises ConfigurationError."""
        raise self._no_tokenizer("render")

    def encode(self, text: str) -> list[int]:
        """Not available (no tokenizer). Raises ConfigurationError."""
        raise self._no_tokenizer("encode")

    def vocabulary(self) -> Sequence[tuple[str, int]]:
        """Not available (no tokenizer). Raises ConfigurationError."""
        raise self._no_tokenizer("vocabulary")

    def generate_from_ids(
        self, prompts: Sequence[Sequence[int]], config: GenerationConfig
    ) -> list[Generation]:
        """Not available (the API takes messages). Raises ConfigurationError."""
        raise self._no_tokenizer("generate_from_ids")

    def next_token_logprobs(self, token_ids: Sequence[int], prefix: Any = None) -> np.ndarray:
        """Not available (no full distribution). Raises ConfigurationError."""
        raise self._no_tokenizer("next_token_logprobs")

    def continue_greedy(
        self, token_ids: Sequence[int], max_new_tokens: int, prefix: Any = None
    ) -> str:
        """Not available (no token ids; use :meth:`follow_up_reply`). Raises ConfigurationError."""
        raise self._no_tokenizer("continue_greedy")

    def special_token_ids(self) -> frozenset[int]:
        """None are known (the API reports text only)."""
        return frozenset()

    def count_tokens(self, messages: Messages) -> int:
        """Approximate prompt tokens of a conversation (``litellm.token_counter``).

        Counted with tiktoken (never a tokenizer download), so this can differ from the
        server's count by some percent; each generation's ``prompt_tokens`` is the server's
        own ``usage.prompt_tokens``.
        """
        return count_tokens(self.model, messages)

    # -- answers ---------------------------------------------------------------------------

    def _reader(self, messages: Messages) -> Callable[[Any, float], list[Generation]]:
        """``read(response, latency_s)`` for the endpoint's calls on ``messages``."""

        def read(response: Any, latency_s: float) -> list[Generation]:
            return read_generations(
                response,
                model=self.name,
                server=self.server,
                latency_s=latency_s,
                prompt_tokens=0
                if getattr(response, "usage", None)
                else self.count_tokens(messages),
            )

        return read

    def _check(self, config: GenerationConfig) -> None:
        if config.hidden_layer is not None or config.step_monitor is not None:
            raise ConfigurationError(
                f"{self.name} (ServerModel) reports no hidden states and runs no step monitor; "
                "check `capabilities.hidden_state` / `capabilities.step_monitor` first."
            )

    @staticmethod
    def _seed(config: GenerationConfig, index: int) -> int | None:
        """The seed of the ``index``-th sample drawn in a call of its own (each must differ)."""
        return None if config.seed is None else config.seed + index

    def _answer(
        self, messages: Messages, config: GenerationConfig, tools: Tools
    ) -> list[Generation]:
        """The ``num_samples`` answers to one conversation."""
        wanted, read, endpoint = config.num_samples, self._reader(messages), self._endpoint
        n = wanted if endpoint.accepts_n else 1
        try:
            found = endpoint.call(
                endpoint.params(messages, config, tools, n=n, seed=config.seed), read
            )
        except SamplesRefusedError:  # a server that refuses `n` > 1 (llama.cpp's llama-server)
            found = []
        # A server that ignores `n` (llama-cpp-python's server does) returns fewer choices than
        # asked: the rest are drawn in calls of their own, each with its own seed.
        if len(found) < wanted:
            endpoint.accepts_n = False
        while len(found) < wanted:
            seed = self._seed(config, len(found))
            found += endpoint.call(endpoint.params(messages, config, tools, seed=seed), read)
        return found[:wanted]

    async def _aanswer(
        self, messages: Messages, config: GenerationConfig, tools: Tools, limit: asyncio.Semaphore
    ) -> list[Generation]:
        """Async form of :meth:`_answer`; the samples of their own calls are drawn concurrently."""
        wanted, read, endpoint = config.num_samples, self._reader(messages), self._endpoint

        async def ask(n: int, seed: int | None) -> list[Generation]:
            async with limit:
                return await endpoint.acall(
                    endpoint.params(messages, config, tools, n=n, seed=seed), read
                )

        found: list[Generation] = []
        if endpoint.accepts_n or wanted == 1:
            with contextlib.suppress(SamplesRefusedError):  # see _answer
                found = await ask(wanted, config.seed)
        if len(found) < wanted:  # the server refused or ignored `n`: see _answer
            endpoint.accepts_n = False
            more = await asyncio.gather(
                *(ask(1, self._seed(config, i)) for i in range(len(found), wanted))
            )
            found += [g for batch in more for g in batch]
        return found[:wanted]

    def generate(
        self,
        conversations: Sequence[Messages],
        config: GenerationConfig | None = None,
        *,
        tools: Tools = None,
    ) -> list[Generation]:
        """Answer each conversation (``num_samples`` consecutive results each), concurrently.

        ``config.keep_cache`` is ignored (a follow-up is a call of its own). Every token's and
        alternative's id is :data:`NO_TOKEN_ID` (the API reports none) and ``entropies`` are
        empty; tool calls the server parsed are in the text, in the tagged form
        :func:`confroute.tools.parse_tool_calls` reads, and as returned in
        ``extras["tool_calls"]``.

        Raises:
            LocalBackendError: The server did not answer after the retries.
            LogprobsUnavailableError: The server returned an answer without log-probabilities.
            ContextOverflowError: The server refused a prompt as too long.
            ConfigurationError: ``config`` asks for hidden states or a step monitor.
        """
        config = config or GenerationConfig()
        self._check(config)
        if len(conversations) <= 1:
            return [g for c in conversations for g in self._answer(c, config, tools)]
        workers = min(self._endpoint.max_concurrency, len(conversations))
        with ThreadPoolExecutor(workers, thread_name_prefix="confroute-server") as pool:
            answer = partial(self._answer, config=config, tools=tools)
            batches = list(pool.map(answer, conversations))
        return [g for batch in batches for g in batch]

    async def agenerate(
        self,
        conversations: Sequence[Messages],
        config: GenerationConfig | None = None,
        *,
        tools: Tools = None,
    ) -> list[Generation]:
        """Async form of :meth:`generate` (``litellm.acompletion``, ``asyncio.gather``)."""
        config = config or GenerationConfig()
        self._check(config)
        limit = asyncio.Semaphore(self._endpoint.max_concurrency)
        batches = await asyncio.gather(
            *(self._aanswer(c, config, tools, limit) for c in conversations)
        )
        return [g for batch in batches for g in batch]

    # -- follow-ups (MessageFollowUp) ------------------------------------------------------

    def follow_up_alternatives(
        self, messages: Messages, tools: Tools = None
    ) -> tuple[TokenAlternative, ...]:
        """The top-k alternatives of the reply's first token (one greedy call of one token)."""
        config = GenerationConfig(max_new_tokens=1, temperature=0.0)
        [generation] = self._answer(messages, config, tools)
        return generation.top_logprobs[0] if generation.top_logprobs else ()

    def follow_up_reply(
        self, messages: Messages, tools: Tools = None, max_new_tokens: int = 8
    ) -> str:
        """The greedy reply to ``messages``, at most ``max_new_tokens`` tokens."""
        config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0)
        [generation] = self._answer(messages, config, tools)
        return generation.text

    async def afollow_up_alternatives(
        self, messages: Messages, tools: Tools = None
    ) -> tuple[TokenAlternative, ...]:
        """Async form of :meth:`follow_up_alternatives` (``AsyncMessageFollowUp``)."""
        [generation] = await self._afollow_up(messages, tools, 1)
        return generation.top_logprobs[0] if generation.top_logprobs else ()

    async def afollow_up_reply(
        self, messages: Messages, tools: Tools = None, max_new_tokens: int = 8
    ) -> str:
        """Async form of :meth:`follow_up_reply`."""
        [generation] = await self._afollow_up(messages, tools, max_new_tokens)
        return generation.text

    async def _afollow_up(self, messages: Messages, tools: Tools, tokens: int) -> list[Generation]:
        config = GenerationConfig(max_new_tokens=tokens, temperature=0.0)
        limit = asyncio.Semaphore(self._endpoint.max_concurrency)
        return await self._aanswer(messages, config, tools, limit)
