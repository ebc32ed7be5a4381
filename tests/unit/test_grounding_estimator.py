"""The grounding estimator's formula S * (c + (1 - c) * U) on scripted answers and contexts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from confroute import estimators
from confroute.errors import ConfigurationError
from confroute.estimators import EstimationContext, GroundedAnswer
from confroute.estimators.grounding import (
    context_text,
    copied_mask,
    copy_spans,
    copy_start_tokens,
    covered_chars,
)
from confroute.generation import Generation

PASSAGE = "In 2016 the Denver Broncos won Super Bowl 50 against the Carolina Panthers."


def gen(tokens: Sequence[str], probs: Sequence[float]) -> Generation:
    """A generation with the given tokens and token probabilities."""
    return Generation(
        text="".join(tokens),
        token_ids=tuple(range(len(tokens))),
        tokens=tuple(tokens),
        logprobs=tuple(math.log(p) for p in probs),
        top_logprobs=tuple(() for _ in tokens),
        entropies=tuple(0.0 for _ in tokens),
        finish_reason="stop",
        prompt_tokens=10,
    )


def ctx(passage: str = PASSAGE) -> EstimationContext:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Answer from the context."},
        {"role": "user", "content": f"Context: {passage}\n\nQuestion: Who won?"},
    ]
    return EstimationContext(messages=messages)


def test_registered_by_name_and_needs_only_logprobs() -> None:
    estimator = estimators.get("grounded_answer")
    assert isinstance(estimator, GroundedAnswer)
    assert estimator.requires == frozenset()
    assert "grounded_answer" in estimators.available()


def test_fully_copied_answer_is_worth_its_copy_start() -> None:
    answer = gen(["Denver", " Broncos"], [0.6, 0.99])
    assert GroundedAnswer(copy_starts=False).confidence(answer, ctx()) == pytest.approx(1.0)
    assert GroundedAnswer(copy_starts=True).confidence(answer, ctx()) == pytest.approx(0.6)


def test_uncopied_tokens_pull_towards_their_probability() -> None:
    answer = gen(["Denver", " Broncos", " won", " easily"], [0.5, 0.9, 0.9, 0.2])
    parts = GroundedAnswer().parts(answer, ctx())
    assert parts == pytest.approx({"coverage": 0.75, "uncopied": 0.2, "starts": 0.5})
    expected = 0.5 * (0.75 + 0.25 * 0.2)
    assert GroundedAnswer().confidence(answer, ctx()) == pytest.approx(expected)


def test_mean_is_geometric_and_min_is_the_least() -> None:
    answer = gen(["Broncos", " quickly", " easily"], [0.9, 0.4, 0.1])
    # coverage 1/3; uncopied probabilities 0.4 and 0.1
    mean = GroundedAnswer("mean", copy_starts=False).confidence(answer, ctx())
    low = GroundedAnswer("min", copy_starts=False).confidence(answer, ctx())
    assert mean == pytest.approx(1 / 3 + 2 / 3 * math.sqrt(0.4 * 0.1))
    assert low == pytest.approx(1 / 3 + 2 / 3 * 0.1)


def test_two_copies_each_have_a_start() -> None:
    answer = gen(["Denver", " Broncos", " beat", " Carolina", " Panthers"], [0.8, 1, 0.5, 0.2, 1])
    assert copied_mask(answer.tokens, PASSAGE) == [True, True, False, True, True]
    parts = GroundedAnswer().parts(answer, ctx())
    assert parts is not None
    assert parts["starts"] == pytest.approx(math.sqrt(0.8 * 0.2))


def test_punctuation_is_neutral() -> None:
    answer = gen(["Denver", " Broncos", "."], [1.0, 1.0, 0.01])
    assert copied_mask(answer.tokens, "the denver broncos") == [True, True, None]
    assert GroundedAnswer().confidence(answer, ctx()) == pytest.approx(1.0)


def test_short_whole_words_count_but_stray_fragments_do_not() -> None:
    assert all(covered_chars("50", PASSAGE))
    assert not any(covered_chars("an", "they want it"))
    assert covered_chars("Bowl 50", PASSAGE) == [True] * 7


def test_nothing_to_score_is_none() -> None:
    estimator = GroundedAnswer()
    assert estimator.confidence(gen([], []), ctx()) is None
    assert estimator.confidence(gen([".", " "], [0.5, 0.5]), ctx()) is None
    no_context = EstimationContext(messages=[{"role": "user", "content": "  "}])
    assert estimator.confidence(gen(["Broncos"], [0.9]), no_context) is None


def test_context_reads_every_turn_but_the_assistant() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": [{"type": "text", "text": "U"}, {"type": "image_url"}]},
        {"role": "assistant", "content": "A"},
        {"role": "tool", "content": "T"},
    ]
    assert context_text(messages) == "S\nU\nT"


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="'mean' or 'min'"):
        GroundedAnswer("median")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="min_chars"):
        GroundedAnswer(min_chars=0)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Denver", " Broncos", " won", " x", " 50", "!"]), st.floats(0.001, 1.0)
        ),
        min_size=1,
        max_size=8,
    ),
    st.booleans(),
    st.sampled_from(["mean", "min"]),
)
def test_confidence_is_in_unit_interval(
    pairs: list[tuple[str, float]], starts: bool, statistic: str
) -> None:
    answer = gen([t for t, _ in pairs], [p for _, p in pairs])
    value = GroundedAnswer(statistic, copy_starts=starts).confidence(answer, ctx())  # type: ignore[arg-type]
    assert value is None or 0.0 <= value <= 1.0


def test_pieces_spliced_from_different_places_each_start_a_copy() -> None:
    # "Denver" and "Panthers" are both in the passage, but not next to each other
    answer = gen(["Denver", " Panthers"], [0.9, 0.1])
    assert copied_mask(answer.tokens, PASSAGE) == [True, True]
    assert copy_start_tokens(answer.tokens, PASSAGE) == [0, 1]
    assert copy_spans("Denver Panthers", PASSAGE) == [(0, 7), (7, 15)]
    assert GroundedAnswer().confidence(answer, ctx()) == pytest.approx(math.sqrt(0.9 * 0.1))
