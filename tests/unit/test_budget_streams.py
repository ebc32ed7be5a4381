"""The pure parts of benchmarks/budget_streams.py: streams, window errors, recovery, APGR."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from confroute.calibration import CalibrationProfile, PoolItem, ProfileFingerprint
from tests.scripts import load_benchmark


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("budget_streams")


def _tasks(bench: ModuleType) -> list[object]:
    rng = np.random.default_rng(0)
    tasks = []
    for name, (a, b), strong in (("low", (2, 6), 0.8), ("high", (6, 2), 0.9), ("mid", (5, 5), 0.7)):
        conf = rng.beta(a, b, 60)
        slm = rng.random(60) < conf  # confident answers are right more often
        tasks.append(
            bench.Task(
                name, "letter", "letter:4", {"perplexity": conf}, slm, rng.random(60) < strong
            )
        )
    return tasks


def test_streams_switch_where_they_say_and_resample_items(bench: ModuleType) -> None:
    tasks = _tasks(bench)
    stream = bench.make_stream(tasks, "every50", 300, seed=1)
    assert stream.switches == [50, 100, 150, 200, 250]
    assert all(len(set(stream.task_ids[s : s + 50])) == 1 for s in range(0, 300, 50))
    assert len(set(stream.task_ids[:150])) == 3  # each task once per cycle
    mixed = bench.make_stream(tasks, "interleaved", 300, seed=1)
    assert mixed.switches == [] and len(set(mixed.task_ids)) == 3
    assert max(mixed.item_ids) < 60


def test_window_errors_and_recovery_on_known_sequences(bench: ModuleType) -> None:
    steady = np.array([k % 10 < 3 for k in range(400)])  # exactly 30% in every 100
    assert bench.window_errors(steady, 0.3).max() == pytest.approx(0.0)
    assert bench.recovery(steady, 0.3, [200]) == 0
    assert bench.recovery(steady, 0.3, []) is None
    burst = steady.copy()
    burst[200:240] = True  # a task switch that escalates everything for 40 requests
    errors = bench.window_errors(burst, 0.3)
    assert errors.max() == pytest.approx(0.28)
    # the last window over 0.05 ends where the burst leaves the window
    assert bench.recovery(burst, 0.3, [200]) == np.flatnonzero(errors > 0.05)[-1] + 99 - 200 + 1
    assert bench.segment_recovery(burst, 0.3, [200]) > 40


def test_hindsight_escalates_each_tasks_least_confident(bench: ModuleType) -> None:
    conf = np.array([0.1, 0.9, 0.2, 0.8, 0.5, 0.6])
    tasks = np.array([0, 0, 0, 1, 1, 1])
    escalated = bench.hindsight(conf, tasks, 1 / 3, seed=0)
    assert escalated.tolist() == [True, False, False, False, True, False]
    slm = np.array([False, True, True, True, False, True])
    strong = np.ones(6, dtype=bool)
    assert bench.pgr(escalated, slm, strong) == pytest.approx(1.0)  # both wrong ones escalated
    assert bench.area([0.5], [0.5]) == pytest.approx(0.5)


def test_run_unit_reports_every_policy_on_every_pattern(bench: ModuleType) -> None:
    fingerprint = ProfileFingerprint(model_name="m", model_fingerprint="", estimator="perplexity")
    rng = np.random.default_rng(2)
    profile = CalibrationProfile.from_pool(
        [
            PoolItem(dataset="other", item_id=str(i), confidence=float(v), answer_format="letter")
            for i, v in enumerate(rng.beta(3, 3, 200))
        ],
        fingerprint,
    )
    job = {
        "tasks": _tasks(bench),
        "profile": profile,
        "method": "perplexity",
        "fold": "low,high,mid",
        "patterns": ("every50", "interleaved"),
        "policies": ("streaming", "held"),
        "rates": (0.3,),
        "length": 600,
        "seed": 0,
    }
    rows = bench.run_unit(job)
    assert [(r["pattern"], r["policy"]) for r in rows] == [
        ("every50", "streaming"),
        ("every50", "held"),
        ("interleaved", "streaming"),
        ("interleaved", "held"),
    ]
    held = [r for r in rows if r["policy"] == "held"]
    assert all(r["per_rate"][0]["max_window_error"] <= 0.05 + 1e-9 for r in held)
    assert all(r["apgr_loss"] is not None and abs(r["apgr_loss"]) < 0.5 for r in rows)
    summary = bench.summary(rows, "held")
    assert summary["streams"] == 2 and summary["p90_window_error"] <= 0.05 + 1e-9
    assert "| held |" in bench.markdown(rows, ["streaming", "held"])
