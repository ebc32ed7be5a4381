"""The SQuAD grader (official v1.1 normalisation, EM and token F1) and the loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from confroute.bench.datasets import load_dataset
from confroute.bench.formats import grade
from confroute.bench.items import BenchItem
from confroute.bench.squad import (
    exact_match,
    normalize_answer,
    rag_messages,
    squad_correct,
    squad_scores,
    token_f1,
)


def test_normalisation_drops_case_punctuation_articles_and_spaces() -> None:
    assert normalize_answer("  The  Denver-Broncos, an NFL team!  ") == "denverbroncos nfl team"
    assert normalize_answer("A theatre") == "theatre"  # only whole-word articles go


def test_exact_match_ignores_articles_and_punctuation() -> None:
    assert exact_match("the Broncos.", "Broncos") == 1.0
    assert exact_match("Broncos fans", "Broncos") == 0.0


def test_f1_partial_overlap() -> None:
    # prediction "denver broncos team" vs gold "broncos": precision 1/3, recall 1 -> F1 0.5
    assert token_f1("Denver Broncos team", "the Broncos") == pytest.approx(0.5)
    # 2 shared of 4 predicted and 2 gold: precision 0.5, recall 1 -> 2/3
    assert token_f1("in 1990 in Paris", "1990 Paris") == pytest.approx(2 / 3)


def test_best_of_several_references() -> None:
    em, f1 = squad_scores("Santa Clara, California", ["Levi's Stadium", "Santa Clara"])
    assert em == 0.0
    assert f1 == pytest.approx(0.8)  # 2 of 3 predicted, 2 of 2 gold
    assert squad_scores("Levi's Stadium", ["Santa Clara", "Levis Stadium"]) == (1.0, 1.0)


def test_empty_answer_scores_zero() -> None:
    assert squad_scores("", ["Broncos"]) == (0.0, 0.0)
    assert token_f1("the.", "Broncos") == 0.0  # normalises to nothing
    assert squad_scores("Broncos", []) == (0.0, 0.0)


def test_correct_means_f1_at_least_one_half() -> None:
    item = BenchItem("q", "squad", "Who?", "Denver Broncos", "text", aliases=("Broncos",))
    assert squad_correct("The Broncos from Denver", item)  # F1 vs "Denver Broncos" = 2/3
    assert not squad_correct("Carolina Panthers", item)
    assert squad_correct("Denver Broncos team", item)  # 2/3 precision, recall 1 -> 0.8


def test_loader_and_prompt(tmp_path: Path) -> None:
    folder = tmp_path / "SQuAD"
    folder.mkdir()
    qas = [
        {"id": "a1", "question": "Who won? ", "answers": [{"text": "X"}, {"text": "X"}]},
        {"id": "a2", "question": "Where?", "answers": [{"text": "Y"}, {"text": "Y town"}]},
    ]
    data = {"data": [{"paragraphs": [{"context": "X won in Y town.", "qas": qas}]}]}
    (folder / "dev-v1.1.json").write_text(json.dumps(data), encoding="utf-8")
    items = {i.item_id: i for i in load_dataset("squad", tmp_path)}
    assert items["a1"].aliases == ()
    assert items["a2"].answer == "Y"
    assert items["a2"].aliases == ("Y town",)
    messages = rag_messages(items["a1"])
    assert messages[0]["role"] == "system"
    assert "X won in Y town." in messages[1]["content"]
    assert messages[1]["content"].endswith("Question: Who won?")


def test_benchmark_grade_uses_the_squad_grader() -> None:
    item = BenchItem("q", "squad", "Who?", "Denver Broncos", "text")
    assert grade("the denver broncos team", item)  # F1 0.8, not an exact text match
    assert not grade(None, item)
