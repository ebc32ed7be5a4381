"""Between LlamaIndex and the core: messages, tools and tool calls, router settings."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llama_index.core.base.llms.types import (
    CachePoint,
    ChatMessage,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)
from llama_index.core.llms.llm import ToolSelection

from confroute.errors import InvalidRequestError
from confroute.escalation import Escalation
from confroute.messages import Message
from confroute.policies import FixedThreshold
from confroute.router import ConfRouter
from confroute.settings import RouterSettings, from_environment

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

__all__ = [
    "CALL_OPTIONS",
    "call_options",
    "from_environment",
    "router_fields",
    "setting",
    "to_openai_messages",
    "to_openai_tools",
    "tool_arguments",
    "tool_calls_of",
    "tool_selections",
    "with_user_message",
]

_ROLES = {
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "system",
    MessageRole.USER: "user",
    MessageRole.ASSISTANT: "assistant",
    MessageRole.CHATBOT: "assistant",
    MessageRole.MODEL: "assistant",
    MessageRole.TOOL: "tool",
    MessageRole.FUNCTION: "tool",
}


def tool_calls_of(message: ChatMessage) -> list[dict[str, Any]]:
    """Tool calls of an assistant message in the OpenAI shape (arguments as JSON strings)."""
    calls = message.additional_kwargs.get("tool_calls")
    if calls:
        return [_openai_tool_call(c) for c in _call_list(calls)]
    result: list[dict[str, Any]] = []
    for block in message.blocks:
        if isinstance(block, ToolCallBlock):
            arguments = block.tool_kwargs
            result.append(
                {
                    "id": block.tool_call_id or f"call_{len(result)}",
                    "type": "function",
                    "function": {
                        "name": block.tool_name,
                        "arguments": arguments
                        if isinstance(arguments, str)
                        else json.dumps(arguments),
                    },
                }
            )
    return result


def _call_list(calls: Any) -> Sequence[Any]:
    """``additional_kwargs["tool_calls"]`` when it is a list; else a refusal naming the shape."""
    if isinstance(calls, (str, bytes, Mapping)) or not isinstance(calls, Sequence):
        raise InvalidRequestError(
            f"additional_kwargs['tool_calls'] of an assistant message is a {type(calls).__name__}; "
            "it must be a list of OpenAI tool calls (dicts or objects with model_dump())."
        )
    return calls


def _openai_tool_call(call: Any) -> dict[str, Any]:
    """One entry of ``additional_kwargs["tool_calls"]`` as a dict (the core checks its shape)."""
    if hasattr(call, "model_dump"):
        dumped: dict[str, Any] = call.model_dump()
        return dumped
    if isinstance(call, Mapping):
        return dict(call)
    raise InvalidRequestError(
        f"A tool call in additional_kwargs['tool_calls'] is a {type(call).__name__}; it must be "
        "a dict {'id': ..., 'type': 'function', 'function': {'name': ..., 'arguments': ...}}."
    )


def _text_of(message: ChatMessage, index: int) -> str:
    texts = []
    for block in message.blocks:
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif not isinstance(block, (ToolCallBlock, ThinkingBlock, CachePoint)):
            raise InvalidRequestError(
                f"Message {index} holds a {block.block_type!r} block; the local model reads "
                "text only. Send TextBlocks, or describe the content in text."
            )
    return "\n".join(texts)


def to_openai_messages(messages: Sequence[ChatMessage]) -> list[Message]:
    """LlamaIndex chat messages as OpenAI-shaped dicts (tool calls and tool results kept).

    Raises:
        InvalidRequestError: A block is neither text nor a tool call.
    """
    result: list[Message] = []
    for index, message in enumerate(messages):
        role = _ROLES[MessageRole(message.role)]
        converted: Message = {"role": role, "content": _text_of(message, index)}
        extra = message.additional_kwargs
        if role == "assistant":
            calls = tool_calls_of(message)
            if calls:
                converted["tool_calls"] = calls
        elif role == "tool":
            if extra.get("tool_call_id"):
                converted["tool_call_id"] = extra["tool_call_id"]
            if extra.get("name"):
                converted["name"] = extra["name"]
        result.append(converted)
    return result


def with_user_message(
    chat_history: Sequence[ChatMessage] | None, user_msg: str | ChatMessage | None
) -> list[ChatMessage]:
    """The conversation so far with the user's new message (a text or a message) appended."""
    messages = list(chat_history or [])
    if user_msg is not None:
        messages.append(
            ChatMessage(role=MessageRole.USER, content=user_msg)
            if isinstance(user_msg, str)
            else user_msg
        )
    return messages


def to_openai_tools(tools: Sequence[BaseTool]) -> list[dict[str, Any]]:
    """LlamaIndex tools as OpenAI tool definitions."""
    return [tool.metadata.to_openai_tool(skip_length_check=True) for tool in tools]


def tool_arguments(raw: Any) -> dict[str, Any]:
    """Tool-call arguments (a JSON string or a mapping) as a dict; unusable ones give ``{}``."""
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        parsed = json.loads(raw or "{}")
    except (TypeError, json.JSONDecodeError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def tool_selections(message: ChatMessage) -> list[ToolSelection]:
    """The tool calls of an assistant message as LlamaIndex ``ToolSelection`` objects."""
    return [
        ToolSelection(
            tool_id=call.get("id") or f"call_{index}",
            tool_name=call["function"]["name"],
            tool_kwargs=tool_arguments(call["function"].get("arguments")),
        )
        for index, call in enumerate(tool_calls_of(message))
    ]


CALL_OPTIONS = ("max_tokens", "temperature", "stop", "tools", "conversation_id")
"""The options ``ConfRouteLLM`` accepts per call (``conversation_id``: the chat session, for a
conversation-aware policy; without it the key is derived from the chat history)."""


def call_options(
    kwargs: Mapping[str, Any], *, max_tokens: int, temperature: float
) -> dict[str, Any]:
    """The router's keyword arguments for one call's options (the LLM's values by default).

    An option given as None takes the LLM's value; any other value goes to the router, which
    refuses one out of bounds (``max_tokens=0``) with a ``ConfigurationError``.

    Raises:
        InvalidRequestError: An option is not one of :data:`CALL_OPTIONS`.
    """
    unknown = sorted(set(kwargs) - set(CALL_OPTIONS))
    if unknown:
        raise InvalidRequestError(
            f"Unknown option(s) {unknown} for ConfRouteLLM; per call it accepts "
            f"{list(CALL_OPTIONS)}. Set other options when building the LLM."
        )
    tools = kwargs.get("tools") or None
    if tools is not None:
        tools = [t if isinstance(t, dict) else to_openai_tools([t])[0] for t in tools]
    chosen = kwargs.get("temperature")
    return {
        "max_new_tokens": max_tokens if kwargs.get("max_tokens") is None else kwargs["max_tokens"],
        "temperature": temperature if chosen is None else chosen,
        "stop": kwargs.get("stop"),
        "tools": tools,
        "conversation_id": kwargs.get("conversation_id"),
    }


def setting(name: str) -> Any:
    """The default of the router setting ``name`` (from :class:`RouterSettings`)."""
    return RouterSettings.model_fields[name].default


def router_fields(router: ConfRouter) -> dict[str, Any]:
    """The field values that describe a ready router (its key stays in the router)."""
    escalation, policy, settings = router.escalation, router.policy, router.settings
    # A ready Escalation keeps its own connection settings; otherwise the router's apply.
    source: Escalation | RouterSettings = (
        escalation if isinstance(escalation, Escalation) else settings
    )
    return {
        "local_model": router.local.name,
        "strong_model": escalation.model if escalation is not None else None,
        "estimator": router.estimator.name,
        "threshold": (
            policy.threshold
            if isinstance(policy, FixedThreshold) and not hasattr(policy, "escalation_rate")
            else None
        ),
        "escalation_rate": getattr(policy, "escalation_rate", None),
        "tool_estimator": settings.tool_estimator,
        "tool_threshold": settings.tool_threshold,
        "api_base": source.api_base if escalation is not None else None,
        "timeout": source.timeout,
        "max_retries": source.max_retries,
        "fallbacks": list(source.fallbacks) if escalation is not None else [],
        "on_escalation_error": settings.on_escalation_error,
        "max_tokens": settings.max_new_tokens,
        "temperature": settings.temperature,
    }
