"""Chat messages in the OpenAI shape, checked once at the edge of the library.

The core speaks one message format, the OpenAI chat format that LiteLLM also takes: a list of
``{"role": ..., "content": ...}`` dicts, with optional ``tool_calls`` / ``tool_call_id``. The
adapters convert their framework's messages into it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from confroute.errors import InvalidRequestError

__all__ = ["Message", "as_messages", "validate_messages"]

Message = dict[str, Any]
"""One chat message in the OpenAI shape."""

_ROLES = frozenset({"system", "user", "assistant", "tool"})


def _unicode(text: str, where: str) -> str:
    """``text`` when it can be written as UTF-8 (no lone surrogate); else a refusal."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidRequestError(
            f"{where} holds a lone surrogate ({text[error.start]!r} at character {error.start}), "
            "which is not valid Unicode: decode the text with errors='replace', or remove it."
        ) from None
    return text


def _part_text(part: Mapping[str, Any], index: int) -> str:
    """The text of one ``{"type": "text", "text": ...}`` part (a number is written as text)."""
    text = part.get("text", "")
    if isinstance(text, str):
        return text
    if text is None or isinstance(text, (bool, int, float)):
        return str(text)
    raise InvalidRequestError(
        f"Message {index} has a text part whose text is a {type(text).__name__}; the text of "
        "a part must be a string."
    )


def _text_of(content: Any, index: int) -> str:
    """The text of a message's content; a list of text parts is joined, other parts refused."""
    if content is None:
        return ""
    if isinstance(content, str):
        return _unicode(content, f"Message {index}'s content")
    if isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray)):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Mapping) and part.get("type") == "text":
                texts.append(_part_text(part, index))
            else:
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise InvalidRequestError(
                    f"Message {index} has a content part of type {kind!r:.80}; the local model "
                    "reads text only. Send text parts, or describe the image/file in text."
                )
        return _unicode("\n".join(texts), f"Message {index}'s content")
    raise InvalidRequestError(
        f"Message {index} has content of type {type(content).__name__}; use a string or a list "
        "of {'type': 'text', 'text': ...} parts."
    )


def _tool_calls(calls: Any, index: int) -> Any:
    """``calls`` when they are a list of OpenAI tool calls the models can be shown; else refused.

    Each call is a dict whose ``function`` holds a string ``name`` and ``arguments`` as a JSON
    string or a dict (or none); ``id`` is a string when given.
    """
    shape = (
        "a list of {'id': ..., 'type': 'function', 'function': {'name': NAME, 'arguments': "
        "JSON_STRING}}"
    )
    if isinstance(calls, (str, bytes, bytearray)) or not isinstance(calls, Sequence):
        raise InvalidRequestError(
            f"Message {index} has tool_calls of type {type(calls).__name__}; send {shape}."
        )
    for position, call in enumerate(calls):
        where = f"Message {index}'s tool call {position}"
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise InvalidRequestError(f"{where} is not a tool call with a name; send {shape}.")
        arguments = function.get("arguments")
        if arguments is not None and not isinstance(arguments, (str, Mapping)):
            raise InvalidRequestError(
                f"{where} has arguments of type {type(arguments).__name__}; send a JSON string "
                "or a dict."
            )
        if call.get("id") is not None and not isinstance(call.get("id"), str):
            raise InvalidRequestError(f"{where} has an id that is not a string.")
        try:
            written = json.dumps(dict(call), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as error:
            raise InvalidRequestError(
                f"{where} is not plain JSON (strings, finite numbers, lists and dicts nested "
                f"no deeper than a JSON encoder can write): {error}."
            ) from None
        _unicode(written, where)
    return calls


def _checked_field(message: Mapping[str, Any], key: str, index: int) -> Any:
    """The ``tool_calls``, ``tool_call_id`` or ``name`` of a message, checked."""
    value = message[key]
    if key == "tool_calls":
        return _tool_calls(value, index)
    if not isinstance(value, str):
        raise InvalidRequestError(
            f"Message {index} has a {key} of type {type(value).__name__}; it must be a string."
        )
    return _unicode(value, f"Message {index}'s {key}")


def validate_messages(messages: Sequence[Mapping[str, Any]]) -> list[Message]:
    """Check a conversation and return it as plain OpenAI-shaped dicts with text content.

    Raises:
        InvalidRequestError: The list is empty, holds no user message or only blank ones, a
            role is unknown, content is not text (or not valid Unicode), or ``tool_calls`` is
            not a list of tool calls.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise InvalidRequestError(
            "messages must be a list of {'role': ..., 'content': ...} dicts; "
            f"got {type(messages).__name__}. For a single question use [{{'role': 'user', "
            "'content': QUESTION}]."
        )
    if not messages:
        raise InvalidRequestError("messages is empty: send at least one user message.")
    result: list[Message] = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidRequestError(
                f"Message {index} is a {type(message).__name__}, not a dict with 'role' and "
                "'content'."
            )
        role = message.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            raise InvalidRequestError(
                f"Message {index} has role {role!r:.80}; use one of {sorted(_ROLES)}."
            )
        clean: Message = {"role": role, "content": _text_of(message.get("content"), index)}
        for key in ("tool_calls", "tool_call_id", "name"):
            if message.get(key) is not None:
                clean[key] = _checked_field(message, key, index)
        result.append(clean)
    asked = [m for m in result if m["role"] in ("user", "tool")]
    if not asked:
        raise InvalidRequestError(
            "The conversation has no user message: add {'role': 'user', 'content': ...}."
        )
    if not any(m["content"].strip() for m in asked):
        raise InvalidRequestError(
            "The conversation's user messages are empty (blank text only): ask a question."
        )
    return result


def as_messages(prompt: str | Sequence[Mapping[str, Any]]) -> list[Message]:
    """Accept a plain prompt string or a message list and return validated messages.

    Raises:
        InvalidRequestError: The prompt is blank or not valid Unicode, or the messages are
            refused by :func:`validate_messages`.
    """
    if isinstance(prompt, str):
        if not prompt.strip():
            raise InvalidRequestError("The prompt is empty: ask a question.")
        return [{"role": "user", "content": _unicode(prompt, "The prompt")}]
    return validate_messages(prompt)
