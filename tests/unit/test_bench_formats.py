from __future__ import annotations

import pytest

from confroute.bench.datasets import BenchItem
from confroute.bench.formats import (
    FORMATS,
    extract_answer,
    extract_number,
    extract_yes_no,
    grade,
    messages_for,
    numbers_match,
)
from confroute.errors import ConfigurationError

MC = BenchItem("1", "t", "Which bends?", "B", "letter", options=("glass", "rubber band", "rock"))
YES_NO = BenchItem("2", "t", "Is water wet?", "yes", "yes_no", passage="Water is wet.")
NUMBER = BenchItem("3", "t", "How much?", "18", "number")
TEXT = BenchItem("4", "t", "Last letters?", "yajo", "text")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B", "B"),
        (" (B) ", "B"),
        ("B.", "B"),
        ("B) rubber band", "B"),
        ("Answer: C", "C"),
        ("The rubber band bends. Answer: B", "B"),
        ("The answer is A.", "A"),
        ("rubber band", "B"),
        ("I think glass or rock.", None),
        ("To determine which object bends, we", None),
        ("D", None),  # not an option of a 3-option question
        ("", None),
    ],
)
def test_letter_extraction(text: str, expected: str | None) -> None:
    assert extract_answer(text, MC) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes", "yes"),
        ("no.", "no"),
        ("True", "yes"),
        ("It rains a lot.\nAnswer: No", "no"),
        ("**Yes**, water is wet.", "yes"),
        ("maybe", None),
        ("yes and no", None),
    ],
)
def test_yes_no_extraction(text: str, expected: str | None) -> None:
    assert extract_yes_no(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("18", "18"),
        ("Answer: 1,234", "1234"),
        ("16 - 3 - 4 = 9 eggs, 9 * 2 = 18\n#### 18", "18"),
        ("She makes $18.00.", "18.00"),
        ("3 apples and 4 pears make 7", "7"),
        ("The answer is -2.5 degrees", "-2.5"),
        ("no number here", None),
    ],
)
def test_number_extraction(text: str, expected: str | None) -> None:
    assert extract_number(text) == expected


def test_graders() -> None:
    assert grade("18.00", NUMBER) and grade("18", NUMBER)
    assert not grade("18.5", NUMBER)
    assert not grade(None, NUMBER) and not grade(None, MC)
    assert grade("B", MC) and not grade("A", MC)
    assert grade("yes", YES_NO) and not grade("no", YES_NO)
    assert grade(extract_answer('Answer: "Yajo"', TEXT), TEXT)
    assert numbers_match("0.3333", "0.33333", rel_tol=1e-3)
    assert not numbers_match("x", "1")


def test_answer_only_prompt_is_firm_and_lists_options() -> None:
    [message] = messages_for(MC, "answer_only")
    assert message["role"] == "user"
    assert "A. glass\nB. rubber band\nC. rock" in message["content"]
    assert message["content"].endswith("Reply with just the letter, no explanation.")
    [boolq] = messages_for(YES_NO, "answer_only")
    assert boolq["content"].startswith("Passage: Water is wet.")
    assert "Question: Is water wet?" in boolq["content"]


def test_reasoning_formats_ask_for_an_answer_line() -> None:
    for name in ("brief_reasoning", "cot"):
        [message] = messages_for(NUMBER, name)
        assert "'Answer: X'" in message["content"]
    assert "step by step" in messages_for(NUMBER, "cot")[0]["content"]
    assert FORMATS["answer_only"].cap("letter") == 16
    assert FORMATS["cot"].cap("number") == 256


def test_unknown_format_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="choose from"):
        messages_for(MC, "haiku")


def test_soft_answer_only_prompt_leaves_room_for_a_confidence_request() -> None:
    [message] = messages_for(MC, "answer_only", firm=False)
    assert message["content"].endswith("Answer with the letter of the correct option.")
    assert "no explanation" not in message["content"]
