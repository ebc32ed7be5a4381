"""The retry/fallback driver of one escalation: which call comes next, and what a failure means.

:class:`~confroute.escalation.Escalation` builds one :class:`Attempts` per request and drives it
from each of its four call paths (sync, async, stream, async stream), so that retries, back-off,
fallbacks and the reading of answers cannot drift apart between them. Each :class:`Attempt`
keeps the key and the base URL secrets until :meth:`Attempt.litellm_kwargs` hands them to
LiteLLM, and shows no parameters in its repr (nor do tracebacks rendered with their locals).
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import litellm
from pydantic import SecretStr

from confroute.errors import EscalationError
from confroute.redaction import MASK, SecretURL, mask_secret
from confroute.settings import LOCAL_PROVIDER
from confroute.target import EscalationResult
from confroute.tools import repeated_tool_calls

__all__ = [
    "MASK",
    "NOT_RETRYABLE",
    "Attempt",
    "AttemptPlan",
    "Attempts",
    "EmptyAnswerError",
    "RepeatedToolCallError",
    "RequestOptions",
    "cost_usd",
    "delta_text",
    "mask_secret",
    "read_result",
    "retry_after",
]

# Retries and failures are the escalation's story: logged under its name, as before the split.
logger = logging.getLogger("confroute.escalation")

NOT_RETRYABLE: tuple[type[Exception], ...] = (
    litellm.AuthenticationError,
    litellm.BadRequestError,
    litellm.NotFoundError,
    litellm.PermissionDeniedError,
)
"""Errors that retrying cannot fix: the walk moves straight on to the next fallback."""


class EmptyAnswerError(Exception):
    """The provider answered 200 but with no usable answer (retried like a server error)."""


class RepeatedToolCallError(Exception):
    """The answer repeats a tool call the conversation already made and a tool answered."""


@dataclass
class RequestOptions:
    """What the caller asked for, shared by the attempts of one request.

    Attributes:
        temperature: Sampling temperature, or None for the provider's default.
        max_tokens: Most tokens to generate, or None for the provider's default.
        stop: Stop sequences.
        tools: Tool definitions in the OpenAI shape.
        stream: Whether the answer is streamed.
        tool_choice: None, or "none" once a repeated tool call was asked again.
    """

    temperature: float | None = None
    max_tokens: int | None = None
    stop: Sequence[str] | None = None
    tools: Sequence[Mapping[str, Any]] | None = None
    stream: bool = False
    tool_choice: str | None = None


@dataclass(frozen=True)
class AttemptPlan:
    """What every attempt of one request shares: the models in order, the endpoint, the budget.

    Attributes:
        models: The primary model, then its fallbacks.
        api_base: Base URL of an OpenAI-compatible server, if any (a secret until the call).
        api_key: The provider key (a secret until the call is made).
        timeout: Seconds per call; also the cap on one back-off delay.
        max_retries: Retries per model after the first try, for retryable errors.
        backoff_s: First back-off delay; doubles per retry, with jitter.
        top_logprobs: Ask for log-probabilities with this many alternatives.
    """

    models: tuple[str, ...]
    api_base: SecretURL | None
    api_key: SecretStr | None
    timeout: float
    max_retries: int
    backoff_s: float
    top_logprobs: int | None = None

    def params(
        self, model: str, messages: Sequence[Mapping[str, Any]], options: RequestOptions
    ) -> dict[str, Any]:
        """The call's LiteLLM parameters; the key, if any, stays a :class:`SecretStr`."""
        params: dict[str, Any] = {
            "model": model,
            "messages": list(messages),
            "timeout": self.timeout,
            "num_retries": 0,
        }
        if self.api_base:
            params["api_base"] = self.api_base
        if self.api_key is not None:
            params["api_key"] = self.api_key
        if options.temperature is not None:
            params["temperature"] = options.temperature
        if options.max_tokens is not None:
            params["max_tokens"] = options.max_tokens
        if options.stop:
            params["stop"] = list(options.stop)
        if options.tools:
            params["tools"] = [dict(t) for t in options.tools]
            if options.tool_choice is not None:
                params["tool_choice"] = options.tool_choice
        if self.top_logprobs is not None:
            params["logprobs"] = True
            params["top_logprobs"] = self.top_logprobs
        if options.stream:
            params["stream"] = True
            params["stream_options"] = {"include_usage": True}
        return params

    def delay(self, number: int, error: BaseException) -> float:
        """Seconds to wait before retry ``number + 1``: back-off, or a longer Retry-After."""
        delay = self.backoff_s * (2**number) * (1 + random.random() * 0.25)
        asked = retry_after(error)
        if asked is not None:
            delay = max(delay, asked)
        return float(min(delay, self.timeout))

    def describe(self, model: str, error: BaseException) -> str:
        """One line naming ``model`` and ``error``, secrets masked, at most 500 characters."""
        text = f"{model}: {type(error).__name__}: {error}"
        return mask_secret(text, self.api_key, self.api_base)[:500]


@dataclass
class Attempt:
    """One call to one model.

    Its repr leaves out the parameters (and the streamed chunks): a traceback rendered with its
    locals shows the model and the try number only.
    """

    model: str
    number: int
    params: dict[str, Any] = field(repr=False)
    yielded: bool = False
    chunks: list[Any] = field(default_factory=list, repr=False)

    def litellm_kwargs(self) -> dict[str, Any]:
        """The keyword arguments for ``litellm.completion``; secrets are unwrapped only here."""
        return {
            name: value.get_secret_value() if isinstance(value, SecretStr) else value
            for name, value in self.params.items()
        }

    def take(self, chunk: Any) -> str:
        """Keep a streamed chunk; return its text (empty when it carries none)."""
        self.chunks.append(chunk)
        text = delta_text(chunk)
        if text:
            self.yielded = True
        return text


class Attempts:
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
        self, plan: AttemptPlan, messages: list[dict[str, Any]], options: RequestOptions
    ) -> None:
        """Start the walk for ``messages`` (already redacted) under ``plan``."""
        self.plan = plan
        self.messages = messages
        self.options = options
        self.started = time.perf_counter()
        self.count = 0
        self.errors: list[str] = []
        self._next_model = False
        self._stop = False
        self._ask_again = False

    def __iter__(self) -> Iterator[Attempt]:
        """Yield each call to make, until the caller succeeds or every model failed."""
        for model in self.plan.models:
            self._next_model = False
            number = 0
            while number <= self.plan.max_retries:
                self.count += 1
                yield Attempt(model, number, self.plan.params(model, self.messages, self.options))
                if self._stop:
                    return
                if self._next_model:
                    break
                if self._ask_again:
                    self._ask_again = False
                else:
                    number += 1

    def failed(self, attempt: Attempt, error: BaseException) -> float | None:
        """Record ``error``; the delay before retrying ``attempt``'s model, or None."""
        if isinstance(error, RepeatedToolCallError):
            self.errors.append(self.plan.describe(attempt.model, error))
            logger.info("%s repeated an answered tool call; asking again.", attempt.model)
            self.options.tool_choice = "none"
            self._ask_again = True
            return 0.0
        if attempt.yielded:
            self._stop = True
        if isinstance(error, EmptyAnswerError) and self._deterministic(attempt.model):
            attempt = replace(attempt, number=self.plan.max_retries)
        delay = self._on_error(attempt, error)
        self._next_model = delay is None
        return delay

    def _on_error(self, attempt: Attempt, error: BaseException) -> float | None:
        self.errors.append(self.plan.describe(attempt.model, error))
        if (
            attempt.yielded
            or isinstance(error, NOT_RETRYABLE)
            or attempt.number == self.plan.max_retries
        ):
            logger.warning("Escalation to %s failed: %s", attempt.model, self.errors[-1])
            return None
        delay = self.plan.delay(attempt.number, error)
        logger.warning("Retrying %s in %.2fs after: %s", attempt.model, delay, self.errors[-1])
        return delay

    def _deterministic(self, model: str) -> bool:
        return model.startswith(f"{LOCAL_PROVIDER}/") and not self.options.temperature

    def result(self, attempt: Attempt, response: Any) -> EscalationResult:
        """Read a successful call's response.

        Raises:
            EmptyAnswerError: The answer is empty.
            RepeatedToolCallError: Every tool call of the answer repeats an answered one, and
                it may be asked again (nothing of it was streamed, and ``tool_choice`` was not
                yet "none").
        """
        result = read_result(attempt.model, response, self.started, self.count, self.errors)
        if self.options.tools and self.options.tool_choice is None and not attempt.yielded:
            repeated = repeated_tool_calls(result.tool_calls, self.messages)
            if repeated and len(repeated) == len(result.tool_calls):  # nothing new: a loop
                names = ", ".join(sorted({str(c["function"]["name"]) for c in repeated}))
                raise RepeatedToolCallError(
                    f"the answer repeats an answered tool call ({names}); asked again with "
                    "tool_choice='none'"
                )
        return result

    def streamed_result(self, attempt: Attempt) -> EscalationResult:
        """Assemble a streamed call's chunks into its result."""
        response = litellm.stream_chunk_builder(attempt.chunks, messages=self.messages)
        return self.result(attempt, response)

    def failure(self) -> EscalationError:
        """The error raised once every call failed, naming each model and each cause."""
        detail = "; ".join(self.errors) or "no attempt was made"
        return EscalationError(
            f"Escalation failed after {self.count} call(s) to {', '.join(self.plan.models)}: "
            f"{detail}",
            provider=self.plan.models[-1],
            attempts=self.count,
            errors=self.errors,
        )


def read_result(
    model: str, response: Any, started: float, attempts: int, errors: list[str]
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
        cost_usd=cost_usd(model, response),
        latency_s=time.perf_counter() - started,
        attempts=attempts,
        logprobs=logprobs if isinstance(logprobs, dict) else None,
        finish_reason=getattr(choice, "finish_reason", None),
        errors=errors,
    )


def cost_usd(model: str, response: Any) -> float | None:
    """The answer's price from LiteLLM's cost map; 0 in process; None when the map has none."""
    if model.startswith(LOCAL_PROVIDER + "/"):
        return 0.0
    try:
        return float(litellm.completion_cost(completion_response=response))
    except Exception:
        logger.debug("No price for %s in LiteLLM's cost map.", model)
        return None


def retry_after(error: BaseException) -> float | None:
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


def delta_text(chunk: Any) -> str:
    """The text a streamed chunk carries ("" when it carries none)."""
    choices = getattr(chunk, "choices", None) or []
    if not choices:
        return ""
    delta = getattr(choices[0], "delta", None)
    return (getattr(delta, "content", None) or "") if delta is not None else ""
