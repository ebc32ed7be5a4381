"""Tool binding: LangChain tools to OpenAI tool dicts, and what ``tool_choice`` asks of the models.

The core offers tools to the local model through its chat template and passes them to the strong
model through LiteLLM. ``tool_choice`` is honoured in the messages both models see: a named tool
is the only one offered, and ``"any"``/``"required"``/a name add a system instruction to call a
tool; ``"none"`` offers no tools.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from confroute.errors import ConfigurationError
from confroute.router import RoutedResponse
from confroute.tools import parse_tool_calls, tool_names

__all__ = [
    "ToolInput",
    "apply_tool_choice",
    "check_tool_choice",
    "recover_tool_calls",
    "to_openai_tools",
]

ToolInput = dict[str, Any] | type | Callable[..., Any] | BaseTool
"""What ``bind_tools`` accepts: a LangChain tool, a function, a pydantic class or a schema."""

_FORCE = frozenset({"any", "required"})
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def to_openai_tools(tools: Sequence[ToolInput]) -> list[dict[str, Any]]:
    """Tools as OpenAI tool dicts (``{"type": "function", "function": {...}}``)."""
    return [convert_to_openai_tool(tool) for tool in tools]


def _chosen_name(tool_choice: Any) -> str | None:
    """The tool a choice names, or None when it names none."""
    if isinstance(tool_choice, str) and tool_choice not in _FORCE | {"auto", "none"}:
        return tool_choice
    if isinstance(tool_choice, Mapping):
        function = tool_choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else tool_choice.get("name")
        if isinstance(name, str):
            return name
        raise ConfigurationError(
            f"tool_choice {dict(tool_choice)!r} names no tool; use "
            "{'type': 'function', 'function': {'name': TOOL}} or the tool's name."
        )
    return None


def check_tool_choice(tool_choice: Any, tools: Sequence[Mapping[str, Any]]) -> Any:
    """Validate ``tool_choice`` against the bound tools; return it normalised.

    Raises:
        ConfigurationError: The choice is not ``None``, ``"auto"``, ``"none"``, ``"any"``,
            ``"required"``, ``True``, or the name of a bound tool.
    """
    if tool_choice is True:
        return "any"
    if tool_choice is None or tool_choice is False:
        return None
    if not isinstance(tool_choice, (str, Mapping)):
        raise ConfigurationError(
            f"tool_choice must be 'auto', 'none', 'any', 'required' or a tool name, got "
            f"{tool_choice!r}."
        )
    name = _chosen_name(tool_choice)
    if name is not None and name not in tool_names(tools):
        raise ConfigurationError(
            f"tool_choice names {name!r}, which is not among the bound tools "
            f"{sorted(tool_names(tools))}; bind it or choose 'any'."
        )
    return tool_choice


def _with_instruction(messages: list[dict[str, Any]], instruction: str) -> list[dict[str, Any]]:
    if messages and messages[0]["role"] == "system":
        first = dict(messages[0])
        first["content"] = f"{first.get('content') or ''}\n\n{instruction}".strip()
        return [first, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]


def apply_tool_choice(
    messages: list[dict[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None,
    tool_choice: Any,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The messages and tools to send, given a (checked) ``tool_choice``.

    Returns:
        The messages (with a system instruction when a call is required) and the tools to
        offer (None when no tool is offered).
    """
    if not tools:
        return messages, None
    offered = [dict(tool) for tool in tools]
    if tool_choice in (None, "auto"):
        return messages, offered
    if tool_choice == "none":
        return messages, None
    # Only the last turn decides: after a tool result the model should be free to answer.
    if messages and messages[-1]["role"] == "tool":
        return messages, offered
    name = _chosen_name(tool_choice)
    if name is None:
        instruction = "You are a helpful assistant. Answer by calling one of the provided tools."
        return _with_instruction(messages, instruction), offered
    chosen = [tool for tool in offered if name in tool_names([tool])]
    instruction = f"You are a helpful assistant. Answer by calling the tool `{name}`."
    return _with_instruction(messages, instruction), chosen


def recover_tool_calls(
    response: RoutedResponse, tools: Sequence[Mapping[str, Any]] | None
) -> RoutedResponse:
    """Read an answer that is only a tool call written as bare or fenced JSON as that call.

    Small Qwen models (the bundled 0.5B, and the 1.5B served in process) often write
    ``{"name": ..., "arguments": {...}}`` (or the same inside a ```` ```json ```` fence) instead
    of ``<tool_call>`` tags. When the whole answer is such objects (one or more, each naming an
    offered tool), they are returned as tool calls, checked by the core's parser; anything else
    is unchanged.
    """
    if not tools or response.tool_calls:
        return response
    text = response.text.strip()
    fenced = _FENCE.match(text)
    payloads = _json_objects(fenced.group(1) if fenced else text)
    if not payloads or not all("name" in payload for payload in payloads):
        return response
    blocks = "".join(f"<tool_call>{json.dumps(p)}</tool_call>" for p in payloads)
    parsed = parse_tool_calls(blocks, tools)
    if parsed.malformed or len(parsed.calls) != len(payloads):
        return response
    return replace(response, text="", tool_calls=parsed.calls)


def _json_objects(text: str) -> list[dict[str, Any]]:
    """The JSON objects that make up the whole text (one or more), else an empty list."""
    decoder = json.JSONDecoder()
    objects: list[dict[str, Any]] = []
    position = 0
    while position < len(text):
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            return []
        if not isinstance(value, dict):
            return []
        objects.append(value)
        while position < len(text) and text[position].isspace():
            position += 1
    return objects
