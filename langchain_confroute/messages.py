"""Conversions between LangChain messages and the OpenAI-shaped dicts the confroute core speaks.

Inbound: LangChain messages become OpenAI chat messages (``convert_to_openai_messages``).
Outbound: a :class:`~confroute.router.RoutedResponse` becomes an ``AIMessage`` (or the last
``AIMessageChunk`` of a stream) carrying the standard tool calls, ``usage_metadata``, the OpenAI
log-probabilities and the routing decision.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    InvalidToolCall,
    ToolCall,
    ToolCallChunk,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import invalid_tool_call, tool_call, tool_call_chunk
from langchain_core.messages.utils import convert_to_openai_messages
from langchain_core.outputs import ChatGeneration, ChatResult

from confroute.errors import InvalidRequestError
from confroute.response import RoutedResponse

__all__ = [
    "DECISION_KEY",
    "PROVIDER",
    "last_chunk",
    "to_ai_message",
    "to_chat_result",
    "to_openai_messages",
]

PROVIDER = "confroute"
"""Provider name reported to LangChain tracing (``ls_provider``, ``model_provider``)."""

DECISION_KEY = "confroute"
"""Key of the routing decision in ``AIMessage.response_metadata``."""


_CALL_BLOCKS = frozenset({"tool_call", "tool_call_chunk", "invalid_tool_call"})


def to_openai_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages as OpenAI chat messages with text content.

    Tool calls of ``AIMessage`` objects become OpenAI ``tool_calls`` (arguments as JSON
    strings) and ``ToolMessage`` objects become ``role="tool"`` messages. The core checks the
    result and refuses content it cannot read (images, files) with a message saying so.

    Raises:
        InvalidRequestError: LangChain cannot convert a message (a text block whose text is
            not a string, for example).
    """
    try:
        openai_messages = convert_to_openai_messages(list(messages), text_format="string")
    except (TypeError, ValueError, KeyError, RecursionError) as error:
        raise InvalidRequestError(
            "The messages cannot be read as text chat messages (content must be a string or "
            f"a list of text blocks whose 'text' is a string): {error}"
        ) from error
    converted = [dict(message) for message in openai_messages]
    for message in converted:
        content = message.get("content")
        if message.get("role") == "assistant" and isinstance(content, list):
            # LangChain v1 content blocks repeat the tool calls that ``tool_calls`` carries.
            message["content"] = [
                part
                for part in content
                if not (isinstance(part, dict) and part.get("type") in _CALL_BLOCKS)
            ]
    return converted


def _tool_calls(
    raw_calls: Sequence[dict[str, Any]],
) -> tuple[list[ToolCall], list[InvalidToolCall]]:
    """OpenAI tool calls as LangChain tool calls; unparseable arguments become invalid calls."""
    valid: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    for raw in raw_calls:
        function = raw.get("function") or {}
        name = function.get("name")
        arguments = function.get("arguments") or "{}"
        call_id = raw.get("id")
        try:
            args = json.loads(arguments) if isinstance(arguments, str) else dict(arguments)
        except (json.JSONDecodeError, TypeError, ValueError) as error:
            invalid.append(
                invalid_tool_call(name=name, args=str(arguments), id=call_id, error=str(error))
            )
            continue
        if not isinstance(args, dict):
            invalid.append(
                invalid_tool_call(name=name, args=str(arguments), id=call_id, error="not an object")
            )
            continue
        valid.append(tool_call(name=str(name), args=args, id=call_id))
    return valid, invalid


def _usage(response: RoutedResponse) -> UsageMetadata:
    counts = response.usage
    # The token-detail keys are NotRequired; mypy on Python 3.10 settings misses that.
    usage: UsageMetadata = {  # type: ignore[typeddict-item]
        "input_tokens": int(counts["prompt_tokens"]),
        "output_tokens": int(counts["completion_tokens"]),
        "total_tokens": int(counts["total_tokens"]),
    }
    return usage


def _response_metadata(response: RoutedResponse) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "model_name": response.decision.answered_by,
        "model_provider": PROVIDER,
        "finish_reason": response.reported_finish_reason,
        DECISION_KEY: response.decision.model_dump(mode="json"),
    }
    logprobs = response.logprobs
    if logprobs is not None:
        metadata["logprobs"] = logprobs
    return metadata


def to_ai_message(response: RoutedResponse) -> AIMessage:
    """The answer as an ``AIMessage`` with tool calls, usage and the decision in its metadata."""
    valid, invalid = _tool_calls(response.tool_calls)
    return AIMessage(
        content=response.text,
        tool_calls=valid,
        invalid_tool_calls=invalid,
        usage_metadata=_usage(response),
        response_metadata=_response_metadata(response),
    )


def to_chat_result(response: RoutedResponse) -> ChatResult:
    """The answer as the ``ChatResult`` that ``BaseChatModel._generate`` returns."""
    message = to_ai_message(response)
    info = {"finish_reason": message.response_metadata["finish_reason"]}
    return ChatResult(
        generations=[ChatGeneration(message=message, generation_info=info)],
        llm_output={"model_name": response.decision.answered_by},
    )


def last_chunk(response: RoutedResponse) -> AIMessageChunk:
    """The closing chunk of a stream: no new text; tool calls, usage and the decision.

    It is the only chunk that sets ``usage_metadata`` and ``model_name``, so adding the chunks
    up counts each once.
    """
    chunks: list[ToolCallChunk] = []
    for index, raw in enumerate(response.tool_calls):
        function = raw.get("function") or {}
        arguments = function.get("arguments") or "{}"
        chunks.append(
            tool_call_chunk(
                name=function.get("name"),
                args=arguments if isinstance(arguments, str) else json.dumps(arguments),
                id=raw.get("id"),
                index=index,
            )
        )
    return AIMessageChunk(
        content="",
        tool_call_chunks=chunks,
        usage_metadata=_usage(response),
        response_metadata=_response_metadata(response),
        chunk_position="last",
    )
