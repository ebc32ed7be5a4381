"""BFCL (Berkeley Function Calling Leaderboard v4): tool-calling items and their AST grader.

The files are read from the data directory the user names (``BFCL/BFCL_v4_<category>.json``
and ``BFCL/possible_answer/BFCL_v4_<category>.json``, JSON Lines); nothing is copied. Three
categories are known: ``simple_python`` (one function offered, one call expected),
``multiple`` (2-4 offered, one call to the right one) and ``irrelevance`` (no offered function
fits: the right answer is no call).

BFCL writes parameter types with its own names (``dict``, ``integer``, ``float``, ``string``,
``boolean``, ``array``, ``tuple``, ``any``); :func:`openai_tool` turns a function into an
OpenAI tool (JSON Schema: ``object``, ``integer``, ``number``, ...), which is what backends
render with their native tool format.

Grading follows BFCL's AST checker (``bfcl_eval/eval_checker/ast_eval/ast_checker.py``):

- exactly one call, to the expected function;
- every required parameter present, and no parameter the function does not define;
- each given value of the declared type: ``integer`` takes an int (not a bool, not a numeric
  string), ``float`` takes an int or a float, ``string`` a string, ``boolean`` a bool,
  ``array``/``tuple`` a list (its items checked against ``items``), ``dict`` an object;
- each given value among the accepted ones of the possible answer; strings compare as BFCL
  does (lower-cased, with spaces and ``,./-_*^`` removed, ``'`` read as ``"``), lists element
  by element, nested dicts key by key (an unknown key is wrong, a missing key is wrong unless
  its accepted values hold ``""``);
- a parameter left out is fine only when its accepted values hold ``""``.

An ``irrelevance`` item is right when the answer holds no well-formed call (BFCL counts an
answer it cannot decode as a call as "no call" too).

>>> tool = openai_tool({"name": "f", "parameters": {"type": "dict", "properties": {
...     "x": {"type": "float"}}, "required": ["x"]}})
>>> tool["function"]["parameters"]["properties"]["x"]["type"]
'number'
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confroute.errors import ConfigurationError

__all__ = [
    "BFCL_CATEGORIES",
    "BfclItem",
    "Grade",
    "grade_calls",
    "load_bfcl",
    "openai_tool",
]

BFCL_CATEGORIES: tuple[str, ...] = ("simple_python", "multiple", "irrelevance")
"""The BFCL v4 files this loader reads (``BFCL/BFCL_v4_<category>.json``)."""

_NO_ANSWER_FILE = frozenset({"irrelevance"})

_JSON_TYPES = {
    "dict": "object",
    "integer": "integer",
    "float": "number",
    "string": "string",
    "boolean": "boolean",
    "array": "array",
    "tuple": "array",
}
"""BFCL type names -> JSON Schema types (``any`` has none: the schema leaves the type open)."""

_SCHEMA_KEYS = ("description", "enum", "default")
_STRIP = re.compile(r"[ ,./\-_*^]")


@dataclass(frozen=True)
class BfclItem:
    """One BFCL question.

    Attributes:
        item_id: BFCL's id (``simple_python_0``), unique across categories.
        category: ``simple_python``, ``multiple`` or ``irrelevance``.
        messages: The conversation (OpenAI shape).
        functions: The offered functions as BFCL writes them (types checked against these).
        tools: The same functions as OpenAI tools (what the model is shown).
        expected: The accepted calls, ``{function: {parameter: [accepted values]}}``; empty
            when the right answer is no call.
    """

    item_id: str
    category: str
    messages: tuple[dict[str, Any], ...]
    functions: tuple[dict[str, Any], ...]
    tools: tuple[dict[str, Any], ...]
    expected: tuple[dict[str, dict[str, list[Any]]], ...]

    @property
    def expects_call(self) -> bool:
        """Whether the right answer is a call (False for ``irrelevance``)."""
        return bool(self.expected)


@dataclass(frozen=True)
class Grade:
    """The verdict on one answer: right or wrong, and why it is wrong."""

    correct: bool
    reason: str = ""


def _schema(parameter: Mapping[str, Any]) -> dict[str, Any]:
    """One BFCL parameter description as JSON Schema (nested dicts and items converted)."""
    schema: dict[str, Any] = {k: parameter[k] for k in _SCHEMA_KEYS if k in parameter}
    kind = parameter.get("type")
    if kind in _JSON_TYPES:
        schema["type"] = _JSON_TYPES[kind]
    if "properties" in parameter:
        schema["properties"] = {k: _schema(v) for k, v in parameter["properties"].items()}
    if "required" in parameter:
        schema["required"] = list(parameter["required"])
    if "items" in parameter:
        schema["items"] = _schema(parameter["items"])
    return schema


def openai_tool(function: Mapping[str, Any]) -> dict[str, Any]:
    """A BFCL function description as an OpenAI tool (``{"type": "function", ...}``)."""
    parameters = _schema(function.get("parameters", {"type": "dict", "properties": {}}))
    parameters.setdefault("type", "object")
    parameters.setdefault("properties", {})
    return {
        "type": "function",
        "function": {
            "name": str(function["name"]),
            "description": str(function.get("description", "")),
            "parameters": parameters,
        },
    }


def _read_lines(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def load_bfcl(data_dir: str | Path, categories: Sequence[str] = BFCL_CATEGORIES) -> list[BfclItem]:
    """Read BFCL items from ``data_dir/BFCL`` (file order, categories in the order given).

    Raises:
        ConfigurationError: An unknown category, a missing file, or a question without its
            possible answer.
    """
    root = Path(data_dir).expanduser() / "BFCL"
    items: list[BfclItem] = []
    for category in categories:
        if category not in BFCL_CATEGORIES:
            raise ConfigurationError(
                f"Unknown BFCL category {category!r}; choose from: {', '.join(BFCL_CATEGORIES)}."
            )
        questions = root / f"BFCL_v4_{category}.json"
        answers_path = root / "possible_answer" / questions.name
        try:
            rows = list(_read_lines(questions))
            answers = (
                {}
                if category in _NO_ANSWER_FILE
                else {a["id"]: a["ground_truth"] for a in _read_lines(answers_path)}
            )
        except FileNotFoundError as error:
            raise ConfigurationError(
                f"BFCL file not found ({error.filename}); pass the data directory that holds "
                "BFCL/ (as in the team kit, see SOURCES.md)."
            ) from error
        for row in rows:
            if category not in _NO_ANSWER_FILE and row["id"] not in answers:
                raise ConfigurationError(f"BFCL item {row['id']} has no possible answer.")
            functions = tuple(dict(f) for f in row["function"])
            items.append(
                BfclItem(
                    item_id=str(row["id"]),
                    category=category,
                    messages=tuple(dict(m) for m in row["question"][0]),
                    functions=functions,
                    tools=tuple(openai_tool(f) for f in functions),
                    expected=tuple(answers.get(row["id"], ())),
                )
            )
    return items


# -- grading ---------------------------------------------------------------------------------


def _standard(text: str) -> str:
    """BFCL's string normalisation (``standardize_string``)."""
    return _STRIP.sub("", text).lower().replace("'", '"')


def _type_error(value: Any, schema: Mapping[str, Any], where: str) -> str:
    """Why ``value`` is not of the BFCL type ``schema`` declares ("" when it is)."""
    kind = schema.get("type", "any")
    if kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind == "string":
        ok = isinstance(value, str)
    elif kind == "boolean":
        ok = isinstance(value, bool)
    elif kind in ("array", "tuple"):
        if not isinstance(value, list):
            return f"{where}: expected {kind}, got {type(value).__name__}"
        items = schema.get("items", {})
        for index, element in enumerate(value):
            if reason := _type_error(element, items, f"{where}[{index}]"):
                return reason
        return ""
    elif kind == "dict":
        if not isinstance(value, dict):
            return f"{where}: expected dict, got {type(value).__name__}"
        properties = schema.get("properties", {})
        for key, element in value.items():
            if key in properties and (
                reason := _type_error(element, properties[key], f"{where}.{key}")
            ):
                return reason
        return ""
    else:  # "any" or a type BFCL does not name
        return ""
    return "" if ok else f"{where}: expected {kind}, got {type(value).__name__} {value!r}"


def _same(value: Any, accepted: Any) -> bool:
    """Whether one given value equals one accepted value (BFCL's comparison)."""
    if isinstance(accepted, dict):
        return isinstance(value, dict) and _dict_matches(value, accepted)
    if isinstance(accepted, list):
        return (
            isinstance(value, list)
            and len(value) == len(accepted)
            and all(_same(v, a) for v, a in zip(value, accepted, strict=True))
        )
    if isinstance(accepted, str):
        return isinstance(value, str) and _standard(value) == _standard(accepted)
    if isinstance(accepted, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(accepted, bool) and value == accepted
    if isinstance(accepted, (int, float)):
        return isinstance(value, (int, float)) and float(value) == float(accepted)
    return bool(value == accepted)


def _dict_matches(value: Mapping[str, Any], accepted: Mapping[str, Any]) -> bool:
    """A nested dict against ``{key: [accepted values]}`` (unknown keys and missing ones fail)."""
    if any(key not in accepted for key in value):
        return False
    for key, options in accepted.items():
        options = options if isinstance(options, list) else [options]
        if key not in value:
            if "" not in options:
                return False
        elif not any(_same(value[key], option) for option in options):
            return False
    return True


def _call_of(call: Mapping[str, Any]) -> tuple[str, Any]:
    """(name, arguments) of an OpenAI-shaped call (arguments decoded from JSON text)."""
    function = call.get("function", call)
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments or "{}")
        except ValueError:
            arguments = None
    return str(function.get("name", "")), arguments


def _grade_one(
    name: str, arguments: Any, functions: Sequence[Mapping[str, Any]], expected: Mapping[str, Any]
) -> Grade:
    if name not in expected:
        return Grade(False, f"wrong function {name!r} (expected {', '.join(expected)})")
    if not isinstance(arguments, dict):
        return Grade(False, "arguments are not an object")
    accepted: Mapping[str, list[Any]] = expected[name]
    schema: Mapping[str, Any] = next(
        (f.get("parameters", {}) for f in functions if f.get("name") == name), {}
    )
    properties = schema.get("properties", {})
    for required in schema.get("required", []):
        if required not in arguments:
            return Grade(False, f"required parameter {required!r} missing")
    for key, value in arguments.items():
        if key not in properties or key not in accepted:
            return Grade(False, f"unexpected parameter {key!r}")
        if reason := _type_error(value, properties[key], key):
            return Grade(False, reason)
        if not any(_same(value, option) for option in accepted[key] if option != ""):
            return Grade(False, f"{key}: {value!r} is not an accepted value")
    for key, options in accepted.items():
        if key not in arguments and "" not in options:
            return Grade(False, f"parameter {key!r} missing (it may not be omitted)")
    return Grade(True)


def grade_calls(item: BfclItem, calls: Sequence[Mapping[str, Any]]) -> Grade:
    """Grade the well-formed calls of an answer (OpenAI shape; empty for no call or malformed).

    Args:
        item: The question.
        calls: The calls parsed from the answer (:func:`confroute.tools.parse_tool_calls`);
            an answer whose call is malformed has none.
    """
    if not item.expects_call:
        return Grade(True) if not calls else Grade(False, "called a function; none fits")
    if not calls:
        return Grade(False, "no call")
    if len(calls) != 1:
        return Grade(False, f"{len(calls)} calls; expected one")
    name, arguments = _call_of(calls[0])
    reasons = []
    for expected in item.expected:
        verdict = _grade_one(name, arguments, item.functions, expected)
        if verdict.correct:
            return verdict
        reasons.append(verdict.reason)
    return Grade(False, "; ".join(reasons))
