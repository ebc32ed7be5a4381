"""RayExecutor against a fake ``ray`` module: each task's resources, the address, the session."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from confroute.bench.ray_executor import RayExecutor
from confroute.bench.sweep_file import RaySpec, Shard, parse_sweep
from confroute.bench.sweep_run import ShardJob


class FakeRay(ModuleType):
    """Records what the executor asks of Ray; a task returns its counts without running.

    ``ray.remote(function)`` and ``.options(...)`` return the module itself, so the task's
    ``.remote(job, loader, run_dir)`` lands here too and returns a reference named after the job.
    """

    def __init__(self) -> None:
        super().__init__("ray")
        self.calls: list[tuple[str, Any]] = []
        self.initialized = False

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, address: str | None = None, **options: Any) -> None:
        self.calls.append(("init", {"address": address, **options}))
        self.initialized = True

    def shutdown(self) -> None:
        self.calls.append(("shutdown", None))
        self.initialized = False

    def remote(self, *args: Any) -> Any:
        if len(args) == 1:  # ray.remote(function)
            self.calls.append(("remote", args[0].__name__))
            return self
        job, loader, run_dir = args
        self.calls.append(("submit", (job.shard.key, loader, run_dir)))
        return f"ref-{job.shard.key}"

    def options(self, **options: Any) -> FakeRay:
        self.calls.append(("options", options))
        return self

    def put(self, value: Any) -> str:
        return "loader-ref"

    def wait(self, refs: list[str], num_returns: int) -> tuple[list[str], list[str]]:
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref: str) -> tuple[dict[str, int], int]:
        return {"slm_generated": 2}, 1


@pytest.fixture
def ray(monkeypatch: pytest.MonkeyPatch) -> FakeRay:
    fake = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    return fake


def _job(dataset: str) -> ShardJob:
    return ShardJob(Shard("slm", "a", dataset, 0, (), ("answer_only",)), {}, units=2)


def test_each_task_asks_for_the_sweep_files_cpus_gpus_and_retries(
    ray: FakeRay, tmp_path: Path
) -> None:
    sweep = parse_sweep(
        {
            "slms": ["a"],
            "datasets": ["boolq"],
            "ray": {"num_cpus": 2, "num_gpus": 0.5, "max_retries": 3},
        }
    )
    done: list[tuple[str, dict[str, int], int, str | None]] = []
    executor = RayExecutor(tmp_path, sweep.ray, loader=str, address="ray://head:10001")
    with executor:
        executor.run(
            [_job("boolq"), _job("mmlu")],
            lambda job, stats, attempts, error: done.append(
                (job.shard.dataset, stats, attempts, error)
            ),
        )
    options = [value for kind, value in ray.calls if kind == "options"]
    assert options == [
        {"num_cpus": 2.0, "num_gpus": 0.5, "max_retries": 3, "retry_exceptions": True}
    ]
    assert ray.calls[0] == (
        "init",
        {"address": "ray://head:10001", "log_to_driver": False},  # a cluster's own dashboard
    )
    submitted = [value for kind, value in ray.calls if kind == "submit"]
    assert submitted == [
        ("slm-a-boolq-0000", "loader-ref", str(tmp_path)),
        ("slm-a-mmlu-0000", "loader-ref", str(tmp_path)),
    ]
    assert done == [
        ("boolq", {"slm_generated": 2}, 1, None),
        ("mmlu", {"slm_generated": 2}, 1, None),
    ]
    assert ray.calls[-1] == ("shutdown", None)  # it joined the cluster, so it leaves it


def test_a_gpu_less_default_and_a_session_the_caller_started_is_kept(
    ray: FakeRay, tmp_path: Path
) -> None:
    ray.initialized = True  # e.g. ray.init(num_cpus=2) in the caller
    executor = RayExecutor(tmp_path, RaySpec(), loader=str)
    with executor:
        executor.run([_job("boolq")], lambda *done: None)
    kinds = [kind for kind, _ in ray.calls]
    assert "init" not in kinds and "shutdown" not in kinds
    options = [value for kind, value in ray.calls if kind == "options"]
    assert options == [
        {"num_cpus": 1.0, "num_gpus": 0.0, "max_retries": 2, "retry_exceptions": True}
    ]


def test_a_new_local_cluster_starts_without_a_dashboard(
    ray: FakeRay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    executor = RayExecutor(tmp_path, RaySpec(), loader=str)
    with executor:
        executor.run([_job("boolq")], lambda *done: None)
    assert ray.calls[0] == (
        "init",
        {"address": None, "log_to_driver": False, "include_dashboard": False},
    )
