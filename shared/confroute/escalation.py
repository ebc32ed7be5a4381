"""Escalation to a strong model through LiteLLM: any provider, with retries and fallbacks.

``confroute/__init__.py`` sets ``LITELLM_LOCAL_MODEL_COST_MAP=True`` (unless the user set it)
before LiteLLM is imported, so the cost map is read from the installed package, not fetched.
"""

from __future__ import annotations

import asyncio
import copy
import email.utils
import logging
import math
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import SecretStr

from confroute.errors import ConfigurationError, EscalationError
from confroute.target import EscalationResult, StreamDelta
from confroute.tools import repeated_tool_calls

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm

__all__ = ["Escalation", "EscalationResult", "Redactor", "StreamDelta"]

Redactor = Callable[[list[dict[str, Any]]], Sequence[Mapping[str, Any]]]
"""A hook that takes (a deep copy of) the messages about to be escalated and returns the
messages to send instead, for example with e-mail addresses or customer ids masked."""

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


class Escalation:
    """Calls a strong model through LiteLLM, with timeout, retries with back-off, and fallbacks.

    Failure handling, in order: a retryable error (timeout, connection error, 5xx, 429,
    malformed or empty answer) is retried ``max_retries`` times with exponential back-off
    (a 429's ``Retry-After`` is honoured, capped at ``timeout``); then each of ``fallbacks`` is
    tried the same way; when all fail, :class:`~confroute.errors.EscalationError` is raised,
    naming the models and each cause. Errors that retrying cannot fix (authentication, bad
    request, unknown model, permission) skip straight to the next fallback. The worst-case wall
    time is about ``(1 + len(fallbacks)) * (1 + max_retries) * timeout`` plus back-off. With
    ``tools``, an answer that only repeats a tool call the conversation already made and a tool
    answered is asked once more with ``tool_choice="none"`` (one more call, no retry used).

    Example:
        >>> Escalation("openai/gpt-4o-mini", api_key="sk-...")  # doctest: +SKIP
        >>> Escalation("confroute/qwen2.5-coder-1.5b-instruct")  # in-process, no key
        >>> Escalation("openai/gpt-4o-mini", redact=mask_emails)  # doctest: +SKIP
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
        redact: Redactor | None = None,
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
            redact: Called with a deep copy of the messages before every escalation (once per
                request, before the first try); what it returns is sent instead. Use it to
                mask personal data the strong provider must not see. If it raises or returns
                something that is not a non-empty list of message dicts, nothing is sent and
                :class:`~confroute.errors.EscalationError` is raised (so the router's
                ``on_escalation_error`` policy applies).

        Raises:
            ConfigurationError: A setting is out of range or of the wrong type.
        """
        if not model or not isinstance(model, str):
            raise ConfigurationError("The strong model must be a LiteLLM model string.")
        if not _is_number(timeout) or not math.isfinite(timeout) or timeout <= 0:
            raise ConfigurationError(f"timeout must be a number of seconds > 0, got {timeout!r}.")
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise ConfigurationError(f"max_retries must be an integer >= 0, got {max_retries!r}.")
        if not _is_number(backoff_s) or not math.isfinite(backoff_s) or backoff_s < 0:
            raise ConfigurationError(f"backoff_s must be a number >= 0, got {backoff_s!r}.")
        if isinstance(fallbacks, str) or not all(isinstance(f, str) and f for f in fallbacks):
            raise ConfigurationError(
                f"fallbacks must be a list of LiteLLM model strings, got {fallbacks!r}."
            )
        if redact is not None and not callable(redact):
            raise ConfigurationError(
                "redact must be a callable taking and returning the message list, got "
                f"{type(redact).__name__}."
            )
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
        self.redact = redact
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

    def _outgoing(self, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The messages to send: a copy, passed through the ``redact`` hook when there is one.

        Raises:
            EscalationError: The hook failed; nothing may be sent.
        """
        copied = [dict(m) for m in copy.deepcopy(list(messages))]
        if self.redact is None:
            return copied
        try:
            redacted = self.redact(copied)
            if isinstance(redacted, (str, bytes)) or not isinstance(redacted, Sequence):
                raise TypeError(f"it returned a {type(redacted).__name__}, not a list")
            if not redacted or not all(isinstance(m, Mapping) for m in redacted):
                raise TypeError("it must return a non-empty list of message dicts")
        except Exception as error:
            cause = self._redact(f"{type(error).__name__}: {error}")[:300]
            raise EscalationError(
                f"The redact hook failed ({cause}); nothing was sent to {self.model}. Fix the "
                "hook: it takes the message list and returns the messages to send.",
                provider=self.model,
                attempts=0,
                errors=[f"redact: {cause}"],
            ) from None
        return [dict(m) for m in redacted]

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
        tool_choice: str | None = None,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": model,
            "messages": list(messages),
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
            if tool_choice is not None:
                params["tool_choice"] = tool_choice
        if self.top_logprobs is not None:
            params["logprobs"] = True
            params["top_logprobs"] = self.top_logprobs
        if stream:
            params["stream"] = True
            params["stream_options"] = {"include_usage": True}
        return params

    def _delay(self, attempt: int, error: BaseException) -> float:
        delay = self.backoff_s * (2**attempt) * (1 + random.random() * 0.25)
        retry_after = _retry_after(error)
        if retry_after is not None:
            delay = max(delay, retry_after)
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
        """Read the provider's answer.

        Raises:
            EmptyAnswerError: The answer has no choice, or neither text nor tool calls.
        """
        choices = getattr(response, "choices", None) or []
        if not choices or getattr(choices[0], "message", None) is None:
            raise EmptyAnswerError("the response has no choices")
        choice = choices[0]
        message = choice.message
        tool_calls = [
            tc.model_dump() if hasattr(tc, "model_dump") else dict(tc)
            for tc in (getattr(message, "tool_calls", None) or [])
        ]
        usage = getattr(response, "usage", None)
        logprobs = getattr(choice, "logprobs", None)
        if logprobs is not None and hasattr(logprobs, "model_dump"):
            logprobs = logprobs.model_dump()
        text = message.content if isinstance(message.content, str) else ""
        if not text.strip() and not tool_calls:
            raise EmptyAnswerError(
                f"the answer is empty (finish_reason={getattr(choice, 'finish_reason', None)!r})"
            )
        return EscalationResult(
            text=text,
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

    def _attempts(
        self,
        messages: Sequence[Mapping[str, Any]],
        stream: bool,
        temperature: float | None,
        max_tokens: int | None,
        stop: Sequence[str] | None,
        tools: Sequence[Mapping[str, Any]] | None,
    ) -> _Attempts:
        """One request's walk through retries and fallbacks (shared by every call path)."""
        return _Attempts(
            self,
            self._outgoing(messages),
            {
                "temperature": temperature,
                "max_tokens": max_tokens,
                "stop": stop,
                "tools": tools,
                "stream": stream,
                "tool_choice": None,
            },
        )

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
            EscalationError: Every model failed, or the ``redact`` hook failed; it lists each
                failure (secrets redacted).
        """
        plan = self._attempts(messages, False, temperature, max_tokens, stop, tools)
        for attempt in plan:
            try:
                return plan.result(attempt, litellm.completion(**attempt.params))
            except Exception as error:
                delay = plan.failed(attempt, error)
            if delay is not None:
                time.sleep(delay)
        raise plan.failure()

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
        plan = self._attempts(messages, False, temperature, max_tokens, stop, tools)
        for attempt in plan:
            try:
                return plan.result(attempt, await litellm.acompletion(**attempt.params))
            except Exception as error:
                delay = plan.failed(attempt, error)
            if delay is not None:
                await asyncio.sleep(delay)
        raise plan.failure()

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

        Retries and fallbacks apply until the first text arrives; a failure after that raises
        :class:`EscalationError` (the text already yielded cannot be taken back).
        """
        plan = self._attempts(messages, True, temperature, max_tokens, stop, tools)
        for attempt in plan:
            try:
                for chunk in litellm.completion(**attempt.params):
                    if text := attempt.take(chunk):
                        yield StreamDelta(text=text)
                result = plan.streamed_result(attempt)
            except Exception as error:
                delay = plan.failed(attempt, error)
            else:
                yield StreamDelta(result=result)
                return
            if delay is not None:
                time.sleep(delay)
        raise plan.failure()

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
        plan = self._attempts(messages, True, temperature, max_tokens, stop, tools)
        for attempt in plan:
            try:
                async for chunk in await litellm.acompletion(**attempt.params):
                    if text := attempt.take(chunk):
                        yield StreamDelta(text=text)
                result = plan.streamed_result(attempt)
            except Exception as error:
                delay = plan.failed(attempt, error)
            else:
                yield StreamDelta(result=result)
                return
            if delay is not None:
                await asyncio.sleep(delay)
        raise plan.failure()


@dataclass
class _Attempt:
    """One call to one model."""

    model: str
    number: int
    params: dict[str, Any]
    yielded: bool = False
    chunks: list[Any] = field(default_factory=list)

    def take(self, chunk: Any) -> str:
        """Keep a streamed chunk; return its text (empty when it carries none)."""
        self.chunks.append(chunk)
        text = _delta_text(chunk)
        if text:
            self.yielded = True
        return text


class _Attempts:
    """Iterate the calls of one request: ``max_retries + 1`` per model, then the fallbacks.

    The caller makes each call, reports a failure with :meth:`failed` (which returns the delay
    to sleep before the next call, or None), and stops on success. A failure after streamed
    text ends the walk: the text cannot be taken back. An empty answer from a deterministic
    in-process model (greedy ``confroute/<name>``) is not retried: it would be empty again.

    An answer that only repeats a tool call the conversation already made and a tool answered
    (an agent would loop on it) is asked again once, from the same model and without using a
    retry, with ``tool_choice="none"`` so that the model answers from the tool's result; the
    later calls of the request keep that setting. A provider that still repeats the call is
    answered as is.
    """

    def __init__(
        self, owner: Escalation, messages: list[dict[str, Any]], options: dict[str, Any]
    ) -> None:
        self._owner = owner
        self.messages = messages
        self._options = options
        self.started = time.perf_counter()
        self.count = 0
        self.errors: list[str] = []
        self._next_model = False
        self._stop = False
        self._ask_again = False

    def __iter__(self) -> Iterator[_Attempt]:
        for model in self._owner._plan():
            self._next_model = False
            number = 0
            while number <= self._owner.max_retries:
                self.count += 1
                params = self._owner._request(model, self.messages, **self._options)
                yield _Attempt(model, number, params)
                if self._stop:
                    return
                if self._next_model:
                    break
                if self._ask_again:
                    self._ask_again = False
                else:
                    number += 1

    def failed(self, attempt: _Attempt, error: BaseException) -> float | None:
        """Record ``error``; the delay before retrying ``attempt``'s model, or None."""
        if isinstance(error, RepeatedToolCallError):
            self.errors.append(self._owner._describe(attempt.model, error))
            logger.info("%s repeated an answered tool call; asking again.", attempt.model)
            self._options["tool_choice"] = "none"
            self._ask_again = True
            return 0.0
        if attempt.yielded:
            self._stop = True
        if isinstance(error, EmptyAnswerError) and self._deterministic(attempt.model):
            attempt = replace(attempt, number=self._owner.max_retries)
        delay = self._owner._on_error(
            attempt.model, attempt.number, error, self.errors, streamed=attempt.yielded
        )
        self._next_model = delay is None
        return delay

    def _deterministic(self, model: str) -> bool:
        return model.startswith(f"{LOCAL_PROVIDER}/") and not self._options["temperature"]

    def result(self, attempt: _Attempt, response: Any) -> EscalationResult:
        """Read a successful call's response.

        Raises:
            EmptyAnswerError: The answer is empty.
            RepeatedToolCallError: Every tool call of the answer repeats an answered one, and
                it may be asked again (nothing of it was streamed, and ``tool_choice`` was not
                yet "none").
        """
        result = self._owner._result(attempt.model, response, self.started, self.count, self.errors)
        if self._options["tools"] and self._options["tool_choice"] is None and not attempt.yielded:
            repeated = repeated_tool_calls(result.tool_calls, self.messages)
            if repeated and len(repeated) == len(result.tool_calls):  # nothing new: a loop
                names = ", ".join(sorted({str(c["function"]["name"]) for c in repeated}))
                raise RepeatedToolCallError(
                    f"the answer repeats an answered tool call ({names}); asked again with "
                    "tool_choice='none'"
                )
        return result

    def streamed_result(self, attempt: _Attempt) -> EscalationResult:
        """Assemble a streamed call's chunks into its result."""
        response = litellm.stream_chunk_builder(attempt.chunks, messages=self.messages)
        return self.result(attempt, response)

    def failure(self) -> EscalationError:
        """The error raised once every call failed."""
        return self._owner._failure(self.count, self.errors)


class EmptyAnswerError(Exception):
    """The provider answered 200 but with no usable answer (retried like a server error)."""


class RepeatedToolCallError(Exception):
    """The answer repeats a tool call the conversation already made and a tool answered."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _retry_after(error: BaseException) -> float | None:
    """Seconds the provider asked to wait (``Retry-After`` / ``retry-after-ms``), if any.

    LiteLLM keeps the headers on ``error.response`` for some providers and on
    ``error.litellm_response_headers`` for others; both are read.
    """
    sources = (
        getattr(getattr(error, "response", None), "headers", None),
        getattr(error, "litellm_response_headers", None),
    )
    for found in sources:
        if found is None or not hasattr(found, "items"):
            continue
        try:
            headers = {str(k).lower(): v for k, v in found.items()}
            milliseconds = headers.get("retry-after-ms")
            if milliseconds is not None:
                return max(0.0, float(milliseconds) / 1000)
            value = headers.get("retry-after")
        except (TypeError, ValueError):
            continue
        if value is None:
            continue
        try:
            return max(0.0, float(value))
        except (TypeError, ValueError):
            pass
        try:
            when = email.utils.parsedate_to_datetime(str(value))
        except (TypeError, ValueError):
            continue
        return max(0.0, when.timestamp() - time.time())
    return None


def _delta_text(chunk: Any) -> str:
    choices = getattr(chunk, "choices", None) or []
    if not choices:
        return ""
    delta = getattr(choices[0], "delta", None)
    return (getattr(delta, "content", None) or "") if delta is not None else ""
