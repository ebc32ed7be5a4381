"""Escalation to a strong model through LiteLLM: any provider, with retries and fallbacks.

``confroute/__init__.py`` sets ``LITELLM_LOCAL_MODEL_COST_MAP=True`` (unless the user set it)
before LiteLLM is imported, so the cost map is read from the installed package, not fetched.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from confroute.errors import ConfigurationError, EscalationError

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import contextlib

import litellm

__all__ = ["Escalation", "EscalationResult", "StreamDelta"]

# LiteLLM prints provider hints to stdout on some errors; a library must not write to stdout.
litellm.suppress_debug_info = True

logger = logging.getLogger(__name__)

LOCAL_PROVIDER = "confroute"
"""LiteLLM provider prefix of the in-process bundled models (see :mod:`confroute.provider`)."""

_NOT_RETRYABLE = (
    litellm.AuthenticationError,
    litellm.BadRequestError,
    litellm.NotFoundError,
    litellm.PermissionDeniedError,
)


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


@dataclass
class StreamDelta:
    """One piece of a streamed escalation: a text delta, or the final result (``done``)."""

    text: str = ""
    result: EscalationResult | None = None


class Escalation:
    """Calls a strong model through LiteLLM, with timeout, retries with back-off, and fallbacks.

    Example:
        >>> Escalation("openai/gpt-4o-mini", api_key="sk-...")  # doctest: +SKIP
        >>> Escalation("confroute/qwen2.5-coder-1.5b-instruct")  # in-process, no key
    """

    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key: str | SecretStr | None = None,
        timeout: float = 120.0,
        max_retries: int = 2,
        backoff_s: float = 0.5,
        fallbacks: Sequence[str] = (),
        top_logprobs: int | None = None,
    ) -> None:
        """Configure the strong model.

        Args:
            model: A LiteLLM model string (``"openai/gpt-4o-mini"``,
                ``"confroute/qwen2.5-coder-1.5b-instruct"``, ``"hosted_vllm/..."``, ...).
            api_base: Base URL of an OpenAI-compatible server, if any.
            api_key: The provider key; kept as a secret and never logged or reported.
            timeout: Seconds per call.
            max_retries: Retries per model after the first try, for retryable errors.
            backoff_s: First back-off delay; doubles per retry (with jitter); a 429's
                Retry-After is honoured when longer.
            fallbacks: Models tried in order after ``model`` fails (same base URL and key).
            top_logprobs: Ask for log-probabilities with this many alternatives.
        """
        if not model or not isinstance(model, str):
            raise ConfigurationError("The strong model must be a LiteLLM model string.")
        if timeout <= 0:
            raise ConfigurationError(f"timeout must be > 0 seconds, got {timeout}.")
        if max_retries < 0:
            raise ConfigurationError(f"max_retries must be >= 0, got {max_retries}.")
        if backoff_s < 0:
            raise ConfigurationError(f"backoff_s must be >= 0, got {backoff_s}.")
        self.model = model
        self.api_base = api_base
        self.api_key: SecretStr | None = (
            api_key if isinstance(api_key, SecretStr) or api_key is None else SecretStr(api_key)
        )
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.fallbacks = tuple(fallbacks)
        self.top_logprobs = top_logprobs
        if model.startswith(LOCAL_PROVIDER + "/") or any(
            f.startswith(LOCAL_PROVIDER + "/") for f in self.fallbacks
        ):
            from confroute.provider import register_provider

            register_provider()

    def __repr__(self) -> str:
        """Model, base URL and fallbacks; never the key."""
        key = "'**********'" if self.api_key is not None else "None"
        return (
            f"Escalation(model={self.model!r}, api_base={self.api_base!r}, api_key={key}, "
            f"fallbacks={list(self.fallbacks)!r})"
        )

    # -- helpers ---------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        if self.api_key is not None:
            secret = self.api_key.get_secret_value()
            if secret:
                text = text.replace(secret, "**********")
        return text

    def _describe(self, model: str, error: BaseException) -> str:
        return self._redact(f"{model}: {type(error).__name__}: {error}")[:500]

    def _request(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        temperature: float | None,
        max_tokens: int | None,
        stop: Sequence[str] | None,
        tools: Sequence[Mapping[str, Any]] | None,
        stream: bool,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": model,
            "messages": [dict(m) for m in messages],
            "timeout": self.timeout,
            "num_retries": 0,
        }
        if self.api_base:
            params["api_base"] = self.api_base
        if self.api_key is not None:
            params["api_key"] = self.api_key.get_secret_value()
        if temperature is not None:
            params["temperature"] = temperature
        if max_tokens is not None:
            params["max_tokens"] = max_tokens
        if stop:
            params["stop"] = list(stop)
        if tools:
            params["tools"] = [dict(t) for t in tools]
        if self.top_logprobs is not None:
            params["logprobs"] = True
            params["top_logprobs"] = self.top_logprobs
        if stream:
            params["stream"] = True
            params["stream_options"] = {"include_usage": True}
        return params

    def _delay(self, attempt: int, error: BaseException) -> float:
        delay = self.backoff_s * (2**attempt) * (1 + random.random() * 0.25)
        response = getattr(error, "response", None)
        headers = getattr(response, "headers", None) or {}
        retry_after = headers.get("retry-after") if hasattr(headers, "get") else None
        if retry_after is not None:
            with contextlib.suppress(ValueError):
                delay = max(delay, float(retry_after))
        return float(min(delay, self.timeout))

    def _on_error(
        self, model: str, attempt: int, error: BaseException, errors: list[str], streamed: bool
    ) -> float | None:
        """Record a failure; return the delay before retrying, or None to give up on ``model``."""
        errors.append(self._describe(model, error))
        if streamed or isinstance(error, _NOT_RETRYABLE) or attempt == self.max_retries:
            logger.warning("Escalation to %s failed: %s", model, errors[-1])
            return None
        delay = self._delay(attempt, error)
        logger.warning("Retrying %s in %.2fs after: %s", model, delay, errors[-1])
        return delay

    def _plan(self) -> list[str]:
        return [self.model, *self.fallbacks]

    def _result(
        self, model: str, response: Any, started: float, attempts: int, errors: list[str]
    ) -> EscalationResult:
        choice = response.choices[0]
        message = choice.message
        tool_calls = [
            tc.model_dump() if hasattr(tc, "model_dump") else dict(tc)
            for tc in (getattr(message, "tool_calls", None) or [])
        ]
        usage = getattr(response, "usage", None)
        logprobs = getattr(choice, "logprobs", None)
        if logprobs is not None and hasattr(logprobs, "model_dump"):
            logprobs = logprobs.model_dump()
        return EscalationResult(
            text=message.content or "",
            model=model,
            tool_calls=tool_calls,
            prompt_tokens=getattr(usage, "prompt_tokens", None),
            completion_tokens=getattr(usage, "completion_tokens", None),
            cost_usd=self._cost(model, response),
            latency_s=time.perf_counter() - started,
            attempts=attempts,
            logprobs=logprobs if isinstance(logprobs, dict) else None,
            finish_reason=getattr(choice, "finish_reason", None),
            errors=errors,
        )

    @staticmethod
    def _cost(model: str, response: Any) -> float | None:
        if model.startswith(LOCAL_PROVIDER + "/"):
            return 0.0
        try:
            return float(litellm.completion_cost(completion_response=response))
        except Exception:
            logger.debug("No price for %s in LiteLLM's cost map.", model)
            return None

    def _failure(self, attempts: int, errors: list[str]) -> EscalationError:
        last = self._plan()[-1]
        detail = "; ".join(errors) or "no attempt was made"
        return EscalationError(
            f"Escalation failed after {attempts} call(s) to {', '.join(self._plan())}: {detail}",
            provider=last,
            attempts=attempts,
            errors=errors,
        )

    # -- calls -----------------------------------------------------------------------------

    def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        stop: Sequence[str] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> EscalationResult:
        """Ask the strong model; retry, then fall back.

        Raises:
            EscalationError: Every model failed; it lists each failure (secrets redacted).
        """
        started = time.perf_counter()
        attempts, errors = 0, list[str]()
        for model in self._plan():
            for attempt in range(self.max_retries + 1):
                attempts += 1
                params = self._request(
                    model,
                    messages,
                    temperature=temperature,
                    max_tokens=max_tokens,
                    stop=stop,
                    tools=tools,
                    stream=False,
                )
                try:
                    response = litellm.completion(**params)
                except Exception as error:
                    delay = self._on_error(model, attempt, error, errors, streamed=False)
                    if delay is None:
                        break
                    time.sleep(delay)
                    continue
                return self._result(model, response, started, attempts, errors)
        raise self._failure(attempts, errors)

    async def acomplete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        stop: Sequence[str] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> EscalationResult:
        """Async form of :meth:`complete` (``litellm.acompletion``)."""
        started = time.perf_counter()
        attempts, errors = 0, list[str]()
        for model in self._plan():
            for attempt in range(self.max_retries + 1):
                attempts += 1
                params = self._request(
                    model,
                    messages,
                    temperature=temperature,
                    max_tokens=max_tokens,
                    stop=stop,
                    tools=tools,
                    stream=False,
                )
                try:
                    response = await litellm.acompletion(**params)
                except Exception as error:
                    delay = self._on_error(model, attempt, error, errors, streamed=False)
                    if delay is None:
                        break
                    await asyncio.sleep(delay)
                    continue
                return self._result(model, response, started, attempts, errors)
        raise self._failure(attempts, errors)

    def stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        stop: Sequence[str] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> Iterator[StreamDelta]:
        """Stream the strong model's answer: text deltas, then one delta holding the result.

        Retries and fallbacks apply until the first token arrives; a failure after that raises
        :class:`EscalationError` (the text already yielded cannot be taken back).
        """
        started = time.perf_counter()
        attempts, errors = 0, list[str]()
        for model in self._plan():
            for attempt in range(self.max_retries + 1):
                attempts += 1
                params = self._request(
                    model,
                    messages,
                    temperature=temperature,
                    max_tokens=max_tokens,
                    stop=stop,
                    tools=tools,
                    stream=True,
                )
                chunks: list[Any] = []
                try:
                    for chunk in litellm.completion(**params):
                        chunks.append(chunk)
                        text = _delta_text(chunk)
                        if text:
                            yield StreamDelta(text=text)
                except Exception as error:
                    delay = self._on_error(model, attempt, error, errors, streamed=bool(chunks))
                    if chunks:
                        raise self._failure(attempts, errors) from None
                    if delay is None:
                        break
                    time.sleep(delay)
                    continue
                response = litellm.stream_chunk_builder(chunks, messages=list(messages))
                yield StreamDelta(result=self._result(model, response, started, attempts, errors))
                return
        raise self._failure(attempts, errors)

    async def astream(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        stop: Sequence[str] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> AsyncIterator[StreamDelta]:
        """Async form of :meth:`stream`."""
        started = time.perf_counter()
        attempts, errors = 0, list[str]()
        for model in self._plan():
            for attempt in range(self.max_retries + 1):
                attempts += 1
                params = self._request(
                    model,
                    messages,
                    temperature=temperature,
                    max_tokens=max_tokens,
                    stop=stop,
                    tools=tools,
                    stream=True,
                )
                chunks: list[Any] = []
                try:
                    response_stream = await litellm.acompletion(**params)
                    async for chunk in response_stream:
                        chunks.append(chunk)
                        text = _delta_text(chunk)
                        if text:
                            yield StreamDelta(text=text)
                except Exception as error:
                    delay = self._on_error(model, attempt, error, errors, streamed=bool(chunks))
                    if chunks:
                        raise self._failure(attempts, errors) from None
                    if delay is None:
                        break
                    await asyncio.sleep(delay)
                    continue
                response = litellm.stream_chunk_builder(chunks, messages=list(messages))
                yield StreamDelta(result=self._result(model, response, started, attempts, errors))
                return
        raise self._failure(attempts, errors)


def _delta_text(chunk: Any) -> str:
    choices = getattr(chunk, "choices", None) or []
    if not choices:
        return ""
    delta = getattr(choices[0], "delta", None)
    return (getattr(delta, "content", None) or "") if delta is not None else ""
