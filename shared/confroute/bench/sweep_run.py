"""Run a sweep file into one run directory: in-process (``local``) or on Ray (``ray``).

The driver plans the shards (:func:`~.sweep_file.plan_shards`), asks the cache what each one
still lacks (:meth:`~.runner.SweepRunner.pending`) and hands only those to the executor: the
SLM shards first, then the strong models' (which may reuse the SLM answers), then the query
embeddings of the baseline, on the driver. Either executor writes the cache format of
:mod:`.cache`, so ``confroute bench report`` reads a sweep like any run, a rerun computes only
what is missing and a killed sweep resumes. One progress bar counts (item, format) cells.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from confroute.backend import LocalBackend
from confroute.bench.cache import RecordFile, model_slug
from confroute.bench.runner import SweepRunner
from confroute.bench.sweep import PROBE_METHODS
from confroute.bench.sweep_file import Shard, SlmSpec, SweepFile, plan_shards, sample_items
from confroute.errors import ConfigurationError
from confroute.estimators import Requirement
from confroute.settings import LOCAL_PROVIDER

__all__ = [
    "EXECUTORS",
    "Executor",
    "ModelLoader",
    "ShardFailure",
    "ShardJob",
    "SweepResult",
    "default_loader",
    "plan_jobs",
    "record_path",
    "run_sweep",
]

logger = logging.getLogger(__name__)

EXECUTORS: tuple[str, ...] = ("local", "ray")

ModelLoader = Callable[[SlmSpec], LocalBackend]
"""Loads an SLM from its sweep-file entry (tests pass fakes; Ray pickles it to the workers)."""


def default_loader(spec: SlmSpec, device: str = "auto", probes: bool = False) -> LocalBackend:
    """Load an SLM with the engine its entry names (see :attr:`SlmSpec.backend`).

    ``probes``: the sweep trains probes on hidden states (``auto`` then avoids llama.cpp).

    Raises:
        ConfigurationError: The engine's package is missing, or it cannot load the model.
    """
    from confroute.backend_choice import choose_backend, load_backend
    from confroute.settings import RouterSettings

    needs = (Requirement.HIDDEN_STATE,) if probes else ()
    choice = choose_backend(spec.name, spec.backend or "transformers", needs=needs)
    return load_backend(choice, RouterSettings(device=device))


@dataclass(frozen=True)
class ShardJob:
    """A shard with work to do, as an executor receives it.

    Attributes:
        shard: The shard.
        config: The runner's :class:`~.sweep.SweepConfig` as a dict.
        units: (item, format) cells still to compute (for the progress bar).
        cached: Run-directory-relative record file -> the records already cached for the
            shard's items (a Ray task starts its own files from them).
    """

    shard: Shard
    config: dict[str, Any]
    units: int
    cached: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


@dataclass(frozen=True)
class ShardFailure:
    """A shard that failed after its retries; its finished items are kept."""

    shard: str
    error: str
    attempts: int


@dataclass
class SweepResult:
    """What a sweep did.

    Attributes:
        shards: Shards in the grid (both roles).
        run_shards: Shards that had work to do.
        stats: Counts of what was computed, summed over shards (as ``SweepRunner.run``'s).
        failures: Shards that failed after their retries.
        attempts: Shard key -> attempts it took (Ray; 1 when it succeeded at once).
        wall_s: Wall time of the whole sweep.
    """

    shards: int = 0
    run_shards: int = 0
    stats: dict[str, int] = field(default_factory=dict)
    failures: list[ShardFailure] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0

    def add(self, stats: dict[str, int]) -> None:
        """Add one shard's counts."""
        for key, value in stats.items():
            self.stats[key] = self.stats.get(key, 0) + value


OnDone = Callable[[ShardJob, dict[str, int], int, str | None], None]
"""Called once per finished job: (job, its counts, attempts, error or None)."""


class Executor(Protocol):
    """Runs shard jobs into a run directory, calling ``on_done`` as each one ends.

    Used as a context manager around all the phases of one sweep (Ray starts or joins its
    cluster on entry and leaves it on exit).
    """

    def __enter__(self) -> Executor:
        """Get ready (start or join a cluster)."""

    def __exit__(self, *exc: object) -> None:
        """Release what :meth:`__enter__` took."""

    def run(self, jobs: Sequence[ShardJob], on_done: OnDone) -> None:
        """Run every job; a failed job is reported through ``on_done``, not raised."""


class LocalExecutor:
    """In-process, one shard after the other, straight into the run directory.

    The shards of one model follow each other (see :func:`~.sweep_file.plan_shards`); they
    share one runner, so the model is loaded once, and it is let go when the next model's
    shards begin (a sweep of many SLMs holds one at a time).
    """

    def __init__(self, make_runner: Callable[[], SweepRunner]) -> None:
        """Run with runners from ``make_runner`` (one per model)."""
        self._make_runner = make_runner
        self._current: tuple[str, SweepRunner] | None = None

    def __enter__(self) -> LocalExecutor:
        """Nothing to start."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Let the last model go."""
        self._current = None

    def _runner(self, model: str) -> SweepRunner:
        if self._current is None or self._current[0] != model:
            self._current = None  # the previous model is freed before the next one loads
            self._current = (model, self._make_runner())
        return self._current[1]

    def run(self, jobs: Sequence[ShardJob], on_done: OnDone) -> None:
        """Run every job in order."""
        for job in jobs:
            shard = job.shard
            runner = self._runner(shard.model)
            before = dict(runner.stats)
            error = None
            try:
                for prompt_format in shard.formats:
                    runner.run_cell(
                        shard.role, shard.model, shard.dataset, prompt_format, list(shard.items)
                    )
            except Exception as failure:  # reported with the shard; the other shards go on
                logger.exception("shard %s failed", shard.key)
                error = f"{type(failure).__name__}: {failure}"
            stats = {k: v - before.get(k, 0) for k, v in runner.stats.items()}
            on_done(job, stats, 1, error)


def record_path(role: str, model: str, dataset: str, prompt_format: str) -> str:
    """A cell's record file, relative to the run directory (see :mod:`.cache`)."""
    return f"{role}/{model_slug(model)}/{dataset}/{prompt_format}.jsonl"


def plan_jobs(runner: SweepRunner, shards: Sequence[Shard], run_dir: Path) -> list[ShardJob]:
    """The shards with work left, each with the records the run holds for its items."""
    loaded: dict[str, dict[str, dict[str, Any]]] = {}

    def cached(relative: str, ids: set[str]) -> list[dict[str, Any]]:
        if relative not in loaded:
            loaded[relative] = RecordFile(run_dir / relative).load()
        return [r for i, r in loaded[relative].items() if i in ids]

    jobs = []
    config = runner.config.to_dict()
    for shard in shards:
        items = list(shard.items)
        units = sum(
            len(runner.pending(shard.role, shard.model, shard.dataset, f, items))
            for f in shard.formats
        )
        if not units:
            continue
        ids = {i.item_id for i in items}
        files = {}
        for prompt_format in shard.formats:
            relative = record_path(shard.role, shard.model, shard.dataset, prompt_format)
            files[relative] = cached(relative, ids)
            if shard.role == "strong" and shard.model.startswith(LOCAL_PROVIDER + "/"):
                # the SLM answers a bundled strong model may reuse (see StrongAnswers)
                name = shard.model.split("/", 1)[1]
                relative = record_path("slm", name, shard.dataset, prompt_format)
                files[relative] = cached(relative, ids)
        jobs.append(ShardJob(shard, config, units, {k: v for k, v in files.items() if v}))
    return jobs


def _executor(
    name: str,
    sweep: SweepFile,
    make_runner: Callable[[], SweepRunner],
    run_dir: Path,
    ray_address: str | None,
    loader: ModelLoader,
) -> Executor:
    if name == "local":
        return LocalExecutor(make_runner)
    from confroute.bench.ray_executor import RayExecutor

    return RayExecutor(run_dir, sweep.ray, loader=loader, address=ray_address)


def run_sweep(
    sweep: SweepFile,
    *,
    run_dir: str | os.PathLike[str] | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    load_local: ModelLoader | None = None,
    progress: bool = True,
) -> SweepResult:
    """Run (or resume) a sweep; only what the run directory lacks is computed.

    Args:
        sweep: The validated sweep file.
        run_dir: Where the cache lives (default: the file's ``run_dir``).
        executor: ``local`` (in-process) or ``ray``.
        ray_address: Ray cluster to join (None: ``RAY_ADDRESS`` or a new local cluster).
        load_local: Loads an SLM from its entry (default :func:`default_loader`).
        progress: Show the progress bar on stderr.

    Raises:
        ConfigurationError: An unknown executor or backend, or bad data (before any work).
    """
    from tqdm.auto import tqdm

    if executor not in EXECUTORS:
        raise ConfigurationError(f"Unknown executor {executor!r}; choose from {EXECUTORS}.")
    if load_local is None:
        probes = any(m in PROBE_METHODS for m in sweep.methods)
        load_local = functools.partial(default_loader, device=sweep.device, probes=probes)
    started = time.perf_counter()
    root = Path(run_dir) if run_dir is not None else sweep.run_dir
    specs = {s.key: s for s in sweep.slms}
    loader = load_local

    def make_runner() -> SweepRunner:
        return SweepRunner(
            sweep.runner_config(), root, load_local=lambda name: loader(specs[name]), progress=False
        )

    runner = make_runner()  # the driver's: plans the shards, embeds the queries
    result = SweepResult()
    with _executor(executor, sweep, make_runner, root, ray_address, loader) as chosen:
        from confroute.bench.ray_executor import merge_leftovers

        data = sample_items(sweep)  # bad data is refused before anything is written
        root.mkdir(parents=True, exist_ok=True)
        merge_leftovers(root)  # task folders a killed sweep left behind
        (root / "sweep.json").write_text(
            json.dumps(runner.config.to_dict(), indent=2) + "\n", encoding="utf-8"
        )
        (root / "sweep_file.json").write_text(sweep.model_dump_json(indent=2) + "\n", "utf-8")
        for role in ("slm", "strong"):
            shards = plan_shards(sweep, data, role)
            jobs = plan_jobs(runner, shards, root)
            result.shards += len(shards)
            result.run_shards += len(jobs)
            bar = tqdm(
                total=sum(j.units for j in jobs),
                desc=f"{role} shards ({executor})",
                disable=not progress or not jobs,
                dynamic_ncols=True,
            )
            try:
                chosen.run(jobs, functools.partial(_finished, result, bar))
            finally:
                bar.close()
        if sweep.baseline:
            before = runner.stats.get("embedded", 0)
            runner.embed_queries(data)
            result.add({"embedded": runner.stats.get("embedded", 0) - before})
    result.wall_s = time.perf_counter() - started
    return result


def _finished(
    result: SweepResult,
    bar: Any,
    job: ShardJob,
    stats: dict[str, int],
    attempts: int,
    error: str | None,
) -> None:
    result.add(stats)
    result.attempts[job.shard.key] = attempts
    if error is not None:
        result.failures.append(ShardFailure(job.shard.key, error, attempts))
    bar.update(job.units)
