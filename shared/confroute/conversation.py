"""Which conversation a request belongs to, and where in it the request stands.

A conversation-aware policy (:class:`~confroute.policies.ConversationPolicy`) keys its state by
:attr:`Turn.key`. The key is the caller's ``conversation_id`` when one is given (LangChain's
``thread_id``, LlamaIndex's ``conversation_id``, the server's ``X-Conversation-Id`` header or
OpenAI ``user`` field). Without one, the key is derived from the conversation itself: a hash of
its system messages and its first user message, which every follow-up request of an
OpenAI-style chat resends. A derived-key request with one user message and nothing after it is
the *start* of a conversation (:attr:`Turn.starts`): it clears what was kept under its key, so
two users who open with the same question do not share a conversation's state; their follow-ups
(which resend that opening) do continue it.

A request is a *tool step* when, after its last user message, the conversation holds an
assistant message with ``tool_calls`` or a ``tool`` result: the next step of an agent run that
one user turn started, not a new turn.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from confroute.errors import ConfigurationError
from confroute.messages import Message

__all__ = ["DERIVED_PREFIX", "MAX_CONVERSATION_ID", "Turn", "check_conversation_id", "turn_of"]

DERIVED_PREFIX = "derived:"
"""How a key derived from the messages begins (a caller's id is used as given)."""
MAX_CONVERSATION_ID = 256
"""The longest ``conversation_id`` accepted, in characters."""


@dataclass(frozen=True)
class Turn:
    """One request's place in its conversation.

    Attributes:
        key: The conversation's key (the caller's id, or :data:`DERIVED_PREFIX` + a hash).
        tool_step: The request continues an agent run (tool calls or results follow the last
            user message) rather than starting a new user turn.
        starts: The request opens a conversation whose key was derived (one user message,
            nothing after it): state kept under the key is cleared first.
    """

    key: str
    tool_step: bool
    starts: bool


def check_conversation_id(conversation_id: object) -> str | None:
    """``conversation_id`` if it is None or a non-empty string of at most 256 characters.

    Raises:
        ConfigurationError: Anything else (a number, an empty or overlong string).
    """
    if conversation_id is None:
        return None
    if not isinstance(conversation_id, str) or not conversation_id.strip():
        raise ConfigurationError(
            f"conversation_id must be a non-empty string (a thread or session id), got "
            f"{conversation_id!r:.80}; leave it out to key the conversation by its messages."
        )
    if len(conversation_id) > MAX_CONVERSATION_ID:
        raise ConfigurationError(
            f"conversation_id is {len(conversation_id)} characters long; at most "
            f"{MAX_CONVERSATION_ID} are accepted (pass a hash of a longer id)."
        )
    return conversation_id


def _derived_key(messages: Sequence[Message]) -> str:
    """A hash of the system messages and the first user message."""
    opening: list[str] = [m["content"] for m in messages if m["role"] == "system"]
    first_user = next((m["content"] for m in messages if m["role"] == "user"), "")
    digest = hashlib.sha256(json.dumps([opening, first_user]).encode("utf-8")).hexdigest()
    return DERIVED_PREFIX + digest[:32]


def turn_of(messages: Sequence[Message], conversation_id: str | None = None) -> Turn:
    """Where the request ``messages`` stands in its conversation (see the module docstring).

    Args:
        messages: The request's checked messages (OpenAI shape).
        conversation_id: The caller's key for the conversation, if any.
    """
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    after = messages[last_user + 1 :]
    tool_step = any(m["role"] == "tool" or m.get("tool_calls") for m in after)
    if conversation_id is not None:
        return Turn(conversation_id, tool_step, starts=False)
    users = sum(1 for m in messages if m["role"] == "user")
    starts = users == 1 and not after and not any(m["role"] == "assistant" for m in messages)
    return Turn(_derived_key(messages), tool_step, starts)
