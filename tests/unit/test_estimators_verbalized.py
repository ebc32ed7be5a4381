"""Parsing verbalized confidence, and the verbalized_1s prompt transform."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from confroute.estimators import EstimationContext, Verbalized1S, parse_confidence
from confroute.estimators.prompts import VERBALIZED_1S_INSTRUCTION
from confroute.estimators.verbalized import strip_confidence
from tests.fakes import scripted_generation


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("85", 0.85),
        ("85%", 0.85),
        ("0.85", 0.85),
        ("Confidence: 85/100", 0.85),
        ("confidence: 85 / 100.", 0.85),
        ("I am about 85 percent sure.", 0.85),
        ("My confidence level is 90.", 0.9),
        ("**Confidence:** 75%", 0.75),
        ("8/10", 0.8),
        ("7 out of 10", 0.7),
        ("The answer is 391.\nConfidence: 90", 0.9),
        ("Answer 3. Confidence 40%", 0.4),
        ("0", 0.0),
        ("100", 1.0),
        ("1.0", 1.0),
        (".5", 0.5),
        ("  I'm confident: 60 ", 0.6),
    ],
)
def test_parse_confidence_reads_the_usual_forms(text: str, expected: float) -> None:
    assert parse_confidence(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["no idea", "", "150", "Confidence: high", "250%"])
def test_parse_confidence_gives_none_when_nothing_valid(text: str) -> None:
    assert parse_confidence(text) is None


def test_the_number_after_the_keyword_wins_over_numbers_in_the_answer() -> None:
    assert parse_confidence("17*23 = 391. Confidence: 65%") == pytest.approx(0.65)
    assert parse_confidence("17*23 = 391.", require_keyword=True) is None


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_parse_confidence_is_none_or_in_the_unit_interval(text: str) -> None:
    value = parse_confidence(text)
    assert value is None or 0.0 <= value <= 1.0


@settings(max_examples=101, deadline=None)
@given(st.integers(min_value=0, max_value=100), st.sampled_from(["{}", "{}%", "{}/100"]))
def test_every_percentage_parses_exactly(number: int, form: str) -> None:
    text = "Confidence: " + form.format(number)
    assert parse_confidence(text) == pytest.approx(number / 100)


def test_strip_confidence_keeps_the_answer() -> None:
    assert strip_confidence("The answer is 391.\nConfidence: 90") == "The answer is 391."
    assert strip_confidence("391 (Confidence: 80%)") == "391"
    assert strip_confidence("B\n**Confidence:** 75%") == "B"
    assert strip_confidence("no statement") == "no statement"


def test_verbalized_1s_transforms_the_last_user_message_only() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "What is 17*23?"},
    ]
    changed = Verbalized1S().transform_messages(messages)
    assert changed[3]["content"] == "What is 17*23?" + VERBALIZED_1S_INSTRUCTION
    assert changed[:3] == messages[:3]
    assert messages[3]["content"] == "What is 17*23?"  # the caller's list is untouched


def test_verbalized_1s_reads_the_stated_confidence_or_none() -> None:
    estimator = Verbalized1S()
    ctx = EstimationContext(messages=[{"role": "user", "content": "q"}])
    said = scripted_generation("391\nConfidence: 90%", (0.5,))
    assert estimator.confidence(said, ctx) == pytest.approx(0.9)
    bare = scripted_generation("391\n70", (0.5,))
    assert estimator.confidence(bare, ctx) == pytest.approx(0.7)
    silent = scripted_generation("The answer is 391.", (0.5,))
    assert estimator.confidence(silent, ctx) is None
