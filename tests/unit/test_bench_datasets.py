"""Every loader on a tiny file written by the test (invented questions, real file layouts)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from confroute.bench.datasets import (
    DATA_DIR_ENV,
    DATASETS,
    BenchItem,
    load_dataset,
    resolve_data_dir,
    sample_items,
)
from confroute.errors import ConfigurationError


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _jsonl(rows: list[dict[str, object]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _gsm8k(root: Path, filename: str = "test.jsonl") -> None:
    _write(
        root,
        f"GSM8K/{filename}",
        _jsonl(
            [
                {"question": "1+1?", "answer": "1+1=2\n#### 2"},
                {"question": "Big?", "answer": "#### 1,000"},
            ]
        ),
    )


def _aqua(root: Path) -> None:
    row = {
        "question": "2*3?",
        "options": ["A)5", "B)6", "C)7", "D)8", "E)9"],
        "rationale": "",
        "correct": "B",
    }
    _write(root, "AQuA/test.json", json.dumps(row) + "\n")


def _kojima(relative: str, solutions: object) -> Callable[[Path], None]:
    def write(root: Path) -> None:
        rows = [
            {"iIndex": 7, "sQuestion": " Sum? ", "lEquations": ["X=1+2"], "lSolutions": solutions}
        ]
        _write(root, relative, json.dumps(rows))

    return write


def _svamp(root: Path) -> None:
    rows = [
        {
            "ID": "chal-1",
            "Body": "Tom has 3 apples",
            "Question": "How many now?",
            "Equation": "",
            "Answer": 3.0,
            "Type": "x",
        }
    ]
    _write(root, "SVAMP/SVAMP.json", json.dumps(rows))


def _csqa(root: Path, filename: str = "dev_rand_split.jsonl") -> None:
    row = {
        "id": "q1",
        "answerKey": "C",
        "question": {"stem": "Where?", "choices": [{"label": x, "text": f"t{x}"} for x in "ABCDE"]},
    }
    _write(root, f"CommonsenseQA/{filename}", _jsonl([row]))


def _strategyqa(root: Path) -> None:
    task = {
        "canary": "x",
        "examples": [
            {"input": "Can fish fly?", "target_scores": {"Yes": 0, "No": 1}, "target": "No."}
        ],
    }
    _write(root, "StrategyQA/task.json", json.dumps(task))


def _coin(root: Path) -> None:
    _write(
        root,
        "coin_flip/coin_flip.json",
        json.dumps({"examples": [{"question": "Heads?", "answer": "yes"}]}),
    )


def _letters(root: Path) -> None:
    _write(
        root,
        "last_letters/last_letters.json",
        json.dumps({"examples": [{"question": "Take the last letters", "answer": "Yajo"}]}),
    )


def _truthfulqa(root: Path) -> None:
    rows = [
        {
            "question": "Q?",
            "mc1_targets": {"right": 1, "w1": 0, "w2": 0, "w3": 0},
            "mc2_targets": {},
        }
    ]
    _write(root, "TruthfulQA/v1/mc_task.json", json.dumps(rows))


def _mmlu(root: Path) -> None:
    _write(root, "MMLU/test/anatomy_test.csv", 'Q one?,a,b,"c, with comma",d,C\nQ two?,a,b,c,d,A\n')


def _arc(folder: str) -> Callable[[Path], None]:
    def write(root: Path) -> None:
        rows = [
            {
                "instruction": "Please choose the correct answer to the question: Which bends?"
                "\n\nAnswer1: glass Answer2: rubber band Answer3: rock\n\nAnswer format: "
                "answer1/answer2/answer3",
                "input": "",
                "output": "",
                "answer": "answer2",
            }
        ]
        _write(root, f"{folder}/test.json", json.dumps(rows))
        _write(root, f"{folder}/question-answers.jsonl", _jsonl([{"id": "M_1", "answerKey": "B"}]))

    return write


def _obqa(root: Path) -> None:
    row = {
        "id": "8-1",
        "answerKey": "D",
        "question": {
            "stem": "Predators eat",
            "choices": [{"label": x, "text": x.lower()} for x in "ABCD"],
        },
    }
    _write(root, "OpenBookQA/test.jsonl", _jsonl([row]))


def _hellaswag(root: Path) -> None:
    _write(
        root,
        "HellaSwag/hellaswag_val_full.txt",
        "Cooking: A man cuts bread. he\n2\nsings.\nflies.\nputs it on a plate.\nsleeps.\n",
    )


def _boolq(root: Path) -> None:
    _write(
        root,
        "BoolQ/dev.jsonl",
        _jsonl(
            [{"question": "is water wet", "title": "W", "answer": True, "passage": "Water is wet."}]
        ),
    )


def _piqa(root: Path) -> None:
    _write(
        root,
        "PIQA/valid.jsonl",
        _jsonl(
            [
                {"goal": "Open a jar", "sol1": "twist", "sol2": "x"},
                {"goal": "Dry hair", "sol1": "wet", "sol2": "towel"},
            ]
        ),
    )
    _write(root, "PIQA/valid-labels.lst", "0\n1\n")


def _siqa(root: Path) -> None:
    row = {
        "context": "Ann helped.",
        "question": "How does Ann feel?",
        "answerA": "sad",
        "answerB": "glad",
        "answerC": "angry",
        "correct": "B",
    }
    _write(root, "SocialIQa/socialIQa_v1.4_dev.jsonl", _jsonl([row]))


def _winogrande(root: Path) -> None:
    row = {
        "qID": "w-1",
        "sentence": "The cup fell off the table because _ was tilted.",
        "option1": "the cup",
        "option2": "the table",
        "answer": "2",
    }
    _write(root, "WinoGrande/dev.jsonl", _jsonl([row]))


def _squad(root: Path) -> None:
    qa = {"id": "s1", "question": "Who won?", "answers": [{"text": "Ann"}, {"text": "Ann B"}]}
    data = {"data": [{"paragraphs": [{"context": "Ann B won.", "qas": [qa]}]}]}
    _write(root, "SQuAD/dev-v1.1.json", json.dumps(data))


# name -> (writer, first item's id, answer, format, number of options)
CASES: dict[str, tuple[Callable[[Path], None], str, str, str, int]] = {
    "gsm8k": (_gsm8k, "0", "2", "number", 0),
    "gsm8k_train": (lambda root: _gsm8k(root, "train.jsonl"), "0", "2", "number", 0),
    "aqua": (_aqua, "0", "B", "letter", 5),
    "multiarith": (_kojima("MultiArith/MultiArith.json", [3.0]), "7", "3", "number", 0),
    "addsub": (_kojima("AddSub/AddSub.json", ["3"]), "7", "3", "number", 0),
    "singleeq": (_kojima("SingleEq/questions.json", [0.5]), "7", "0.5", "number", 0),
    "svamp": (_svamp, "chal-1", "3", "number", 0),
    "commonsenseqa": (_csqa, "q1", "C", "letter", 5),
    "commonsenseqa_train": (
        lambda root: _csqa(root, "train_rand_split.jsonl"),
        "q1",
        "C",
        "letter",
        5,
    ),
    "strategyqa": (_strategyqa, "0", "no", "yes_no", 2),
    "coin_flip": (_coin, "0", "yes", "yes_no", 2),
    "last_letters": (_letters, "0", "yajo", "text", 0),
    "truthfulqa": (_truthfulqa, "0", "", "letter", 4),
    "mmlu": (_mmlu, "anatomy/0", "C", "letter", 4),
    "arc_challenge": (_arc("ARC-Challenge"), "M_1", "B", "letter", 3),
    "arc_easy": (_arc("ARC-Easy"), "M_1", "B", "letter", 3),
    "openbookqa": (_obqa, "8-1", "D", "letter", 4),
    "hellaswag": (_hellaswag, "0", "C", "letter", 4),
    "boolq": (_boolq, "0", "yes", "yes_no", 2),
    "piqa": (_piqa, "0", "A", "letter", 2),
    "siqa": (_siqa, "0", "B", "letter", 3),
    "winogrande": (_winogrande, "w-1", "B", "letter", 2),
    "squad": (_squad, "s1", "Ann", "text", 0),
}


def test_every_dataset_has_a_loader_test() -> None:
    assert set(CASES) == set(DATASETS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_loader_reads_its_format(name: str, tmp_path: Path) -> None:
    writer, item_id, answer, answer_format, options = CASES[name]
    writer(tmp_path)
    items = {i.item_id: i for i in load_dataset(name, tmp_path)}
    item = items[item_id]
    assert item.dataset == name
    assert item.answer_format == answer_format
    assert item.num_options == options
    if name == "truthfulqa":  # options are shuffled; the gold points at the right text
        assert item.options[item.letters.index(item.answer)] == "right"
        assert sorted(item.options) == ["right", "w1", "w2", "w3"]
    else:
        assert item.answer == answer


def test_details_of_some_formats(tmp_path: Path) -> None:
    for writer in (_mmlu, _arc("ARC-Challenge"), _aqua, _hellaswag, _boolq, _gsm8k, _svamp):
        writer(tmp_path)
    mmlu = {i.item_id: i for i in load_dataset("mmlu", tmp_path)}
    assert mmlu["anatomy/0"].options == ("a", "b", "c, with comma", "d")
    assert mmlu["anatomy/1"].answer == "A"
    [arc] = load_dataset("arc_challenge", tmp_path)
    assert arc.question == "Which bends?"
    assert arc.options == ("glass", "rubber band", "rock")
    [aqua] = load_dataset("aqua", tmp_path)
    assert aqua.options == ("5", "6", "7", "8", "9")
    [hs] = load_dataset("hellaswag", tmp_path)
    assert hs.question == "Cooking: A man cuts bread. he"
    assert hs.options[2] == "puts it on a plate."
    [boolq] = load_dataset("boolq", tmp_path)
    assert boolq.question == "Is water wet?" and boolq.passage == "Water is wet."
    gsm = {i.item_id: i for i in load_dataset("gsm8k", tmp_path)}
    assert gsm["1"].answer == "1000"
    [svamp] = load_dataset("svamp", tmp_path)
    assert svamp.question == "Tom has 3 apples. How many now?"


def test_piqa_label_count_must_match(tmp_path: Path) -> None:
    _piqa(tmp_path)
    _write(tmp_path, "PIQA/valid-labels.lst", "0\n")
    with pytest.raises(ConfigurationError, match="1 labels for 2 questions"):
        load_dataset("piqa", tmp_path)


def test_winogrande_labels_file_fills_missing_answers(tmp_path: Path) -> None:
    row = {"qID": "w-9", "sentence": "_ won.", "option1": "x", "option2": "y"}
    _write(tmp_path, "WinoGrande/dev.jsonl", _jsonl([row]))
    _write(tmp_path, "WinoGrande/dev-labels.lst", "1\n")
    [item] = load_dataset("winogrande", tmp_path)
    assert item.answer == "A"


def test_sample_is_stable_and_a_smaller_limit_is_a_prefix() -> None:
    items = [BenchItem(str(i), "d", f"q{i}", "1", "number") for i in range(50)]
    first = sample_items(items, 20, seed=0)
    assert [i.item_id for i in first] == [i.item_id for i in sample_items(items[::-1], 20)]
    assert sample_items(items, 10) == first[:10]
    assert sample_items(items, 20, seed=1) != first
    assert len(sample_items(items, None)) == 50


def test_data_dir_comes_from_the_argument_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    with pytest.raises(ConfigurationError, match="--data-dir"):
        resolve_data_dir(None)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert resolve_data_dir(None) == tmp_path
    with pytest.raises(ConfigurationError, match="does not exist"):
        resolve_data_dir(tmp_path / "nope")


def test_unknown_dataset_and_missing_file_say_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="choose from"):
        load_dataset("nope", tmp_path)
    with pytest.raises(ConfigurationError, match="file not found"):
        load_dataset("gsm8k", tmp_path)
