"""The issue's small grid file and the pure parts of benchmarks/sweep_executors.py."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import ModuleType

import pytest

from confroute import estimators
from confroute.backend import Capabilities
from confroute.bench.cache import RecordFile
from confroute.bench.sweep_file import load_sweep
from tests.scripts import load_benchmark

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SMALL_GRID = BENCHMARKS / "sweeps" / "small_grid.toml"


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_benchmark("sweep_executors")


def test_the_small_grid_is_the_issues_and_llama_cpp_serves_its_methods() -> None:
    sweep = load_sweep(SMALL_GRID)
    assert [s.key for s in sweep.slms] == [
        "llama.cpp:smollm2-135m-instruct",
        "llama.cpp:qwen2.5-coder-0.5b-instruct",
    ]
    assert [d.name for d in sweep.datasets] == ["mmlu", "arc_challenge", "commonsenseqa", "boolq"]
    assert [sweep.limit_of(d) for d in sweep.datasets] == [50, 50, 50, 50]
    assert len(sweep.methods) == 5 and sweep.strong == () and not sweep.baseline
    llama_cpp = Capabilities(backend="llama.cpp", hidden_state=False)  # as LlamaCppModel's
    for method in sweep.methods:
        assert llama_cpp.missing(estimators.get(method).requires) == [], method
    assert sweep.shard_size is None and sweep.ray.num_cpus == 1  # 8 tasks, 2 at a time


def _args(**given: object) -> argparse.Namespace:
    return argparse.Namespace(**{"data_dir": None, "limit": None, "backend": None, **given})


def test_the_command_line_overrides_data_limit_and_engine(
    script: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONFROUTE_DATA_DIR", raising=False)
    path = tmp_path / "grid.toml"
    path.write_text(
        'slms = [{name = "a", backend = "llama.cpp"}, "b"]\n'
        'datasets = ["mmlu", {name = "boolq", limit = 20}]\nlimit = 50\n'
    )
    sweep = load_sweep(path)
    assert script.configure(sweep, _args()) == sweep
    changed = script.configure(
        sweep, _args(data_dir=str(tmp_path), limit=3, backend="transformers")
    )
    assert changed.data_dir == tmp_path
    assert [changed.limit_of(d) for d in changed.datasets] == [3, 3]
    assert [s.key for s in changed.slms] == ["a", "b"]


def _write(run_dir: Path, records: list[dict[str, object]]) -> None:
    RecordFile(run_dir / "slm" / "m" / "boolq" / "answer_only.jsonl").append(records)


def test_records_are_compared_item_for_item_latency_aside(
    script: ModuleType, tmp_path: Path
) -> None:
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    _write(
        local,
        [
            {"item_id": "1", "text": "Yes", "latency_s": 1.0},
            {"item_id": "2", "text": "No", "confidences": {"p_true": 0.5}},
        ],
    )
    _write(
        on_ray,
        [
            {"item_id": "1", "text": "Yes", "latency_s": 9.0},
            {"item_id": "2", "text": "No", "confidences": {"p_true": 0.6}},
            {"item_id": "3", "text": "No"},
        ],
    )
    found = script.compare(local, on_ray)
    assert (found["records"], found["equal"]) == (3, 1)
    assert found["differences"] == [
        "slm/m/boolq/answer_only.jsonl 2: confidences differ",
        "slm/m/boolq/answer_only.jsonl 3: only in ray",
    ]
    assert script.compare(local, local) == {"records": 2, "equal": 2, "differences": []}


def test_a_run_directory_must_start_empty(script: ModuleType, tmp_path: Path) -> None:
    assert script.fresh(tmp_path / "new") == tmp_path / "new"
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "sweep.json").write_text("{}")
    with pytest.raises(SystemExit, match="is not empty"):
        script.fresh(tmp_path / "used")
