"""The dataset loaders: each reads one dataset's files from the data directory.

Files are laid out as in the team kit (``GSM8K/test.jsonl``, ``MMLU/test/*.csv``, ...); see
:func:`confroute.bench.datasets.load_dataset`, which picks the loader from :data:`DATASETS`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from confroute.bench.items import LETTERS, BenchItem
from confroute.bench.squad import load_squad
from confroute.errors import ConfigurationError

__all__ = ["DATASETS"]


# -- helpers ---------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def _number_text(value: Any) -> str:
    """``39.0`` -> ``"39"``; ``"0.5"`` -> ``"0.5"``; commas removed."""
    number = float(str(value).replace(",", ""))
    return str(int(number)) if number.is_integer() else repr(number)


def _yes_no(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value).strip().lower()
    if text in ("yes", "true", "1"):
        return "yes"
    if text in ("no", "false", "0"):
        return "no"
    raise ConfigurationError(f"Expected a yes/no or true/false answer, got {value!r}.")


def _shuffled(item_id: str, options: Sequence[str], gold: int) -> tuple[tuple[str, ...], int]:
    """Options in a fixed pseudo-random order (seeded by the id) and the gold's new index."""
    order = list(range(len(options)))
    random.Random(hashlib.sha256(item_id.encode()).hexdigest()).shuffle(order)
    return tuple(options[i] for i in order), order.index(gold)


def _letter_item(
    dataset: str,
    item_id: str,
    question: str,
    options: Sequence[str],
    gold: int,
    passage: str = "",
) -> BenchItem:
    if not 0 <= gold < len(options):
        raise ConfigurationError(f"{dataset} item {item_id}: gold index {gold} out of range.")
    return BenchItem(
        item_id=item_id,
        dataset=dataset,
        question=question.strip(),
        options=tuple(o.strip() for o in options),
        answer=LETTERS[gold],
        answer_format="letter",
        passage=passage,
    )


# -- math word problems ----------------------------------------------------------------------


def _gsm8k_split(dataset: str, filename: str) -> Callable[[Path], Iterator[BenchItem]]:
    def load(root: Path) -> Iterator[BenchItem]:
        for index, row in enumerate(_read_jsonl(root / "GSM8K" / filename)):
            answer = row["answer"].rsplit("####", 1)[-1].strip()
            yield BenchItem(str(index), dataset, row["question"], _number_text(answer), "number")

    return load


def _aqua(root: Path) -> Iterator[BenchItem]:
    path = root / "AQuA" / "test.json"
    with path.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    for index, row in enumerate(rows):
        options = [re.sub(r"^\s*[A-E]\s*\)\s*", "", o) for o in row["options"]]
        gold = LETTERS.index(row["correct"].strip().upper())
        yield _letter_item("aqua", str(index), row["question"], options, gold)


def _kojima_arith(dataset: str, relative: str) -> Callable[[Path], Iterator[BenchItem]]:
    def load(root: Path) -> Iterator[BenchItem]:
        for row in _read_json(root / relative):
            yield BenchItem(
                str(row["iIndex"]),
                dataset,
                row["sQuestion"].strip(),
                _number_text(row["lSolutions"][0]),
                "number",
            )

    return load


def _svamp(root: Path) -> Iterator[BenchItem]:
    for row in _read_json(root / "SVAMP" / "SVAMP.json"):
        body = row["Body"].strip()
        question = f"{body}{'' if body.endswith('.') else '.'} {row['Question'].strip()}"
        yield BenchItem(row["ID"], "svamp", question, _number_text(row["Answer"]), "number")


# -- yes/no and free text --------------------------------------------------------------------


def _strategyqa(root: Path) -> Iterator[BenchItem]:
    task = _read_json(root / "StrategyQA" / "task.json")
    for index, row in enumerate(task["examples"]):
        gold = max(row["target_scores"], key=row["target_scores"].get)
        yield BenchItem(str(index), "strategyqa", row["input"], _yes_no(gold), "yes_no")


def _coin_flip(root: Path) -> Iterator[BenchItem]:
    for index, row in enumerate(_read_json(root / "coin_flip" / "coin_flip.json")["examples"]):
        yield BenchItem(str(index), "coin_flip", row["question"], _yes_no(row["answer"]), "yes_no")


def _last_letters(root: Path) -> Iterator[BenchItem]:
    rows = _read_json(root / "last_letters" / "last_letters.json")["examples"]
    for index, row in enumerate(rows):
        answer = row["answer"].strip().lower()
        yield BenchItem(str(index), "last_letters", row["question"], answer, "text")


def _boolq(root: Path) -> Iterator[BenchItem]:
    for index, row in enumerate(_read_jsonl(root / "BoolQ" / "dev.jsonl")):
        question = row["question"].strip()
        question = question[0].upper() + question[1:] + ("" if question.endswith("?") else "?")
        yield BenchItem(
            str(index), "boolq", question, _yes_no(row["answer"]), "yes_no", passage=row["passage"]
        )


# -- multiple choice -------------------------------------------------------------------------


def _truthfulqa(root: Path) -> Iterator[BenchItem]:
    """TruthfulQA MC1 (v1, 817 questions); the options are shuffled with a fixed seed per id."""
    for index, row in enumerate(_read_json(root / "TruthfulQA" / "v1" / "mc_task.json")):
        targets = row["mc1_targets"]
        options = list(targets)
        gold = [targets[o] for o in options].index(1)
        item_id = str(index)
        shuffled, new_gold = _shuffled(f"truthfulqa/{item_id}", options, gold)
        yield _letter_item("truthfulqa", item_id, row["question"], shuffled, new_gold)


def _commonsenseqa_split(dataset: str, filename: str) -> Callable[[Path], Iterator[BenchItem]]:
    def load(root: Path) -> Iterator[BenchItem]:
        for row in _read_jsonl(root / "CommonsenseQA" / filename):
            choices = row["question"]["choices"]
            labels = [c["label"] for c in choices]
            yield _letter_item(
                dataset,
                row["id"],
                row["question"]["stem"],
                [c["text"] for c in choices],
                labels.index(row["answerKey"]),
            )

    return load


def _openbookqa(root: Path) -> Iterator[BenchItem]:
    for row in _read_jsonl(root / "OpenBookQA" / "test.jsonl"):
        choices = row["question"]["choices"]
        labels = [c["label"] for c in choices]
        yield _letter_item(
            "openbookqa",
            row["id"],
            row["question"]["stem"],
            [c["text"] for c in choices],
            labels.index(row["answerKey"]),
        )


def _mmlu(root: Path) -> Iterator[BenchItem]:
    folder = root / "MMLU" / "test"
    files = sorted(folder.glob("*_test.csv"))
    if not files:
        raise FileNotFoundError(folder / "*_test.csv")
    for path in files:
        subject = path.name.removesuffix("_test.csv")
        with path.open(encoding="utf-8", newline="") as handle:
            for index, row in enumerate(csv.reader(handle)):
                if len(row) != 6:
                    raise ConfigurationError(f"{path}: row {index} has {len(row)} columns, not 6.")
                gold = LETTERS.index(row[5].strip().upper())
                yield _letter_item("mmlu", f"{subject}/{index}", row[0], row[1:5], gold)


_ARC_OPTION = re.compile(r"(?:^|\s)Answer(\d+):\s*")


def _arc(dataset: str, folder: str) -> Callable[[Path], Iterator[BenchItem]]:
    def load(root: Path) -> Iterator[BenchItem]:
        rows = _read_json(root / folder / "test.json")
        ids_path = root / folder / "question-answers.jsonl"
        ids = [r["id"] for r in _read_jsonl(ids_path)] if ids_path.is_file() else []
        for index, row in enumerate(rows):
            text = row["instruction"].removeprefix("Please choose the correct answer to the ")
            text = text.removeprefix("question:").strip()
            body = text.rsplit("\n\nAnswer format:", 1)[0]
            question, _, listing = body.partition("\n\nAnswer1:")
            parts = _ARC_OPTION.split("Answer1:" + listing)
            # parts: ["", "1", text1, "2", text2, ...]
            options = [parts[i + 1] for i in range(1, len(parts) - 1, 2)]
            gold = int(row["answer"].removeprefix("answer")) - 1
            item_id = ids[index] if len(ids) == len(rows) else str(index)
            yield _letter_item(dataset, item_id, question, options, gold)

    return load


def _hellaswag(root: Path) -> Iterator[BenchItem]:
    path = root / "HellaSwag" / "hellaswag_val_full.txt"
    with path.open(encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    count = len(lines) // 6
    for index in range(count):
        context, gold, *endings = lines[index * 6 : index * 6 + 6]
        label, _, ctx = context.partition(": ")
        question = f"{label}: {ctx}" if ctx else context
        yield _letter_item("hellaswag", str(index), question, endings, int(gold))


def _piqa(root: Path) -> Iterator[BenchItem]:
    folder = root / "PIQA"
    labels_path = folder / "valid-labels.lst"
    labels = labels_path.read_text(encoding="utf-8").split()
    rows = list(_read_jsonl(folder / "valid.jsonl"))
    if len(labels) != len(rows):
        raise ConfigurationError(
            f"{labels_path} has {len(labels)} labels for {len(rows)} questions; use the matching "
            "valid.jsonl / valid-labels.lst pair."
        )
    for index, (row, label) in enumerate(zip(rows, labels, strict=True)):
        item_id = str(row.get("id", index))
        yield _letter_item("piqa", item_id, row["goal"], [row["sol1"], row["sol2"]], int(label))


def _siqa(root: Path) -> Iterator[BenchItem]:
    folder = root / "SocialIQa"
    if not folder.is_dir():
        folder = root / "SIQA"
    for index, row in enumerate(_read_jsonl(folder / "socialIQa_v1.4_dev.jsonl")):
        question = f"{row['context'].strip()} {row['question'].strip()}"
        options = [row["answerA"], row["answerB"], row["answerC"]]
        gold = LETTERS.index(str(row["correct"]).strip().upper())
        yield _letter_item("siqa", str(index), question, options, gold)


def _winogrande(root: Path) -> Iterator[BenchItem]:
    folder = root / "WinoGrande"
    labels_path = folder / "dev-labels.lst"
    labels = labels_path.read_text(encoding="utf-8").split() if labels_path.is_file() else None
    for index, row in enumerate(_read_jsonl(folder / "dev.jsonl")):
        answer = row.get("answer") or (labels[index] if labels else None)
        if answer is None:
            raise ConfigurationError(
                f"WinoGrande item {index} has no answer; put dev-labels.lst beside dev.jsonl."
            )
        question = f"Which option fills the blank (_)? {row['sentence']}"
        options = [row["option1"], row["option2"]]
        item_id = str(row.get("qID", index))
        yield _letter_item("winogrande", item_id, question, options, int(answer) - 1)


DATASETS: dict[str, Callable[[Path], Iterator[BenchItem]]] = {
    "gsm8k": _gsm8k_split("gsm8k", "test.jsonl"),
    "gsm8k_train": _gsm8k_split("gsm8k_train", "train.jsonl"),
    "aqua": _aqua,
    "multiarith": _kojima_arith("multiarith", "MultiArith/MultiArith.json"),
    "svamp": _svamp,
    "addsub": _kojima_arith("addsub", "AddSub/AddSub.json"),
    "singleeq": _kojima_arith("singleeq", "SingleEq/questions.json"),
    "commonsenseqa": _commonsenseqa_split("commonsenseqa", "dev_rand_split.jsonl"),
    "commonsenseqa_train": _commonsenseqa_split("commonsenseqa_train", "train_rand_split.jsonl"),
    "strategyqa": _strategyqa,
    "coin_flip": _coin_flip,
    "last_letters": _last_letters,
    "truthfulqa": _truthfulqa,
    "mmlu": _mmlu,
    "arc_challenge": _arc("arc_challenge", "ARC-Challenge"),
    "arc_easy": _arc("arc_easy", "ARC-Easy"),
    "openbookqa": _openbookqa,
    "hellaswag": _hellaswag,
    "boolq": _boolq,
    "piqa": _piqa,
    "siqa": _siqa,
    "winogrande": _winogrande,
    "squad": load_squad,
}
"""Dataset name -> loader reading it from the data directory.

``gsm8k_train`` and ``commonsenseqa_train`` are the two training splits of the kit: for
training probes and fitting combinations on items no benchmark table reports on."""
