"""benchmarks/verbalized_counts.py on a hand-made run directory."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from confroute.bench.cache import RecordFile
from tests.scripts import load_benchmark


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_benchmark("verbalized_counts")


def _record(item: str, text: str, answer: str | None, correct: bool, reply: str) -> dict[str, Any]:
    variant = {"text": text, "answer": answer, "correct": correct}
    return {
        "item_id": item,
        "variants": {"verbalized_1s": variant},
        "extras": {"verbalized_2s_reply": reply},
    }


@pytest.mark.parametrize(
    ("text", "stated"),
    [
        ("B\nConfidence: 100", "100"),
        ("Confidence: 0", "0"),
        ("yes (confidence 85)", "other"),
        ("B", "missing"),
    ],
)
def test_stated_confidence(script: ModuleType, text: str, stated: str) -> None:
    assert script.stated_confidence(text) == stated


def test_counts_per_model(script: ModuleType, tmp_path: Path) -> None:
    file = RecordFile(tmp_path / "slm" / "m" / "boolq" / "answer_only.jsonl")
    file.append(
        [
            _record("1", "Yes\nConfidence: 100", "yes", True, "100"),
            _record("2", "Confidence: 80", None, False, "90"),
            _record("3", "No", "no", False, "100"),
        ]
    )
    file.append([_record("3", "No\nConfidence: 0", "no", True, "100")])  # latest record wins
    RecordFile(tmp_path / "slm" / "m" / "boolq" / "brief_reasoning.jsonl").append(
        [_record("1", "x", None, False, "5")]
    )
    counts = script.count(tmp_path)
    assert counts == {
        "m": {
            "verbalized_1s": {
                "items": 3,
                "unparsed": 1,
                "accuracy": 0.667,
                "stated": {"100": 1, "other": 1, "0": 1},
            },
            "verbalized_2s": {"items": 3, "replies": [("100", 2), ("90", 1)]},
        }
    }
