"""BFCL's AST grading, pinned on hand-made items written after BFCL's format description."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from confroute.bench.bfcl import BfclItem, grade_calls, load_bfcl, openai_tool
from confroute.errors import ConfigurationError

AREA = {
    "name": "area",
    "description": "Area of a triangle.",
    "parameters": {
        "type": "dict",
        "properties": {
            "base": {"type": "integer", "description": "Base."},
            "height": {"type": "float", "description": "Height."},
            "unit": {"type": "string", "description": "Unit, default 'units'."},
            "sides": {"type": "array", "items": {"type": "integer"}},
            "where": {
                "type": "dict",
                "properties": {"city": {"type": "string"}, "zip": {"type": "integer"}},
            },
            "exact": {"type": "boolean"},
        },
        "required": ["base", "height"],
    },
}
VOLUME = {
    "name": "volume",
    "description": "Volume of a cube.",
    "parameters": {"type": "dict", "properties": {"side": {"type": "integer"}}, "required": []},
}
EXPECTED = {
    "area": {
        "base": [10],
        "height": [5.0],
        "unit": ["units", ""],
        "sides": [[3, 4, 5], ""],
        "where": [{"city": ["New York", "NYC"], "zip": ["", 10001]}, ""],
        "exact": [True, ""],
    }
}


def _item(expected: tuple[dict[str, Any], ...] = (EXPECTED,)) -> BfclItem:
    functions = (AREA, VOLUME)
    return BfclItem(
        item_id="t_0",
        category="multiple" if expected else "irrelevance",
        messages=({"role": "user", "content": "area?"},),
        functions=functions,
        tools=tuple(openai_tool(f) for f in functions),
        expected=expected,
    )


def _grade(name: str, arguments: dict[str, Any], item: BfclItem | None = None) -> tuple[bool, str]:
    call = {"type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
    verdict = grade_calls(item or _item(), [call])
    return verdict.correct, verdict.reason


def test_required_only_and_optional_values_are_graded() -> None:
    assert _grade("area", {"base": 10, "height": 5.0}) == (True, "")
    assert _grade("area", {"base": 10, "height": 5.0, "unit": "units"})[0]
    wrong, reason = _grade("area", {"base": 10, "height": 5.0, "unit": "meters"})
    assert not wrong and "unit" in reason
    missing, reason = _grade("area", {"base": 10})
    assert not missing and "height" in reason


def test_types_int_for_float_yes_numeric_strings_and_bools_no() -> None:
    assert _grade("area", {"base": 10, "height": 5})[0]  # int accepted for a float
    assert not _grade("area", {"base": "10", "height": 5.0})[0]  # numeric string
    assert not _grade("area", {"base": 10, "height": "5"})[0]
    assert not _grade("area", {"base": 10.0, "height": 5.0})[0]  # float for an integer
    assert not _grade("area", {"base": True, "height": 5.0})[0]  # bool is no integer
    assert not _grade("area", {"base": 10, "height": 5.0, "exact": "true"})[0]


def test_strings_compare_as_bfcl_standardises_them() -> None:
    assert _grade("area", {"base": 10, "height": 5.0, "unit": "Units."})[0]
    assert _grade("area", {"base": 10, "height": 5, "where": {"city": "new-york"}})[0]


def test_lists_compare_element_wise() -> None:
    assert _grade("area", {"base": 10, "height": 5, "sides": [3, 4, 5]})[0]
    assert not _grade("area", {"base": 10, "height": 5, "sides": [3, 5, 4]})[0]
    assert not _grade("area", {"base": 10, "height": 5, "sides": [3, 4]})[0]
    assert not _grade("area", {"base": 10, "height": 5, "sides": [3, 4, "5"]})[0]


def test_nested_dicts_compare_key_by_key() -> None:
    assert _grade("area", {"base": 10, "height": 5, "where": {"city": "NYC", "zip": 10001}})[0]
    assert not _grade("area", {"base": 10, "height": 5, "where": {"city": "Boston"}})[0]
    assert not _grade("area", {"base": 10, "height": 5, "where": {"zip": 10001}})[0]
    extra = {"city": "NYC", "state": "NY"}
    assert not _grade("area", {"base": 10, "height": 5, "where": extra})[0]
    assert not _grade("area", {"base": 10, "height": 5, "where": {"city": "NYC", "zip": "1"}})[0]


def test_an_unknown_parameter_is_wrong() -> None:
    correct, reason = _grade("area", {"base": 10, "height": 5, "colour": "red"})
    assert not correct and "colour" in reason


def test_the_wrong_function_among_several_offered_is_wrong() -> None:
    correct, reason = _grade("volume", {"side": 10})
    assert not correct and "wrong function" in reason


def test_one_call_is_expected_and_irrelevance_wants_none() -> None:
    call = {"function": {"name": "area", "arguments": json.dumps({"base": 10, "height": 5})}}
    assert not grade_calls(_item(), []).correct
    assert not grade_calls(_item(), [call, call]).correct
    assert grade_calls(_item(()), []).correct
    assert not grade_calls(_item(()), [call]).correct


def test_any_of_several_accepted_calls_may_match() -> None:
    other = {"volume": {"side": [3]}}
    item = _item((EXPECTED, other))
    assert _grade("volume", {"side": 3}, item)[0]
    assert _grade("area", {"base": 10, "height": 5}, item)[0]


def test_tools_are_converted_to_json_schema_types() -> None:
    schema = openai_tool(AREA)["function"]["parameters"]
    assert schema["type"] == "object"
    kinds = {k: v.get("type") for k, v in schema["properties"].items()}
    assert kinds == {
        "base": "integer",
        "height": "number",
        "unit": "string",
        "sides": "array",
        "where": "object",
        "exact": "boolean",
    }
    assert schema["properties"]["sides"]["items"] == {"type": "integer"}
    assert schema["properties"]["where"]["properties"]["zip"] == {"type": "integer"}
    assert schema["required"] == ["base", "height"]


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_loader_reads_questions_and_possible_answers(tmp_path: Path) -> None:
    question = [[{"role": "user", "content": "area?"}]]
    _write(
        tmp_path / "BFCL/BFCL_v4_simple_python.json",
        [{"id": "simple_python_0", "question": question, "function": [AREA]}],
    )
    _write(
        tmp_path / "BFCL/possible_answer/BFCL_v4_simple_python.json",
        [{"id": "simple_python_0", "ground_truth": [EXPECTED]}],
    )
    _write(
        tmp_path / "BFCL/BFCL_v4_irrelevance.json",
        [{"id": "irrelevance_0", "question": question, "function": [VOLUME]}],
    )
    items = load_bfcl(tmp_path, ["simple_python", "irrelevance"])
    assert [(i.item_id, i.expects_call) for i in items] == [
        ("simple_python_0", True),
        ("irrelevance_0", False),
    ]
    assert items[0].tools[0]["function"]["name"] == "area"
    assert items[0].messages[0]["content"] == "area?"
    with pytest.raises(ConfigurationError, match="not found"):
        load_bfcl(tmp_path, ["multiple"])
    with pytest.raises(ConfigurationError, match="Unknown BFCL category"):
        load_bfcl(tmp_path, ["java"])
