"""Every estimator formula against hand-computed values, plus hypothesis properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from confroute import estimators
from confroute.errors import ConfigurationError
from confroute.estimators import EstimationContext
from confroute.estimators.follow_up import answer_token_ids, p_true_from_logprobs
from confroute.estimators.sampling import jaccard_degree_confidence
from confroute.estimators.single_pass import option_token_index
from tests.fakes import scripted_generation

CTX = EstimationContext(messages=[{"role": "user", "content": "q"}])
SINGLE_PASS = ("avg_token_prob", "perplexity", "mean_token_entropy", "min_token_prob")


def conf(name: str, text: str, probs: tuple[float, ...]) -> float | None:
    return estimators.get(name).confidence(scripted_generation(text, probs), CTX)


def test_registry_has_every_method_of_the_paper_and_the_extras() -> None:
    names = estimators.available()
    for name in (*estimators.PAPER_METHODS, "mean_token_entropy", "min_token_prob"):
        assert name in names
    assert "logistic_combination" in names
    assert estimators.get("p_true").name == "p_true"
    with pytest.raises(ConfigurationError, match="choose one of: avg_token_prob"):
        estimators.get("nope")


# -- single pass: probabilities 0.9, 0.5, 0.2 ---------------------------------------------------


def test_avg_token_prob_is_the_mean_probability() -> None:
    assert conf("avg_token_prob", "abc", (0.9, 0.5, 0.2)) == pytest.approx(1.6 / 3)


def test_perplexity_is_the_geometric_mean() -> None:
    # exp(mean(log p)) = (0.9 * 0.5 * 0.2) ** (1/3) = 0.09 ** (1/3)
    assert conf("perplexity", "abc", (0.9, 0.5, 0.2)) == pytest.approx(0.09 ** (1 / 3))
    assert conf("perplexity", "abc", (0.9, 0.5, 0.2)) == pytest.approx(0.4481404746557165)


def test_min_token_prob_is_the_smallest_probability() -> None:
    assert conf("min_token_prob", "abc", (0.9, 0.5, 0.2)) == pytest.approx(0.2)


def test_mean_token_entropy_is_exp_of_minus_mean_entropy() -> None:
    # the scripted entropies are -p ln p: 0.0948245, 0.3465736, 0.3218876; mean 0.2544286
    expected = math.exp(-(0.0948245 + 0.3465736 + 0.3218876) / 3)
    assert conf("mean_token_entropy", "abc", (0.9, 0.5, 0.2)) == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.7753594539407888, abs=1e-6)


def test_avg_token_prob_of_an_option_answer_is_the_option_token_probability() -> None:
    # "(B)" in three tokens: the letter's probability, not the mean 0.6667
    generation = scripted_generation("(B)", (0.9, 0.3, 0.8))
    assert option_token_index(generation) == 1
    assert conf("avg_token_prob", "(B)", (0.9, 0.3, 0.8)) == pytest.approx(0.3)
    assert conf("perplexity", "(B)", (0.9, 0.3, 0.8)) == pytest.approx(0.216 ** (1 / 3))
    assert option_token_index(scripted_generation("Bob", (0.5, 0.5, 0.5))) is None


@pytest.mark.parametrize("name", SINGLE_PASS)
def test_an_empty_answer_has_no_confidence(name: str) -> None:
    assert conf(name, "", ()) is None


@pytest.mark.parametrize("name", SINGLE_PASS)
def test_a_certain_answer_has_confidence_one(name: str) -> None:
    assert conf(name, "abc", (1.0, 1.0, 1.0)) == pytest.approx(1.0)


probabilities = st.lists(
    st.floats(min_value=1e-6, max_value=1.0, allow_nan=False), min_size=1, max_size=12
)


@settings(max_examples=150, deadline=None)
@given(probabilities)
def test_single_pass_confidences_lie_in_the_unit_interval(probs: list[float]) -> None:
    for name in SINGLE_PASS:
        value = conf(name, "some answer text", tuple(probs))
        assert value is not None and 0.0 <= value <= 1.0


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=1e-6, max_value=1.0), st.floats(min_value=0.0, max_value=1.0)
        ),
        min_size=1,
        max_size=12,
    )
)
def test_raising_every_token_probability_never_lowers_confidence(
    pairs: list[tuple[float, float]],
) -> None:
    low = tuple(p for p, _ in pairs)
    high = tuple(p + (1.0 - p) * lift for p, lift in pairs)  # each >= its low counterpart
    for name in ("avg_token_prob", "perplexity", "min_token_prob"):
        before = conf(name, "some answer text", low)
        after = conf(name, "some answer text", high)
        assert before is not None and after is not None
        assert after >= before - 1e-12


# -- jaccard_degree --------------------------------------------------------------------------


def test_jaccard_degree_hand_computed() -> None:
    # sets {a,b}, {a,b}, {a,c}: W12 = 1, W13 = W23 = 1/3; sum W = 3 + 2 * (5/3) = 19/3
    # U = (m^2 - sum W) / m^2 = (9 - 19/3) / 9 = 8/27, confidence = 19/27
    assert jaccard_degree_confidence(["a b", "A, b!", "a c"]) == pytest.approx(19 / 27)


def test_jaccard_degree_extremes() -> None:
    assert jaccard_degree_confidence(["391"] * 5) == pytest.approx(1.0)
    assert jaccard_degree_confidence(["a", "b", "c", "d", "e"]) == pytest.approx(1 / 5)
    assert jaccard_degree_confidence(["", ""]) == pytest.approx(1.0)
    with pytest.raises(ConfigurationError):
        jaccard_degree_confidence([])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet="abc xyz", max_size=12), min_size=2, max_size=6))
def test_jaccard_degree_range_and_order_invariance(texts: list[str]) -> None:
    value = jaccard_degree_confidence(texts)
    assert 1 / len(texts) - 1e-12 <= value <= 1.0
    assert jaccard_degree_confidence(list(reversed(texts))) == pytest.approx(value)


# -- p_true ----------------------------------------------------------------------------------


def test_p_true_renormalises_over_all_variants() -> None:
    probs = np.array([0.3, 0.1, 0.2, 0.1, 0.05, 0.25])
    # True variants 1, 2 (0.3 in all); False variant 3 (0.1): 0.3 / 0.4
    assert p_true_from_logprobs(np.log(probs), [1, 2], [3]) == pytest.approx(0.75)
    # only the mass on the words counts, however little of it there is
    assert p_true_from_logprobs(np.log(probs), [4], [3]) == pytest.approx(0.05 / 0.15)
    assert p_true_from_logprobs(np.log(probs), [], [3]) is None


def test_answer_token_ids_cover_case_space_and_punctuation_variants() -> None:
    vocabulary = [
        ("True", 0),
        ("\u0120True", 1),
        ("true", 2),
        ("False", 3),
        ("\u0120false", 4),
        ("Truly", 5),
        ("\u0120TRUE", 6),
        ("True.", 7),
        ("<true>", 8),
        ("\u2581False", 9),
    ]
    assert answer_token_ids(vocabulary, {"true"}, skip={8}) == [0, 1, 2, 6, 7]
    assert answer_token_ids(vocabulary, {"false"}) == [3, 4, 9]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(min_value=-30, max_value=0), min_size=4, max_size=4),
    st.floats(min_value=0.0, max_value=10.0),
)
def test_p_true_lies_in_the_unit_interval_and_rises_with_the_true_mass(
    logits: list[float], boost: float
) -> None:
    values = np.array(logits)
    before = p_true_from_logprobs(values, [0, 1], [2])
    boosted = values.copy()
    boosted[0] += boost
    after = p_true_from_logprobs(boosted, [0, 1], [2])
    assert before is not None and after is not None
    assert 0.0 <= before <= 1.0 and 0.0 <= after <= 1.0
    assert after >= before - 1e-12
