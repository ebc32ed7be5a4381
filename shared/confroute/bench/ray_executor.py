"""Sweep shards as Ray tasks (``confroute bench sweep FILE --executor ray``).

One task per shard (an SLM or strong model on a slice of one dataset, every prompt format), so
each task loads its model once. A task writes into its own folder, ``RUN_DIR/shards/<key>/``,
laid out like a run directory and started from the records the run already holds for its
items; a retried task (Ray's ``max_retries`` with ``retry_exceptions``) therefore resumes at
the batch its failed attempt stopped in. As each task ends, the driver merges its folder into
the run directory (:func:`merge_shard`: every record checked, appended in the cache format of
:mod:`.cache`) and deletes it; a task that still fails after its retries is reported, and the
items it finished are merged too. Shard folders a killed driver left behind are merged at the
start of the next sweep (:func:`merge_leftovers`).

On a cluster of several machines, ``RUN_DIR`` must be a path every node sees (a shared file
system) and confroute must be installed on every node. Ray is an optional extra:
``pip install 'confroute[ray]'``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confroute.bench.cache import RecordFile
from confroute.bench.runner import SweepRunner
from confroute.bench.sweep import SweepConfig
from confroute.bench.sweep_file import RaySpec
from confroute.errors import ConfigurationError

if TYPE_CHECKING:
    from confroute.bench.sweep_run import ModelLoader, OnDone, ShardJob

__all__ = ["SHARDS", "RayExecutor", "merge_leftovers", "merge_shard", "run_shard"]

logger = logging.getLogger(__name__)

SHARDS = "shards"
"""The run directory's folder of task folders (ignored by ``confroute bench report``)."""

REQUIRED: dict[str, tuple[str, ...]] = {
    "slm": ("item_id", "text", "correct", "confidences", "token_ids", "logprobs"),
    "strong": ("item_id", "text", "correct"),
}
"""Keys a merged record must have, by role."""


def _attempts(folder: Path) -> int:
    path = folder / "attempts"
    return len(path.read_text(encoding="utf-8").split()) if path.is_file() else 0


def run_shard(job: ShardJob, loader: ModelLoader, run_dir: str) -> tuple[dict[str, int], int]:
    """The Ray task: run one shard into its own folder; returns its counts and attempt number.

    Runs on a worker. The folder starts from ``job.cached`` (once: a retry finds the files
    of the failed attempt and continues from them).
    """
    folder = Path(run_dir) / SHARDS / job.shard.key
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "attempts").open("a", encoding="utf-8") as handle:
        handle.write(f"{os.getpid()}\n")
    attempt = _attempts(folder)
    for relative, records in job.cached.items():
        path = folder / relative
        if not path.exists():
            partial = path.with_name(path.name + ".part")
            partial.unlink(missing_ok=True)
            RecordFile(partial).append(records)
            os.replace(partial, path)
    shard = job.shard
    spec = shard.spec

    def load(name: str) -> Any:
        if spec is None:
            raise ConfigurationError(f"{shard.key}: no SLM entry to load {name!r} from.")
        return loader(spec)

    runner = SweepRunner(SweepConfig.from_dict(job.config), folder, load_local=load, progress=False)
    for prompt_format in shard.formats:
        runner.run_cell(shard.role, shard.model, shard.dataset, prompt_format, list(shard.items))
    return dict(runner.stats), attempt


def merge_shard(
    run_dir: Path, folder: Path, item_ids: set[str] | None = None
) -> tuple[int, list[str]]:
    """Merge a task folder into the run directory, then delete it.

    A record is appended when it differs from the run's (a record the task started from is
    not copied again) and has the keys of its role; when ``item_ids`` is given it must be one
    of them. Returns the number of records merged and one line per record refused.
    """
    merged, problems = 0, []
    for path in sorted(folder.glob("*/*/*/*.jsonl")):
        relative = path.relative_to(folder)
        target = RecordFile(run_dir / relative)
        have = target.load()
        fresh = []
        for item_id, record in RecordFile(path).load().items():
            if have.get(item_id) == record:
                continue
            missing = [k for k in REQUIRED.get(relative.parts[0], ()) if k not in record]
            if missing:
                problems.append(f"{relative}: item {item_id} lacks {', '.join(missing)}")
            elif item_ids is not None and item_id not in item_ids:
                problems.append(f"{relative}: item {item_id} is not one of the shard's")
            else:
                fresh.append(record)
        target.append(fresh)
        merged += len(fresh)
        meta = path.parent.parent / "model.json"
        if meta.is_file() and not (run_dir / relative.parent.parent / "model.json").is_file():
            shutil.copyfile(meta, run_dir / relative.parent.parent / "model.json")
    for problem in problems:
        logger.warning("not merged: %s", problem)
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        folder.parent.rmdir()  # the last task folder: no empty shards/ is left behind
    return merged, problems


def merge_leftovers(run_dir: Path) -> int:
    """Merge the task folders a killed sweep left in ``run_dir``; returns the records merged."""
    merged = 0
    for folder in sorted(p for p in (run_dir / SHARDS).glob("*") if p.is_dir()):
        count, _ = merge_shard(run_dir, folder)
        logger.info("merged %d records left in %s", count, folder)
        merged += count
    return merged


def _describe(error: BaseException) -> str:
    cause = getattr(error, "cause", None)  # a RayTaskError carries the task's exception
    shown = cause if isinstance(cause, BaseException) else error
    return f"{type(shown).__name__}: {shown}".splitlines()[0][:500]


class RayExecutor:
    """Runs shard jobs as Ray tasks and merges each one's folder as it ends."""

    def __init__(
        self,
        run_dir: Path,
        spec: RaySpec,
        *,
        loader: ModelLoader,
        address: str | None = None,
    ) -> None:
        """Prepare.

        Args:
            run_dir: The run directory (every node must see it).
            spec: Resources and retries per task (the sweep file's ``[ray]`` table).
            loader: Loads an SLM on a worker (pickled to it).
            address: Cluster to join (None: ``RAY_ADDRESS`` or a new local cluster; a Ray
                session the caller already started is used as it is).
        """
        self.run_dir = run_dir
        self.spec = spec
        self.loader = loader
        self.address = address
        self._started = False

    def __enter__(self) -> RayExecutor:
        """Check that Ray is installed.

        The cluster is joined by the first :meth:`run` with work, so a sweep with nothing to
        compute starts none.
        """
        try:
            import ray  # noqa: F401
        except ImportError as error:
            raise ConfigurationError(
                "--executor ray needs Ray: pip install 'confroute[ray]'."
            ) from error
        return self

    def _connect(self) -> None:
        """Join (or start) the cluster, unless this process is already connected."""
        import ray

        if not ray.is_initialized():
            options: dict[str, Any] = {"log_to_driver": False}
            if self.address is None and not os.environ.get("RAY_ADDRESS"):
                options["include_dashboard"] = False  # a fresh local cluster
            ray.init(address=self.address, **options)
            self._started = True

    def __exit__(self, *exc: object) -> None:
        """Leave the cluster if this executor joined it."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    def run(self, jobs: Sequence[ShardJob], on_done: OnDone) -> None:
        """Submit every job at once; merge and report each as it ends (failures included)."""
        import ray

        if not jobs:
            return
        self._connect()
        task = ray.remote(run_shard).options(
            num_cpus=self.spec.num_cpus,
            num_gpus=self.spec.num_gpus,
            max_retries=self.spec.max_retries,
            retry_exceptions=True,
        )
        loader = ray.put(self.loader)
        pending = {task.remote(job, loader, str(self.run_dir)): job for job in jobs}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ready[0])
            folder = self.run_dir / SHARDS / job.shard.key
            stats: dict[str, int] = {}
            error = None
            try:
                stats, attempts = ray.get(ready[0])
            except Exception as failure:  # reported with the shard; the other tasks go on
                error = _describe(failure)
                attempts = _attempts(folder)
                logger.error(
                    "shard %s failed after %d attempt(s): %s", job.shard.key, attempts, error
                )
            _, problems = merge_shard(self.run_dir, folder, {i.item_id for i in job.shard.items})
            if problems and error is None:
                error = f"{len(problems)} record(s) refused at merge: {problems[0]}"
            on_done(job, stats, attempts, error)
