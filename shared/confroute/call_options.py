"""The options of one routing call, checked: stop strings, tools, answer cap, temperature.

Split from :mod:`confroute.scoring` (which re-exports these names) so the pipeline module
holds only the pipeline.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, TypedDict

from confroute.errors import ConfigurationError
from confroute.generation import GenerationConfig
from confroute.settings import MAX_ANSWER_TOKENS

__all__ = [
    "CallOptions",
    "PromptInput",
    "Tools",
    "call_config",
    "check_tools",
    "escalation_options",
    "stop_sequences",
]


PromptInput = str | Sequence[Mapping[str, Any]]
"""A plain question, or a conversation of OpenAI-shaped messages."""
Tools = Sequence[Mapping[str, Any]] | None
"""OpenAI-shaped tool definitions offered with a request, or None."""


class CallOptions(TypedDict, total=False):
    """The keyword options of every routing call (``route``, ``aroute``, ``stream``, ...).

    Attributes:
        max_new_tokens: Answer length cap of this call (both models).
        temperature: Temperature of this call (both models).
        stop: Strings that end the answer.
        tools: OpenAI-shaped tool definitions offered to both models.
        conversation_id: The conversation the call belongs to, for a conversation-aware
            policy (``sticky_turns``); without it the key is derived from the messages (see
            :mod:`confroute.conversation`). In a batch it keys every item.
    """

    max_new_tokens: int | None
    temperature: float | None
    stop: str | Sequence[str] | None
    tools: Tools
    conversation_id: str | None


def stop_sequences(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    """Stop sequences as a tuple; a single string is one sequence, not its characters.

    Raises:
        ConfigurationError: ``stop`` is not a string or a list of strings, or holds an empty
            string (which would cut every answer before its first character).
    """
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = (stop,)
    if isinstance(stop, (bytes, bytearray)) or not isinstance(stop, Sequence):
        raise ConfigurationError(
            f"stop must be a string or a list of strings, got {type(stop).__name__} {stop!r}."
        )
    if not all(isinstance(s, str) for s in stop):
        raise ConfigurationError(f"stop must be a string or a list of strings, got {stop!r}.")
    if "" in stop:
        raise ConfigurationError(
            f"stop holds an empty string ({list(stop)!r}): it would cut every answer before "
            "its first character. Leave it out."
        )
    return tuple(stop)


def check_tools(tools: Sequence[Mapping[str, Any]] | None) -> None:
    """Refuse tools that are not a list of OpenAI tool dicts in valid JSON and Unicode.

    Raises:
        ConfigurationError: ``tools`` is a string, not a list, holds something other than
            dicts, or cannot be written as UTF-8 JSON (a lone surrogate, NaN, an object).
    """
    if tools is None:
        return
    if (
        isinstance(tools, (str, bytes))
        or not isinstance(tools, Sequence)
        or not all(isinstance(t, Mapping) for t in tools)
    ):
        raise ConfigurationError(
            "tools must be a list of OpenAI tool dicts ({'type': 'function', 'function': "
            f"{{...}}}}); got {tools!r:.200}."
        )
    try:
        json.dumps(list(tools), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as error:
        raise ConfigurationError(
            "tools must be plain JSON (strings in valid Unicode, finite numbers, nesting a "
            f"JSON encoder can write) to be shown to the models; it is not: {error}."
        ) from None


def _answer_cap(max_new_tokens: Any) -> int:
    """A per-call answer length cap, checked like the ``max_new_tokens`` setting."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral):
        raise ConfigurationError(
            f"max_new_tokens must be an integer number of tokens >= 1, got {max_new_tokens!r}."
        )
    cap = int(max_new_tokens)
    if cap < 1:
        raise ConfigurationError(
            f"max_new_tokens must be an integer number of tokens >= 1, got {cap} "
            "(leave it out to use the router's default)."
        )
    if cap > MAX_ANSWER_TOKENS:
        raise ConfigurationError(
            f"max_new_tokens must be at most {MAX_ANSWER_TOKENS} tokens (more than any model's "
            f"context window), got {cap}."
        )
    return cap


def _temperature(temperature: Any) -> float:
    """A per-call temperature, checked like the ``temperature`` setting."""
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, numbers.Real)
        or not math.isfinite(temperature)
        or temperature < 0
    ):
        raise ConfigurationError(f"temperature must be a finite number >= 0, got {temperature!r}.")
    return float(temperature)


def call_config(
    defaults: GenerationConfig,
    max_new_tokens: int | None,
    temperature: float | None,
    stop: str | Sequence[str] | None,
) -> GenerationConfig:
    """The local generation settings of one call: ``defaults`` with the call's overrides.

    An override of None keeps the default; any other value is checked like the setting.

    Raises:
        ConfigurationError: ``max_new_tokens`` is not an integer in [1,
            :data:`~confroute.settings.MAX_ANSWER_TOKENS`], ``temperature`` is not a finite
            number >= 0, or ``stop`` is not a list of non-empty strings.
    """
    return replace(
        defaults,
        max_new_tokens=(
            defaults.max_new_tokens if max_new_tokens is None else _answer_cap(max_new_tokens)
        ),
        temperature=defaults.temperature if temperature is None else _temperature(temperature),
        stop=stop_sequences(stop),
    )


def escalation_options(
    config: GenerationConfig, tools: Sequence[Mapping[str, Any]] | None
) -> dict[str, Any]:
    """The keyword arguments of the escalation call matching one call's local settings."""
    return {
        "temperature": config.temperature,
        "max_tokens": config.max_new_tokens,
        "stop": list(config.stop) or None,
        "tools": tools,
    }
