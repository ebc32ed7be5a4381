"""Escalation to a strong model through LiteLLM: any provider, with retries and fallbacks.

:class:`Escalation` is the router's :class:`~confroute.target.EscalationTarget`: it validates
its settings, applies the ``redact`` hook and runs the four call paths; the walk through
retries and fallbacks they share is :class:`confroute.attempts.Attempts`.
``confroute/__init__.py`` sets ``LITELLM_LOCAL_MODEL_COST_MAP=True`` (unless the user set it)
before LiteLLM is imported, so the cost map is read from the installed package, not fetched.
LiteLLM reads that variable once, at its own import: when it was imported before confroute
without it, it has already fetched the map, and :func:`warn_if_cost_map_fetched` says so once.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any

import litellm
from pydantic import SecretStr

from confroute.attempts import AttemptPlan, Attempts, RequestOptions
from confroute.errors import ConfigurationError, EscalationError
from confroute.redaction import SecretURL, mask_secret
from confroute.settings import LOCAL_PROVIDER, RouterSettings
from confroute.target import EscalationResult, StreamDelta

__all__ = ["Escalation", "EscalationResult", "Redactor", "StreamDelta", "warn_if_cost_map_fetched"]

logger = logging.getLogger(__name__)

Redactor = Callable[[list[dict[str, Any]]], Sequence[Mapping[str, Any]]]
"""A hook that takes (a deep copy of) the messages about to be escalated and returns the
messages to send instead, for example with e-mail addresses or customer ids masked."""

_DEFAULT_TIMEOUT: float = RouterSettings.model_fields["timeout"].default
_DEFAULT_MAX_RETRIES: int = RouterSettings.model_fields["max_retries"].default


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
        api_base: str | SecretStr | None = None,
        api_key: str | SecretStr | None = None,
        timeout: float = _DEFAULT_TIMEOUT,
        max_retries: int = _DEFAULT_MAX_RETRIES,
        backoff_s: float = 0.5,
        fallbacks: Sequence[str] = (),
        top_logprobs: int | None = None,
        redact: Redactor | None = None,
    ) -> None:
        """Configure the strong model.

        Args:
            model: A LiteLLM model string (``"openai/gpt-4o-mini"``,
                ``"confroute/qwen2.5-coder-1.5b-instruct"``, ``"hosted_vllm/..."``, ...).
            api_base: Base URL of an OpenAI-compatible server, if any. Kept as a
                :class:`~confroute.redaction.SecretURL`: a key in its userinfo
                (``http://user:key@host/v1``) is never logged or reported.
            api_key: The provider key; kept as a secret and never logged or reported.
            timeout: Seconds per call (default: :class:`~confroute.settings.RouterSettings`'s).
            max_retries: Retries per model after the first try, for retryable errors (default:
                :class:`~confroute.settings.RouterSettings`'s).
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
        self.api_base = api_base  # kept as a SecretURL (the setter wraps it)
        self.api_key: SecretStr | None = (
            api_key if isinstance(api_key, SecretStr) or api_key is None else SecretStr(api_key)
        )
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.fallbacks = tuple(fallbacks)
        self.top_logprobs = top_logprobs
        self.redact = redact
        # LiteLLM prints "Give Feedback / Get Help" and provider hints to stdout when a call
        # fails, unless its process-wide ``suppress_debug_info`` is set (it has no per-call
        # option: see litellm_core_utils/exception_mapping_utils.py and
        # get_llm_provider_logic.py). A library must not write to stdout, so the flag is set
        # here, when confroute is configured to call LiteLLM, not as a side effect of import.
        litellm.suppress_debug_info = True
        if model.startswith(LOCAL_PROVIDER + "/") or any(
            f.startswith(LOCAL_PROVIDER + "/") for f in self.fallbacks
        ):
            from confroute.provider import register_provider

            register_provider()

    @property
    def api_base(self) -> SecretURL | None:
        """The base URL, a :class:`~confroute.redaction.SecretURL` (a string set is wrapped)."""
        return self._api_base

    @api_base.setter
    def api_base(self, value: str | SecretStr | None) -> None:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value is not None and not isinstance(value, str):
            raise ConfigurationError(
                f"api_base must be a URL string or a SecretStr, got {type(value).__name__}."
            )
        self._api_base = None if value is None else SecretURL(value)

    def __repr__(self) -> str:
        """Model, base URL (its userinfo masked) and fallbacks; never the key."""
        key = "'**********'" if self.api_key is not None else "None"
        base = repr(str(self.api_base)) if self.api_base is not None else "None"
        return (
            f"Escalation(model={self.model!r}, api_base={base}, api_key={key}, "
            f"fallbacks={list(self.fallbacks)!r})"
        )

    # -- helpers ---------------------------------------------------------------------------

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
            cause = f"{type(error).__name__}: {error}"
            cause = mask_secret(cause, self.api_key, self.api_base)[:300]
            raise EscalationError(
                f"The redact hook failed ({cause}); nothing was sent to {self.model}. Fix the "
                "hook: it takes the message list and returns the messages to send.",
                provider=self.model,
                attempts=0,
                errors=[f"redact: {cause}"],
            ) from None
        return [dict(m) for m in redacted]

    # -- calls -----------------------------------------------------------------------------

    def _attempts(
        self,
        messages: Sequence[Mapping[str, Any]],
        stream: bool,
        temperature: float | None,
        max_tokens: int | None,
        stop: Sequence[str] | None,
        tools: Sequence[Mapping[str, Any]] | None,
    ) -> Attempts:
        """One request's walk through retries and fallbacks (shared by every call path).

        The plan is taken from the current settings, so a change to (say) ``backoff_s`` applies
        from the next request on.
        """
        plan = AttemptPlan(
            models=(self.model, *self.fallbacks),
            api_base=self.api_base,
            api_key=self.api_key,
            timeout=self.timeout,
            max_retries=self.max_retries,
            backoff_s=self.backoff_s,
            top_logprobs=self.top_logprobs,
        )
        options = RequestOptions(
            temperature=temperature, max_tokens=max_tokens, stop=stop, tools=tools, stream=stream
        )
        return Attempts(plan, self._outgoing(messages), options)

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
                return plan.result(attempt, litellm.completion(**attempt.litellm_kwargs()))
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
                return plan.result(attempt, await litellm.acompletion(**attempt.litellm_kwargs()))
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
                for chunk in litellm.completion(**attempt.litellm_kwargs()):
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
                async for chunk in await litellm.acompletion(**attempt.litellm_kwargs()):
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


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@functools.cache
def warn_if_cost_map_fetched() -> bool:
    """Log once (WARNING) when LiteLLM loaded its cost map from the network, not the package.

    LiteLLM decides at its own import: without ``LITELLM_LOCAL_MODEL_COST_MAP=True`` (or
    ``LITELLM_OFFLINE_MODE=true``) in the environment it fetches the map from
    ``LITELLM_MODEL_COST_MAP_URL``, with retries (seconds when offline). ``import confroute``
    sets the variable, but only a LiteLLM imported after it sees it; confroute cannot undo a
    fetch already made. ``confroute/__init__.py`` calls this: a map that was fetched while the
    variable says local means LiteLLM was imported first. A user who set the variable to
    anything but true asked for the fetch, and is not warned.

    Returns:
        Whether the warning was logged (False as well when this LiteLLM does not say where its
        map came from).
    """
    if os.environ.get("LITELLM_LOCAL_MODEL_COST_MAP", "").lower() != "true":
        return False
    try:
        from litellm.litellm_core_utils.get_model_cost_map import get_model_cost_map_source_info

        info = get_model_cost_map_source_info()
    except (ImportError, AttributeError):  # an older LiteLLM: no way to tell
        return False
    if info.get("is_env_forced", True):
        return False
    logger.warning(
        "LiteLLM was imported before confroute without LITELLM_LOCAL_MODEL_COST_MAP=True, so it "
        "fetched its model cost map from %s at import (a network call; seconds when offline). "
        "For local-only use, set LITELLM_LOCAL_MODEL_COST_MAP=True in the environment before "
        "Python starts (or import confroute before litellm).",
        info.get("url") or "the network",
    )
    return True
