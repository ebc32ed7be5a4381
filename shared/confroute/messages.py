"""Chat messages in the OpenAI shape, checked once at the edge of the library.

The core speaks one message format, the OpenAI chat format that LiteLLM also takes: a list of
``{"role": ..., "content": ...}`` dicts, with optional ``tool_calls`` / ``tool_call_id``. The
adapters convert their framework's messages into it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from confroute.errors import InvalidRequestError

__all__ = ["Message", "as_messages", "validate_messages"]

Message = dict[str, Any]
"""One chat message in the OpenAI shape."""

_ROLES = frozenset({"system", "user", "assistant", "tool"})


def _text_of(content: Any, index: int) -> str:
    """The text of a message's content; a list of text parts is joined, other parts refused."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Mapping) and part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            else:
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise InvalidRequestError(
                    f"Message {index} has a content part of type {kind!r}; the local model reads "
                    "text only. Send text parts, or describe the image/file in text."
                )
        return "\n".join(texts)
    raise InvalidRequestError(
        f"Message {index} has content of type {type(content).__name__}; use a string or a list "
        "of {'type': 'text', 'text': ...} parts."
    )


def validate_messages(messages: Sequence[Mapping[str, Any]]) -> list[Message]:
    """Check a conversation and return it as plain OpenAI-shaped dicts with text content.

    Raises:
        InvalidRequestError: The list is empty, holds no user message, a role is unknown, or
            content is not text.
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
        if role not in _ROLES:
            raise InvalidRequestError(
                f"Message {index} has role {role!r}; use one of {sorted(_ROLES)}."
            )
        clean: Message = {"role": role, "content": _text_of(message.get("content"), index)}
        for key in ("tool_calls", "tool_call_id", "name"):
            if message.get(key) is not None:
                clean[key] = message[key]
        result.append(clean)
    if not any(m["role"] in ("user", "tool") for m in result):
        raise InvalidRequestError(
            "The conversation has no user message: add {'role': 'user', 'content': ...}."
        )
    return result


def as_messages(prompt: str | Sequence[Mapping[str, Any]]) -> list[Message]:
    """Accept a plain prompt string or a message list and return validated messages."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise InvalidRequestError("The prompt is empty: ask a question.")
        return [{"role": "user", "content": prompt}]
    return validate_messages(prompt)
