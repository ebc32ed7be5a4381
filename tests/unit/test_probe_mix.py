"""benchmarks/probe_mix.py: the splits by position, unseen-task training, the ship rule."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from confroute.bench.cache import RecordFile, encode_hidden, model_slug
from confroute.estimators.probe_network import Probe, train_probe
from confroute.models import BUNDLED_MODELS
from tests.scripts import load_benchmark

probe_mix = load_benchmark("probe_mix")
MODEL = "qwen2.5-coder-0.5b-instruct"
WIDTH = 896  # the 0.5B's hidden size: the probe file records it


@pytest.mark.parametrize(
    ("dataset", "position", "expected"),
    [
        ("mmlu", 0, "train"),  # the shipped probe's training items: never scored
        ("mmlu", 99, "train"),
        ("mmlu", 100, "dev"),
        ("mmlu", 199, "dev"),
        ("mmlu", 200, "report"),
        ("mmlu", 299, "report"),
        ("mmlu", 300, "train"),
        ("commonsenseqa_train", 0, "train"),  # a training split is training only
        ("commonsenseqa_train", 150, "train"),
    ],
)
def test_an_item_falls_in_its_split_by_position(dataset: str, position: int, expected: str) -> None:
    assert probe_mix.split_of(dataset, position, 100, 100, 100) == expected


def test_a_training_split_counts_as_its_test_splits_task() -> None:
    assert probe_mix.task_of("commonsenseqa_train") == "commonsenseqa"
    assert probe_mix.task_of("mmlu") == "mmlu"


def _fake_run(tmp_path: Path, sizes: dict[str, int]) -> Path:
    """A bench run whose hidden states shift one way for right answers, the other for wrong."""
    rng = np.random.default_rng(0)
    run = tmp_path / "run"
    for dataset, size in sizes.items():
        records = []
        for index in range(size):
            correct = bool(rng.random() < 0.5)
            state = (rng.normal(size=WIDTH) + (0.5 if correct else -0.5)).astype(np.float32)
            records.append(
                {
                    "item_id": f"{dataset}-{index}",
                    "hidden": encode_hidden(state),
                    "correct": correct,
                    "confidences": {"perplexity": float(rng.random())},
                }
            )
        path = run / "slm" / model_slug(MODEL) / dataset / "answer_only.jsonl"
        RecordFile(path).append(records)
    return run


def _fake_order(monkeypatch: pytest.MonkeyPatch, sizes: dict[str, int]) -> None:
    """Each dataset's seeded order is its item ids in index order."""

    def load_dataset(name: str, data_dir: Any = None, *, seed: int = 0) -> list[Any]:
        return [SimpleNamespace(item_id=f"{name}-{i}") for i in range(sizes[name])]

    monkeypatch.setattr(probe_mix, "load_dataset", load_dataset)


def test_the_run_is_cut_trained_scored_and_the_mix_probe_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sizes = {"mmlu": 100, "boolq": 100, "commonsenseqa": 100, "commonsenseqa_train": 60}
    run = _fake_run(tmp_path, sizes)
    _fake_order(monkeypatch, sizes)
    trained_on: list[list[str]] = []
    real_train_on = probe_mix.train_on

    def spy(parts: Any, datasets: list[str], model: str, seed: int) -> Probe:
        trained_on.append(sorted(datasets))
        probe: Probe = real_train_on(parts, datasets, model, seed)
        return probe

    monkeypatch.setattr(probe_mix, "train_on", spy)
    rng = np.random.default_rng(1)
    noise = train_probe(  # a "shipped" probe that learnt nothing about this signal
        rng.normal(size=(80, WIDTH)),
        np.arange(80) % 2,
        model=MODEL,
        fingerprint=BUNDLED_MODELS[MODEL].sha256,
        kind="ood",
        epochs=1,
    )
    noise.save(tmp_path / "shipped" / "ood_probe")
    out = tmp_path / "out"
    argv = [
        "--shipped",
        str(tmp_path / "shipped" / "ood_probe"),
        "--run-dir",
        str(run),
        "--skip",
        "10",
        "--dev",
        "20",
        "--report",
        "20",
    ]
    assert probe_mix.main([*argv, "--save", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # 100 items: 20 dev, 20 report, the other 60 training; a *_train split: all training
    assert summary["training_items"] == {
        "boolq": 60,
        "commonsenseqa": 60,
        "commonsenseqa_train": 60,
        "mmlu": 60,
    }
    assert set(summary["splits"]["dev"]) == {"boolq", "commonsenseqa", "mmlu"}
    assert summary["splits"]["report"]["mmlu"]["items"] == 20
    # the mix probe saw every dataset; commonsenseqa's unseen probe saw neither of its splits
    assert trained_on[0] == sorted(sizes)
    assert ["boolq", "mmlu"] in trained_on
    assert ["boolq", "commonsenseqa", "commonsenseqa_train"] in trained_on
    # the signal is learnable and the cached confidence is noise: the probes win
    dev = summary["means"]["dev"]
    assert dev["mix"] > 0.8 and dev["unseen"] > 0.8 and dev["perplexity"] < 0.75
    assert dev["shipped"] < 0.75 and summary["ship"] is True
    saved = Probe.load(out / MODEL / "ood_probe.json", fingerprint=BUNDLED_MODELS[MODEL].sha256)
    assert saved.metadata.kind == "ood"
    assert sum(v["items"] for v in saved.metadata.training["datasets"].values()) == 240


def test_the_ship_rule_holds_the_unseen_probe_against_the_best_rival() -> None:
    ship, rival = probe_mix.ship_verdict(
        {"mix": 0.9, "unseen": 0.61, "perplexity": 0.60, "ood_probe": 0.62}
    )
    assert (ship, rival) == (False, "ood_probe")
    assert probe_mix.ship_verdict({"mix": 0.5, "unseen": 0.63, "perplexity": 0.60}) == (
        True,
        "perplexity",
    )
