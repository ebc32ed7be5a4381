"""Answer formats: recognising the requested format, the final-answer span, chance corrections."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from confroute.answer_format import ANY, AnswerFormat, detect_format
from confroute.bench.answer_formats import (
    answer_span,
    chance_corrected,
    chance_lift,
    final_answer_text,
)
from confroute.estimators import EstimationContext
from confroute.estimators.single_pass import Perplexity
from confroute.generation import Generation


def generation(tokens: list[str], probs: list[float]) -> Generation:
    return Generation(
        text="".join(tokens),
        token_ids=tuple(range(len(tokens))),
        tokens=tuple(tokens),
        logprobs=tuple(math.log(p) for p in probs),
        top_logprobs=tuple(() for _ in tokens),
        entropies=tuple(0.1 * (i + 1) for i in range(len(tokens))),
        finish_reason="stop",
        prompt_tokens=5,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Which?\n\nA. red\nB. green\nC. blue\nD. grey\n\nReply with the letter.", ("letter", 4)),
        ("Pick one:\n(A) yes it is\n(B) no it is not", ("letter", 2)),
        ("Q1\nA) x\nB) y\nC) z\nQ2\nA) p\nB) q\nC) r\nD) s\nE) t", ("letter", 5)),
        ("Is the sky blue? Answer with yes or no.", ("yes_no", 2)),
        ("True or false: water boils at 90C.", ("yes_no", 2)),
        ("Tom has 3 apples... Reply with just the final number.", ("number", 0)),
        ("Write a haiku about autumn.", ("any", 0)),
        ("A. lonely option line only", ("any", 0)),
    ],
)
def test_detect_format_reads_the_last_user_message(text: str, expected: tuple[str, int]) -> None:
    found = detect_format(
        [{"role": "system", "content": "A. x\nB. y"}, {"role": "user", "content": text}]
    )
    assert (found.kind, found.options) == expected


def test_detect_format_reads_content_parts_and_plain_strings() -> None:
    parts = [{"role": "user", "content": [{"type": "text", "text": "Yes or no: is 2 prime?"}]}]
    assert detect_format(parts) == AnswerFormat("yes_no", 2)
    assert detect_format("A. a\nB. b\nC. c") == AnswerFormat("letter", 3)
    assert detect_format([]) == ANY


def test_final_answer_text_finds_the_answer_after_reasoning() -> None:
    text = "Both are plausible, but B is wrong.\nAnswer: C"
    start, end = final_answer_text(text, AnswerFormat("letter", 4))
    assert text[start:end] == "C"
    text = "12 + 30 = 42, so 42 apples."
    start, end = final_answer_text(text, AnswerFormat("number"))
    assert text[start:end] == "42"
    start, end = final_answer_text("  Paris.  ", ANY)
    assert "  Paris.  "[start:end] == "Paris."


def test_answer_span_keeps_only_the_answer_tokens() -> None:
    gen = generation(
        ["Because", " x", ".", "\n", "Answer", ":", " C"], [0.5, 0.5, 0.9, 0.9, 0.99, 0.99, 0.8]
    )
    span = answer_span(gen, AnswerFormat("letter", 4))
    assert span.tokens == (" C",)
    assert span.logprobs == pytest.approx((math.log(0.8),))
    assert span.entropies == pytest.approx((0.7,))
    context = EstimationContext(messages=[])
    assert Perplexity().confidence(span, context) == pytest.approx(0.8)
    # the whole answer is the answer: unchanged
    whole = generation(["B"], [0.6])
    assert answer_span(whole, AnswerFormat("letter", 4)) is whole
    # tokens that do not spell the text: unchanged
    odd = generation(["Answer", ":", " C"], [0.5, 0.5, 0.5])
    odd = Generation(**{**odd.__dict__, "text": "something else"})
    assert answer_span(odd) is odd


def test_chance_corrections_hand_computed() -> None:
    assert chance_corrected(0.25, 4) == 0.0
    assert chance_corrected(0.625, 4) == pytest.approx(0.5)
    assert chance_corrected(1.0, 5) == 1.0
    assert chance_corrected(0.1, 2) == 0.0
    assert chance_corrected(0.7, 0) == 0.7
    assert chance_corrected(None, 4) is None
    assert chance_lift(0.5, 4) == pytest.approx(0.5)  # twice chance
    assert chance_lift(0.4, 5) == pytest.approx(0.5)  # twice chance, other k: same score
    assert chance_lift(0.2, 4) == 0.0
    assert chance_lift(0.0, 4) == 0.0
    assert chance_lift(0.9, 1) == 0.9


@given(
    st.floats(0.0, 1.0),
    st.floats(0.0, 1.0),
    st.integers(2, 10),
)
def test_corrections_stay_in_range_and_keep_the_order(a: float, b: float, k: int) -> None:
    low, high = min(a, b), max(a, b)
    for correct in (chance_corrected, chance_lift):
        x, y = correct(low, k), correct(high, k)
        assert x is not None and y is not None
        assert 0.0 <= x <= y <= 1.0
