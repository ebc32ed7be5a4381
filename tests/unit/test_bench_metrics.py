from __future__ import annotations

import math

import numpy as np
import pytest

from confroute.bench import metrics as m
from confroute.errors import ConfigurationError


def test_auroc_of_a_perfect_ranking_is_one_and_of_a_reversed_one_zero() -> None:
    correct = [False, False, True, True]
    assert m.auroc([0.1, 0.2, 0.8, 0.9], correct) == 1.0
    assert m.auroc([0.9, 0.8, 0.2, 0.1], correct) == 0.0


def test_auroc_counts_ties_as_one_half_and_is_nan_for_one_class() -> None:
    assert m.auroc([0.5, 0.5, 0.5, 0.5], [False, True, False, True]) == 0.5
    # one wrong answer tied with one of two right ones: pairs (w, r1) tie, (w, r2) win
    assert m.auroc([0.3, 0.3, 0.9], [False, True, True]) == 0.75
    assert math.isnan(m.auroc([0.1, 0.2], [True, True]))


def test_auroc_matches_the_pairwise_definition() -> None:
    rng = np.random.default_rng(1)
    conf = rng.integers(0, 5, 40).astype(float)  # many ties
    correct = rng.random(40) < 0.5
    pos, neg = conf[correct], conf[~correct]
    pairs = [(p > n) + 0.5 * (p == n) for p in pos for n in neg]
    assert m.auroc(conf, correct) == pytest.approx(np.mean(pairs))


def test_routing_curve_by_hand() -> None:
    slm = [0, 0, 1, 1]
    llm = [1, 1, 1, 1]
    curve = m.routing_curve([0.1, 0.2, 0.8, 0.9], slm, llm)
    assert curve.rates.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert curve.accuracy.tolist() == [0.5, 0.75, 1.0, 1.0, 1.0]
    assert curve.slm_accuracy == 0.5 and curve.llm_accuracy == 1.0
    assert m.apgr(curve) == pytest.approx(0.75)
    assert m.cpt(curve, 0.5) == 0.25
    assert m.cpt(curve, 0.8) == 0.5
    assert curve.area == pytest.approx(0.15625 + 0.21875 + 0.25 + 0.25)
    assert curve.at(0.125) == pytest.approx(0.625)


def test_routing_curve_escalating_a_right_answer_to_a_wrong_llm_loses() -> None:
    curve = m.routing_curve([0.1, 0.9], [1, 0], [0, 1])
    assert curve.accuracy.tolist() == [0.5, 0.0, 0.5]


def test_tied_confidences_give_the_random_curve_exactly() -> None:
    slm = [1, 0, 1, 0, 0]
    llm = [1, 1, 1, 0, 1]
    tied = m.routing_curve([0.4] * 5, slm, llm)
    rnd = m.random_curve(slm, llm)
    np.testing.assert_allclose(tied.accuracy, rnd.accuracy)
    assert m.apgr(rnd) == pytest.approx(0.5)


def test_oracle_curve_dominates_every_routing_curve() -> None:
    rng = np.random.default_rng(0)
    slm = rng.random(50) < 0.4
    llm = rng.random(50) < 0.7
    oracle = m.oracle_curve(slm, llm)
    for _ in range(20):
        curve = m.routing_curve(rng.random(50), slm, llm)
        assert np.all(oracle.accuracy >= curve.accuracy - 1e-12)
    assert m.apgr(oracle) > 0.5


def test_random_routing_has_apgr_about_one_half() -> None:
    rng = np.random.default_rng(3)
    slm = rng.random(200) < 0.4
    llm = rng.random(200) < 0.8
    values = [m.apgr(m.routing_curve(rng.random(200), slm, llm)) for _ in range(200)]
    assert np.mean(values) == pytest.approx(0.5, abs=0.02)


def test_apgr_is_nan_when_the_strong_model_is_no_better() -> None:
    curve = m.routing_curve([0.1, 0.9], [1, 1], [1, 0])
    assert math.isnan(m.apgr(curve))
    assert math.isnan(m.cpt(curve, 0.5))


def test_prr_perfect_random_and_reversed() -> None:
    correct = [0, 0, 1, 1]
    assert m.prr([0.1, 0.2, 0.8, 0.9], correct) == pytest.approx(1.0)
    assert m.prr([0.5] * 4, correct) == pytest.approx(0.0)
    assert m.prr([0.9, 0.8, 0.2, 0.1], correct) < 0
    assert math.isnan(m.prr([0.1, 0.2], [1, 1]))


def test_ece_by_hand() -> None:
    assert m.ece([1.0, 1.0, 0.0, 0.0], [1, 1, 0, 0]) == pytest.approx(0.0)
    assert m.ece([0.5] * 4, [1, 0, 1, 0]) == pytest.approx(0.0)
    assert m.ece([1.0, 1.0], [0, 0]) == pytest.approx(1.0)
    # two bins: 0.9 claimed, 1/2 right (gap .4); 0.1 claimed, 1/2 right (gap .4)
    assert m.ece([0.9, 0.9, 0.1, 0.1], [1, 0, 1, 0]) == pytest.approx(0.4)


def test_relative_accuracy_curve_by_hand() -> None:
    conf = [0.9, 0.8, 0.2, 0.1]
    slm = [1, 1, 0, 0]
    llm = [1, 1, 1, 0]
    values = m.relative_accuracy_curve(conf, slm, llm, fractions=(0.5, 0.75, 1.0))
    np.testing.assert_allclose(values, [1.0, (2 / 3) / 1.0, 0.5 / 0.75])


def test_effective_confidence_puts_unparsed_and_missing_lowest() -> None:
    values = m.effective_confidence([0.2, None, 0.9, float("nan")], [True, True, False, True])
    assert values.tolist() == [0.2, -1.0, -1.0, -1.0]


def test_bootstrap_interval_contains_the_estimate_and_is_reproducible() -> None:
    rng = np.random.default_rng(5)
    correct = rng.random(200) < 0.5
    conf = correct * 0.3 + rng.random(200)
    low, high = m.bootstrap_ci(m.auroc, conf, correct, n_boot=300, seed=1)
    point = m.auroc(conf, correct)
    assert low < point < high
    assert high - low < 0.2
    assert (low, high) == m.bootstrap_ci(m.auroc, conf, correct, n_boot=300, seed=1)


def test_mismatched_lengths_are_rejected() -> None:
    with pytest.raises(ConfigurationError, match="different lengths"):
        m.auroc([0.1, 0.2], [True])


def test_kept_accuracy_by_hand_and_with_ties() -> None:
    conf = [0.1, 0.2, 0.8, 0.9]
    correct = [False, True, True, True]
    assert m.kept_accuracy(conf, correct, 0.0) == 0.75
    assert m.kept_accuracy(conf, correct, 0.25) == 1.0  # the wrong one, least sure, set aside
    assert m.kept_accuracy(conf, correct, 0.5) == 1.0
    assert math.isnan(m.kept_accuracy(conf, correct, 1.0))  # nothing kept
    # two tied answers, one right and one wrong: setting one aside keeps it half the time
    assert m.kept_accuracy([0.5, 0.5, 0.9], [False, True, True], 1 / 3) == pytest.approx(0.75)


def test_route_summary_reports_each_estimator_and_the_large_models_curve() -> None:
    slm = [False, False, True, True]
    llm = [True, True, True, False]
    summary = m.route_summary(
        {"good": [0.1, 0.2, 0.8, 0.9], "bad": [0.9, 0.8, 0.2, 0.1]},
        slm,
        llm,
        {"good": [0.9, 0.8, 0.7, 0.1]},
        rates=(0.5,),
    )
    assert summary["n"] == 4 and summary["small_accuracy"] == 0.5
    assert summary["large_accuracy"] == 0.75
    route = summary["route"]
    assert isinstance(route, dict)
    # escalating the two least sure (both wrong locally, both right remotely) gives 1.0
    assert route["good"]["accuracy_at"] == {"0.5": 1.0} and route["good"]["cpt50"] == 0.25
    assert route["bad"]["accuracy_at"] == {"0.5": 0.25}
    assert route["good"]["apgr"] > route["bad"]["apgr"]
    assert summary["large_kept_accuracy"] == {"good": {"0.5": 1.0}}
    assert summary["oracle_apgr"] >= route["good"]["apgr"]


def test_auroc_cell_gives_the_auroc_inside_its_interval_rounded() -> None:
    confidence = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.6, 0.4, 0.1])
    correct = np.array([1, 1, 0, 1, 0, 1, 0, 0], dtype=bool)
    cell = m.auroc_cell(confidence, correct, n_boot=200)
    assert cell["auroc"] == round(m.auroc(confidence, correct), 3) == 0.812
    assert cell["low"] <= cell["auroc"] <= cell["high"] <= 1.0
    separated = m.auroc_cell([0.9, 0.8, 0.2, 0.1], [True, True, False, False], n_boot=50)
    assert separated == {"auroc": 1.0, "low": 1.0, "high": 1.0}
