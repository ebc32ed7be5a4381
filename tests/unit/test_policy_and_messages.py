"""Fixed-threshold policy and message validation."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from confroute.errors import ConfigurationError, InvalidRequestError
from confroute.messages import as_messages, validate_messages
from confroute.policies import FixedThreshold


@pytest.mark.parametrize(
    ("threshold", "confidence", "escalate", "reason"),
    [
        (0.5, 0.49, True, "low_confidence"),
        (0.5, 0.5, False, "confident"),
        (0.5, 0.9, False, "confident"),
        (0.0, 0.0, False, "confident"),
        (1.0, 1.0, True, "low_confidence"),
        (0.5, None, True, "no_confidence"),
        (0.0, None, False, "no_confidence"),
    ],
)
def test_fixed_threshold(
    threshold: float, confidence: float | None, escalate: bool, reason: str
) -> None:
    verdict = FixedThreshold(threshold).decide(confidence)
    assert (verdict.escalate, verdict.reason, verdict.threshold) == (escalate, reason, threshold)


@pytest.mark.parametrize("bad", [-0.1, 1.01, math.nan])
def test_threshold_outside_unit_interval_is_refused(bad: float) -> None:
    with pytest.raises(ConfigurationError, match=r"\[0, 1\]"):
        FixedThreshold(bad)


@given(st.floats(0, 1), st.floats(0, 1))
def test_threshold_one_always_escalates_zero_never(confidence: float, threshold: float) -> None:
    assert FixedThreshold(1.0).decide(confidence).escalate
    assert not FixedThreshold(0.0).decide(confidence).escalate
    assert FixedThreshold(threshold).decide(confidence).escalate == (
        threshold >= 1.0 or confidence < threshold
    )


def test_messages_accept_text_parts_and_strings() -> None:
    assert as_messages("hi") == [{"role": "user", "content": "hi"}]
    clean = validate_messages(
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            }
        ]
    )
    assert clean == [{"role": "user", "content": "a\nb"}]


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        ([], "empty"),
        ([{"role": "system", "content": "be nice"}], "no user message"),
        ([{"role": "wizard", "content": "x"}], "role 'wizard'"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}], "image_url"),
        ("just a string", "list"),
    ],
)
def test_bad_messages_say_what_to_do(messages: object, fragment: str) -> None:
    with pytest.raises(InvalidRequestError, match=fragment):
        validate_messages(messages)  # type: ignore[arg-type]


def test_blank_prompt_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="empty"):
        as_messages("   ")
