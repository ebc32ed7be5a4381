"""The benchmark datasets: every one yields :class:`BenchItem` with a stable id.

The files are read from a directory the user names (``--data-dir`` or ``CONFROUTE_DATA_DIR``),
laid out as in the team kit (``GSM8K/test.jsonl``, ``MMLU/test/*.csv``, ...); the loader of each
dataset is in :mod:`confroute.bench.loaders`, :class:`BenchItem` in :mod:`.items`. Nothing here
copies dataset text anywhere: items live in memory and the run cache keeps only ids, answers
and model outputs.

>>> sorted(DATASETS)[:3]
['addsub', 'aqua', 'arc_challenge']
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from confroute.bench.items import LETTERS, AnswerFormat, BenchItem
from confroute.bench.loaders import DATASETS
from confroute.errors import ConfigurationError
from confroute.settings import environment

__all__ = [
    "DATASETS",
    "DATA_DIR_ENV",
    "LETTERS",
    "AnswerFormat",
    "BenchItem",
    "load_dataset",
    "resolve_data_dir",
    "sample_items",
    "sample_key",
]

DATA_DIR_ENV = "CONFROUTE_DATA_DIR"
"""Environment variable naming the benchmark data directory (read by
:func:`confroute.settings.environment`)."""


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    """The benchmark data directory: the argument, else ``CONFROUTE_DATA_DIR``.

    Raises:
        ConfigurationError: Neither is set, or the directory does not exist.
    """
    chosen = data_dir if data_dir is not None else environment().data_dir
    if not chosen:
        raise ConfigurationError(
            f"No benchmark data directory: pass --data-dir DIR or set {DATA_DIR_ENV}=DIR "
            "(a folder holding GSM8K/, MMLU/, ... as described in docs/bench.md)."
        )
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise ConfigurationError(f"The benchmark data directory {path} does not exist.")
    return path


def sample_items(items: Sequence[BenchItem], limit: int | None, seed: int = 0) -> list[BenchItem]:
    """A fixed pseudo-random sample of ``limit`` items (all when ``limit`` is None).

    Items are ordered by a hash of ``(seed, item_id)``, so a smaller limit is a prefix of a
    larger one: a run with ``--limit 40`` reuses every cached item of a ``--limit 20`` run.
    """
    ordered = sorted(items, key=lambda i: sample_key(i.dataset, i.item_id, seed))
    return ordered if limit is None else ordered[:limit]


def sample_key(dataset: str, item_id: str, seed: int = 0) -> str:
    """The sort key of an item in its dataset's fixed sample (see :func:`sample_items`)."""
    return hashlib.sha256(f"{seed}:{dataset}/{item_id}".encode()).hexdigest()


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    limit: int | None = None,
    seed: int = 0,
) -> list[BenchItem]:
    """Load one dataset (a fixed sample of ``limit`` items when given).

    Raises:
        ConfigurationError: Unknown dataset, no data directory, or a file missing.
    """
    if name not in DATASETS:
        raise ConfigurationError(f"Unknown dataset {name!r}; choose from: {', '.join(DATASETS)}.")
    if limit is not None and limit < 1:
        raise ConfigurationError(f"limit must be >= 1, got {limit}.")
    root = resolve_data_dir(data_dir)
    try:
        items = list(DATASETS[name](root))
    except FileNotFoundError as error:
        raise ConfigurationError(
            f"Dataset {name!r}: file not found ({error.filename}). Check --data-dir {root}."
        ) from error
    ids = [i.item_id for i in items]
    if len(set(ids)) != len(ids):
        raise ConfigurationError(f"Dataset {name!r} has duplicate item ids.")
    return sample_items(items, limit, seed)
