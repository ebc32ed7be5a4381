"""Tool binding: LangChain tools to OpenAI tool dicts, and what ``tool_choice`` asks of the models.

The core offers tools to the local model through its chat template and passes them to the strong
model through LiteLLM. ``tool_choice`` is honoured in the messages both models see: a named tool
is the only one offered, and ``"any"``/``"required"``/a name add a system instruction to call a
tool; ``"none"`` offers no tools.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from confroute.errors import ConfigurationError
from confroute.tools import tool_names

__all__ = [
    "ToolInput",
    "apply_tool_choice",
    "check_tool_choice",
    "to_openai_tools",
]

ToolInput = dict[str, Any] | type | Callable[..., Any] | BaseTool
"""What ``bind_tools`` accepts: a LangChain tool, a function, a pydantic class or a schema."""

_FORCE = frozenset({"any", "required"})


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
