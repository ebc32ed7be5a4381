"""Tool calls written by a local model: find them in the answer text and check their shape.

Qwen2.5 (and other Hermes-style chat templates) write a tool call as
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``. A call that names an offered tool
and carries a JSON object of arguments is *well-formed*; anything else that opens a tool call
(a block that is cut off or not JSON, an unknown tool, arguments that are not an object) is
*malformed*, and the router escalates it with reason ``malformed_tool_call``.

Small models also write calls without the tags, as bare JSON: the whole answer is one object
``{"name": ..., "arguments": {...}}``, several such objects, or a JSON list of them, maybe in a
```` ```json ```` fence. Such an answer is read as tool calls when every object names an offered
tool; otherwise it is plain text (JSON that names no offered tool is an answer, not a call). A
bare call to an offered tool that is cut off before its JSON ends is malformed.

Only strict JSON counts: ``NaN``, ``Infinity``, a number too large for a float, or nesting too
deep to decode make a call malformed (tagged) or the text not JSON (bare), never an error of
the request. A call-shaped bare object whose ``name`` is not a string is malformed as well.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ParsedToolCalls",
    "normalize_tool_calls_for_template",
    "parse_tool_calls",
    "repeated_tool_calls",
    "tool_names",
]

_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(</tool_call>|$)", re.DOTALL)
_FENCE = re.compile(r"```(?:json|JSON)?[ \t]*\n?(.*?)\s*```", re.DOTALL)
_OPEN_FENCE = re.compile(r"```(?:json|JSON)?[ \t]*\n?(.*)", re.DOTALL)
_BARE_START = re.compile(r'^\[?\s*\{\s*"name"\s*:\s*"([^"\\]*)"')
_CALL_KEYS = frozenset({"name", "arguments", "parameters"})


@dataclass(frozen=True)
class ParsedToolCalls:
    """What a local answer holds in the way of tool calls.

    Attributes:
        calls: Well-formed calls in the OpenAI shape (``id``, ``type``, ``function.name``,
            ``function.arguments`` as a JSON string).
        content: The answer text with the tool calls removed.
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


def _not_json(constant: str) -> Any:
    """Refuse ``NaN`` / ``Infinity`` / ``-Infinity``, which Python's decoder takes by default."""
    raise json.JSONDecodeError(f"{constant} is not a JSON number", constant, 0)


def _finite(number: str) -> float:
    """A JSON number as a float; one too large for a float (``1e400``) is not usable."""
    value = float(number)
    if value in (math.inf, -math.inf):
        raise json.JSONDecodeError("number out of range", number, 0)
    return value


_DECODER = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite)
"""Strict JSON: no NaN or infinities, no number that overflows a float."""

_UNDECODABLE = (ValueError, RecursionError)
"""What decoding model-written JSON can raise: bad JSON (``JSONDecodeError`` is a
``ValueError``), an integer over Python's digit limit, or nesting too deep for the decoder."""


def _strict_json(text: str) -> Any:
    """``text`` decoded as strict JSON (raises one of :data:`_UNDECODABLE` if it is not)."""
    body = text.strip()
    value, end = _DECODER.raw_decode(body, 0)
    if end != len(body):
        raise json.JSONDecodeError("Extra data", body, end)
    return value


def _openai_call(name: str, arguments: Mapping[str, Any]) -> dict[str, Any] | None:
    """The call in the OpenAI shape; None when its arguments cannot be written back as JSON."""
    try:
        encoded = json.dumps(arguments, allow_nan=False)
    except (TypeError, *_UNDECODABLE):
        return None
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": name, "arguments": encoded},
    }


def _arguments_of(payload: Mapping[str, Any]) -> Any:
    """The arguments of a call payload, decoded when given as a JSON string (None if not JSON)."""
    arguments = payload.get("arguments", payload.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            return _strict_json(arguments.strip() or "{}")
        except _UNDECODABLE:
            return None
    return arguments


def parse_tool_calls(text: str, tools: Sequence[Mapping[str, Any]]) -> ParsedToolCalls:
    """Extract tool calls from a local answer (tagged, or the whole answer as bare JSON).

    Args:
        text: The local model's answer.
        tools: The tools that were offered (OpenAI shape).

    Returns:
        The well-formed calls and the remaining text, or (with ``malformed`` set and the text
        as content) why an attempted call cannot be used.
    """
    allowed = tool_names(tools)
    if "<tool_call>" not in text:
        return _parse_bare(text, allowed)
    calls: list[dict[str, Any]] = []
    for block, closing in _BLOCK.findall(text):
        try:
            payload = _strict_json(block)
        except _UNDECODABLE:
            reason = "is not valid JSON" if closing else "is cut off (no closing tag)"
            return ParsedToolCalls(content=text, malformed=f"tool call {reason}")
        if not isinstance(payload, Mapping):
            return ParsedToolCalls(content=text, malformed="tool call is not a JSON object")
        name = payload.get("name")
        arguments = _arguments_of(payload)
        if arguments is None:
            return ParsedToolCalls(content=text, malformed="tool arguments are not JSON")
        if not isinstance(name, str):
            return ParsedToolCalls(content=text, malformed="tool name is not a string")
        if name not in allowed:
            return ParsedToolCalls(content=text, malformed=f"unknown tool {name!r}")
        if not isinstance(arguments, Mapping):
            return ParsedToolCalls(content=text, malformed="tool arguments are not an object")
        call = _openai_call(name, arguments)
        if call is None:
            return ParsedToolCalls(content=text, malformed="tool arguments are not JSON")
        calls.append(call)
    content = _BLOCK.sub("", text).strip()
    return ParsedToolCalls(calls=calls, content=content)


def _parse_bare(text: str, allowed: set[str]) -> ParsedToolCalls:
    """Read an answer that is only bare (maybe fenced) JSON tool calls; else it is content."""
    plain = ParsedToolCalls(content=text)
    body = text.strip()
    if not allowed or not body.startswith(("{", "[", "```")):
        return plain
    if body.startswith("```"):
        fenced = _FENCE.fullmatch(body)
        if fenced is None and body.count("```") == 1:
            fenced = _OPEN_FENCE.fullmatch(body)  # the answer stopped inside the fence
        if fenced is None:
            return plain
        body = fenced.group(1).strip()
    payloads, broken_at = _json_values(body)
    if broken_at is not None:
        # JSON that opens a call to an offered tool but does not parse was cut off (token cap)
        # or is broken: an attempted call. Other broken JSON is just text.
        start = _BARE_START.match(body[broken_at:])
        if start is not None and start.group(1) in allowed:
            return ParsedToolCalls(content=text, malformed="bare tool call is not valid JSON")
        return plain
    if not payloads:
        return plain
    calls = []
    for payload in payloads:
        name = payload.get("name")
        if payload.keys() <= _CALL_KEYS and "name" in payload and not isinstance(name, str):
            return ParsedToolCalls(content=text, malformed="bare tool call name is not a string")
        if not (payload.keys() <= _CALL_KEYS and name in allowed):
            return plain
        arguments = _arguments_of(payload)
        if not isinstance(arguments, Mapping):
            return plain
        call = _openai_call(str(name), arguments)
        if call is None:
            return ParsedToolCalls(content=text, malformed="bare tool call is not valid JSON")
        calls.append(call)
    return ParsedToolCalls(calls=calls, content="")


def _json_values(text: str) -> tuple[list[dict[str, Any]], int | None]:
    """The JSON objects that make up the whole text (objects, or lists of objects).

    Returns:
        The objects (empty when the text holds anything else) and the position of a value that
        does not decode (None when every value decodes).
    """
    objects: list[dict[str, Any]] = []
    position = 0
    while position < len(text):
        try:
            value, position = _DECODER.raw_decode(text, position)
        except _UNDECODABLE:
            return [], position
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(item, dict) for item in items):
            return [], None
        objects.extend(items)
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
    return objects, None


def _call_key_of(call: Any) -> tuple[str, str] | None:
    """A comparable (name, canonical JSON arguments) of an OpenAI-shaped call; None if unusable."""
    function = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(function, Mapping):
        return None
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments or "{}")
        except _UNDECODABLE:
            return None
    try:
        return str(function.get("name")), json.dumps(arguments, sort_keys=True)
    except (TypeError, *_UNDECODABLE):
        return None


def repeated_tool_calls(
    calls: Sequence[Mapping[str, Any]], messages: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The ``calls`` that repeat a call the conversation already made and a tool answered.

    A call repeats an earlier one when the tool name is the same and the arguments are equal as
    parsed JSON (key order and spacing do not matter). The earlier call counts as answered when
    a later tool message carries its ``tool_call_id``, or carries no id at all.

    Args:
        calls: OpenAI-shaped tool calls of the new answer.
        messages: The conversation (OpenAI-shaped messages) the answer replies to.
    """
    made: dict[tuple[str, str], set[str]] = {}
    answered_ids: set[str] = set()
    anonymous_after: set[tuple[str, str]] = set()
    for message in messages:
        if message.get("role") == "assistant":
            history = message.get("tool_calls")
            for call in history if isinstance(history, Sequence) else []:
                key = _call_key_of(call)
                if key is not None:
                    made.setdefault(key, set()).add(str(call.get("id") or ""))
        elif message.get("role") == "tool":
            if message.get("tool_call_id"):
                answered_ids.add(str(message["tool_call_id"]))
            else:
                anonymous_after.update(made)
    repeats = []
    for call in calls:
        key = _call_key_of(call)
        if key is None or key not in made:
            continue
        if key in anonymous_after or made[key] & answered_ids:
            repeats.append(dict(call))
    return repeats


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
            except _UNDECODABLE:
                function["arguments"] = {"raw": arguments}
        calls.append({**call, "function": function})
    if calls:
        result["tool_calls"] = calls
    return result
