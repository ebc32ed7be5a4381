"""Between LlamaIndex and the core: messages, tools and tool calls, router settings."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
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
from confroute.messages import Message
from confroute.policy import FixedThreshold
from confroute.router import ConfRouter, RoutedResponse
from confroute.tools import parse_tool_calls

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

__all__ = [
    "adopt_bare_tool_call",
    "router_fields",
    "to_openai_messages",
    "to_openai_tools",
    "tool_arguments",
    "tool_calls_of",
    "tool_selections",
]

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)

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
        return [c.model_dump() if hasattr(c, "model_dump") else dict(c) for c in calls]
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


def _call_key(call: Mapping[str, Any]) -> tuple[str, str]:
    function = call.get("function") or {}
    arguments = tool_arguments(function.get("arguments"))
    return str(function.get("name")), json.dumps(arguments, sort_keys=True)


def adopt_bare_tool_call(
    routed: RoutedResponse,
    tools: Sequence[Mapping[str, Any]] | None,
    conversation: str | Sequence[Mapping[str, Any]] = (),
) -> RoutedResponse:
    """Read a local answer that is only a bare JSON tool call as that tool call.

    Small Qwen models sometimes write ``{"name": ..., "arguments": {...}}`` (maybe in a
    ```json fence) without the ``<tool_call>`` tags, which the core reads as plain text. When
    the whole local answer is such a call to an offered tool, and not a repeat of a call the
    conversation already made (small models echo the call after its result, which would loop
    an agent), it becomes a tool call here; the decision is unchanged. (Workaround until
    ``confroute.tools.parse_tool_calls`` does it.)
    """
    if not tools or routed.tool_calls or routed.remote is not None:
        return routed
    text = routed.text.strip()
    fenced = _FENCE.match(text)
    body = fenced.group(1) if fenced else text
    if not (body.startswith("{") and body.endswith("}") and '"name"' in body):
        return routed
    parsed = parse_tool_calls(f"<tool_call>{body}</tool_call>", tools)
    if parsed.malformed or not parsed.calls:
        return routed
    made = {
        _call_key(call)
        for message in ([] if isinstance(conversation, str) else conversation)
        for call in message.get("tool_calls") or []
    }
    if any(_call_key(call) in made for call in parsed.calls):
        return routed
    return replace(routed, text="", tool_calls=parsed.calls)


def router_fields(router: ConfRouter) -> dict[str, Any]:
    """The field values that describe a ready router (its key stays in the router)."""
    escalation = router.escalation
    policy = router.policy
    return {
        "local_model": router.local.name,
        "strong_model": escalation.model if escalation is not None else None,
        "estimator": router.estimator.name,
        "threshold": policy.threshold if isinstance(policy, FixedThreshold) else None,
        "api_base": escalation.api_base if escalation is not None else None,
        "timeout": escalation.timeout if escalation is not None else 120.0,
        "max_retries": escalation.max_retries if escalation is not None else 2,
        "fallbacks": list(escalation.fallbacks) if escalation is not None else [],
        "on_escalation_error": router.on_escalation_error,
        "max_tokens": router.defaults.max_new_tokens,
        "temperature": router.defaults.temperature,
    }
