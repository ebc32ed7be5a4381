"""The calls of ServerModel: one endpoint, retried like an escalation.

:class:`ServerEndpoint` holds the model string, the masked base URL and key and the retry
budget in an :class:`~confroute.attempts.AttemptPlan` (the escalation's: the same call
parameters, back-off and masking of secrets), and makes one chat completion, sync or async,
with retries. A failure that retrying cannot fix, or the last retry's, raises
:class:`~confroute.errors.LocalBackendError`; a prompt the server refuses as too long raises
:class:`~confroute.errors.ContextOverflowError`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import litellm
from pydantic import SecretStr

from confroute.attempts import NOT_RETRYABLE, Attempt, AttemptPlan, RequestOptions
from confroute.errors import (
    ConfigurationError,
    ContextOverflowError,
    LocalBackendError,
    LogprobsUnavailableError,
)
from confroute.generation import GenerationConfig
from confroute.redaction import SecretURL, mask_secret

__all__ = [
    "UNKNOWN_CONTEXT_WINDOW",
    "AsyncCompletion",
    "Completion",
    "SamplesRefusedError",
    "ServerEndpoint",
    "check_provider",
    "count_tokens",
    "known_context_window",
]

logger = logging.getLogger("confroute.server_backend")

UNKNOWN_CONTEXT_WINDOW = 1 << 30
"""The context window reported when neither the caller nor LiteLLM's model map knows it: every
prompt is sent, and a server that refuses one as too long raises ContextOverflowError."""

Completion = Callable[..., Any]
"""``litellm.completion``'s signature: keyword arguments in, a ``ModelResponse`` out."""
AsyncCompletion = Callable[..., Awaitable[Any]]
"""``litellm.acompletion``'s signature."""

T = TypeVar("T")
"""What a call's ``read`` callback makes of the response."""


def known_context_window(model: str) -> int:
    """The model's input limit from LiteLLM's model map, or :data:`UNKNOWN_CONTEXT_WINDOW`."""
    try:
        info = litellm.get_model_info(model)
    except Exception:  # not in the map: a self-hosted alias
        return UNKNOWN_CONTEXT_WINDOW
    window = info.get("max_input_tokens") or info.get("max_tokens")
    return int(window) if isinstance(window, int) and window > 0 else UNKNOWN_CONTEXT_WINDOW


def count_tokens(model: str, messages: Sequence[Mapping[str, Any]]) -> int:
    """Approximate prompt tokens of a conversation (``litellm.token_counter``, tiktoken).

    Always tiktoken's ``cl100k_base``, which LiteLLM ships: for some model names (Llama 2/3,
    Cohere) LiteLLM would otherwise download a tokenizer from the Hugging Face hub on first
    use, a network fetch a router must not make in the middle of a request. The count can
    differ from the server's by some percent (the server's own count is in each generation's
    ``prompt_tokens``); where LiteLLM cannot count, about 4 characters a token.
    """
    try:
        return int(litellm.token_counter(model="", messages=[dict(m) for m in messages]))
    except Exception:
        logger.debug("litellm.token_counter failed for %s; estimating.", model)
        return len(json.dumps(list(messages), default=str)) // 4 + 1


def check_provider(model: str) -> str:
    """LiteLLM's provider for ``model``; refuses one it cannot route or that drops log-probs.

    Raises:
        ConfigurationError: ``model`` is not a string LiteLLM knows a provider for.
        LogprobsUnavailableError: LiteLLM's provider for ``model`` does not pass ``logprobs``
            (``ollama/``, ``ollama_chat/``: the message names the string that works).
    """
    try:
        _, provider, _, _ = litellm.get_llm_provider(model)
    except Exception:
        raise ConfigurationError(
            f"{model!r} is not a LiteLLM model string with a provider LiteLLM knows; write "
            "it as 'hosted_vllm/<served name>', 'openai/<served name>' (with api_base= for any "
            "OpenAI-compatible server) or another LiteLLM provider prefix."
        ) from None
    supported = litellm.get_supported_openai_params(model=model, custom_llm_provider=provider)
    if supported is None or "logprobs" in supported:
        return str(provider)
    hint = ""
    if provider in ("ollama", "ollama_chat"):
        hint = (
            " For Ollama (0.12.11 or later) use its OpenAI-compatible endpoint: ServerModel("
            f"'openai/{model.split('/', 1)[1]}', api_base='http://localhost:11434/v1')."
        )
    raise LogprobsUnavailableError(
        f"LiteLLM's {provider!r} provider does not pass logprobs/top_logprobs, so {model!r} "
        f"cannot report the token log-probabilities confroute scores.{hint} Any "
        "OpenAI-compatible server that returns them works as 'openai/<name>' with api_base=."
    )


def _check_settings(values: Mapping[str, Any]) -> None:
    """Refuse out-of-range numbers (integers and seconds) with the setting's name."""
    for label, low in (("top_logprobs", 1), ("max_retries", 0), ("max_concurrency", 1)):
        value = values[label]
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigurationError(f"{label} must be an integer >= {low}, got {value!r}.")
    for label in ("timeout", "backoff_s"):
        value = values[label]
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
            or (label == "timeout" and value == 0)
        ):
            bound = "> 0" if label == "timeout" else ">= 0"
            raise ConfigurationError(f"{label} must be a finite number {bound}, got {value!r}.")


class SamplesRefusedError(Exception):
    """The server refused a request for ``n`` > 1 answers (llama.cpp's ``llama-server`` does)."""


class ServerEndpoint:
    """One model on one server: the call parameters and the retried sync and async calls.

    Its repr shows the model and the masked base URL, never the key.
    """

    def __init__(
        self,
        model: str,
        *,
        api_base: str | SecretStr | None,
        api_key: str | SecretStr | None,
        top_logprobs: int,
        timeout: float,
        max_retries: int,
        backoff_s: float,
        max_concurrency: int,
        context_window: int,
        completion: Completion | None = None,
        acompletion: AsyncCompletion | None = None,
    ) -> None:
        """Check the settings and keep the secrets wrapped (see ``ServerModel``'s arguments).

        Raises:
            ConfigurationError: A setting is out of range or of the wrong type.
        """
        if not model or not isinstance(model, str):
            raise ConfigurationError("model must be a LiteLLM model string, e.g. 'openai/NAME'.")
        _check_settings(
            {
                "top_logprobs": top_logprobs,
                "max_retries": max_retries,
                "max_concurrency": max_concurrency,
                "timeout": timeout,
                "backoff_s": backoff_s,
            }
        )
        if isinstance(api_base, SecretStr):
            api_base = api_base.get_secret_value()
        if api_base is not None and not isinstance(api_base, str):
            raise ConfigurationError(
                f"api_base must be a URL string or a SecretStr, got {type(api_base).__name__}."
            )
        if api_key is not None and not isinstance(api_key, (str, SecretStr)):
            raise ConfigurationError(
                f"api_key must be a string or a SecretStr, got {type(api_key).__name__}."
            )
        self.model = model
        self.max_concurrency = max_concurrency
        self.context_window = context_window
        self.accepts_n = True
        """False once the server refused or ignored ``n`` > 1: samples are asked one by one."""
        self.plan = AttemptPlan(
            models=(model,),
            api_base=SecretURL(api_base) if api_base else None,
            api_key=SecretStr(api_key) if isinstance(api_key, str) else api_key,
            timeout=float(timeout),
            max_retries=max_retries,
            backoff_s=float(backoff_s),
            top_logprobs=top_logprobs,
        )
        self.completion = completion
        self.acompletion = acompletion
        # LiteLLM prints provider hints to stdout on a failure unless this process-wide flag
        # is set (see Escalation.__init__); a library must not write to stdout.
        litellm.suppress_debug_info = True

    @property
    def server(self) -> str:
        """The model and its base URL with any userinfo masked (for messages)."""
        base = self.plan.api_base
        return f"{self.model} at {base}" if base is not None else self.model

    def __repr__(self) -> str:
        """Model and masked base URL; never the key."""
        base = repr(str(self.plan.api_base)) if self.plan.api_base is not None else "None"
        return f"ServerEndpoint(model={self.model!r}, api_base={base})"

    def params(
        self,
        messages: Sequence[Mapping[str, Any]],
        config: GenerationConfig,
        tools: Sequence[Mapping[str, Any]] | None,
        *,
        n: int = 1,
        seed: int | None = None,
    ) -> dict[str, Any]:
        """One call's LiteLLM parameters, log-probabilities asked for (secrets still wrapped)."""
        options = RequestOptions(
            temperature=config.temperature,
            max_tokens=config.max_new_tokens,
            stop=config.stop or None,
            tools=tools,
        )
        params = self.plan.params(self.model, [dict(m) for m in messages], options)
        if config.temperature > 0 and config.top_p < 1:
            params["top_p"] = config.top_p
        if seed is not None:
            params["seed"] = seed
        if n > 1:
            params["n"] = n
        return params

    def _failed(
        self, number: int, error: BaseException, errors: list[str], params: Mapping[str, Any]
    ) -> float | None:
        """Record a failed call; the delay before the next try, or None to give up.

        Raises:
            ContextOverflowError: The server refused the prompt as too long.
            SamplesRefusedError: The server refused a call asking for ``n`` > 1 answers.
        """
        if isinstance(error, litellm.ContextWindowExceededError):
            raise ContextOverflowError(
                f"{self.server} refused the prompt as longer than its context window "
                f"({self.plan.describe(self.model, error)[:300]}). Shorten the prompt or lower "
                "max_new_tokens.",
                prompt_tokens=count_tokens(self.model, params["messages"]),
                context_window=self.context_window,
            ) from None
        refusals = (litellm.BadRequestError, litellm.InternalServerError)  # llama-server: 500
        if params.get("n", 1) > 1 and isinstance(error, refusals):
            self.accepts_n = False
            raise SamplesRefusedError(self.plan.describe(self.model, error)) from None
        errors.append(self.plan.describe(self.model, error))
        if isinstance(error, NOT_RETRYABLE) or number >= self.plan.max_retries:
            return None
        delay = self.plan.delay(number, error)
        logger.warning("Local model %s failed; retry in %.2fs: %s", self.server, delay, errors[-1])
        return delay

    def _unavailable(self, errors: list[str]) -> LocalBackendError:
        message = (
            f"The local model {self.server} did not answer after {len(errors)} call(s): "
            f"{'; '.join(errors)}. Check that the server is running and that api_base is its "
            "OpenAI-compatible base URL (usually ending in /v1)."
        )
        message = mask_secret(message, self.plan.api_key, self.plan.api_base)
        return LocalBackendError(message, model=self.model, attempts=len(errors), errors=errors)

    def call(self, params: dict[str, Any], read: Callable[[Any, float], T]) -> T:
        """Make the call, retrying; ``read(response, latency_s)`` of the first answer.

        An error ``read`` raises is not retried.

        Raises:
            LocalBackendError: Every try failed (the message names each cause, masked).
            ContextOverflowError: The server refused the prompt as too long.
            SamplesRefusedError: The server refused ``n`` > 1 (ask one answer per call).
        """
        errors: list[str] = []
        for number in range(self.plan.max_retries + 1):
            completion = self.completion or litellm.completion
            started = time.perf_counter()
            try:
                response = completion(**Attempt(self.model, number, params).litellm_kwargs())
            except Exception as error:
                delay = self._failed(number, error, errors, params)
                if delay is None:
                    break
                time.sleep(delay)
                continue
            return read(response, time.perf_counter() - started)
        raise self._unavailable(errors)

    async def acall(self, params: dict[str, Any], read: Callable[[Any, float], T]) -> T:
        """Async form of :meth:`call` (``litellm.acompletion``)."""
        errors: list[str] = []
        for number in range(self.plan.max_retries + 1):
            completion = self.acompletion or litellm.acompletion
            started = time.perf_counter()
            try:
                response = await completion(**Attempt(self.model, number, params).litellm_kwargs())
            except Exception as error:
                delay = self._failed(number, error, errors, params)
                if delay is None:
                    break
                await asyncio.sleep(delay)
                continue
            return read(response, time.perf_counter() - started)
        raise self._unavailable(errors)
