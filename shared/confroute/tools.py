"""Tool calls written by a local model: find them in the answer text and check their shape.

Qwen2.5 (and other Hermes-style chat templates) write a tool call as
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``. A call that names an offered tool
and carries a JSON object of arguments is *well-formed*; anything else that opens a tool call is
*malformed*, and the router escalates it with reason ``malformed_tool_call``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ParsedToolCalls", "normalize_tool_calls_for_template", "parse_tool_calls", "tool_names"]

_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


@dataclass(frozen=True)
class ParsedToolCalls:
    """What a local answer holds in the way of tool calls.

    Attributes:
        calls: Well-formed calls in the OpenAI shape (``id``, ``type``, ``function.name``,
            ``function.arguments`` as a JSON string).
        content: The answer text with the tool-call blocks removed.
        malformed: Why an attempted call could not be used ("" when none was malformed).
    """

    calls: list[dict[str, Any]] = field(default_factory=list)
    content: str = ""
    malformed: str = ""


def tool_names(tools: Sequence[Mapping[str, Any]]) -> set[str]:
    """Names of OpenAI-shaped tool definitions (``{"type": "function", "function": {...}}``)."""
    names = set()
    for tool in tools:
        function = tool.get("function", tool)
        if isinstance(function, Mapping) and function.get("name"):
            names.add(str(function["name"]))
    return names


def parse_tool_calls(text: str, tools: Sequence[Mapping[str, Any]]) -> ParsedToolCalls:
    """Extract tool calls from a local answer.

    Args:
        text: The local model's answer.
        tools: The tools that were offered (OpenAI shape).
    """
    if "<tool_call>" not in text:
        return ParsedToolCalls(content=text)
    allowed = tool_names(tools)
    calls: list[dict[str, Any]] = []
    for block in _BLOCK.findall(text):
        try:
            payload = json.loads(block)
        except json.JSONDecodeError:
            return ParsedToolCalls(content=text, malformed="tool call is not valid JSON")
        if not isinstance(payload, Mapping):
            return ParsedToolCalls(content=text, malformed="tool call is not a JSON object")
        name = payload.get("name")
        arguments = payload.get("arguments", payload.get("parameters", {}))
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                return ParsedToolCalls(content=text, malformed="tool arguments are not JSON")
        if name not in allowed:
            return ParsedToolCalls(content=text, malformed=f"unknown tool {name!r}")
        if not isinstance(arguments, Mapping):
            return ParsedToolCalls(content=text, malformed="tool arguments are not an object")
        calls.append(
            {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)},
            }
        )
    content = _BLOCK.sub("", text).strip()
    return ParsedToolCalls(calls=calls, content=content)


def normalize_tool_calls_for_template(message: Mapping[str, Any]) -> dict[str, Any]:
    """Copy of an assistant message with tool-call arguments as dicts (templates want them)."""
    result = dict(message)
    calls = []
    for call in message.get("tool_calls") or []:
        function = dict(call.get("function", {}))
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                function["arguments"] = json.loads(arguments or "{}")
            except json.JSONDecodeError:
                function["arguments"] = {"raw": arguments}
        calls.append({**call, "function": function})
    if calls:
        result["tool_calls"] = calls
    return result
