"""A benchmark sweep written as a TOML file: the grid, validated, and cut into shards.

``confroute bench sweep sweep.toml`` reads a file like::

    run_dir = "runs/sweep"                  # relative paths are relative to this file
    slms = ["qwen2.5-coder-0.5b-instruct", {name = "models/my-slm.gguf", backend = "transformers"}]
    strong = ["confroute/qwen2.5-coder-1.5b-instruct"]   # [] for none
    datasets = ["mmlu", {name = "boolq", limit = 20}]
    limit = 50                              # items per dataset unless the dataset says
    methods = ["avg_token_prob", "perplexity", "p_true"]
    formats = ["answer_only"]
    seeds = [0]

    [ray]                                   # only read by --executor ray
    num_cpus = 1
    num_gpus = 0
    max_retries = 2

Every mistake is reported at once, each naming its key and what is allowed
(:func:`load_sweep`). :func:`sample_items` draws each dataset's items (the union of the seeds'
samples: an answer does not depend on the seed that picked its item, so the seeds share one
cache), and :func:`plan_shards` cuts the grid into one shard per (model, dataset, slice of
``shard_size`` items), every prompt format included: the unit of work of an executor
(:mod:`.sweep_run`), which loads its model once.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from confroute import estimators as registry
from confroute.bench.cache import model_slug
from confroute.bench.datasets import BenchItem, load_dataset
from confroute.bench.formats import FORMATS
from confroute.bench.loaders import DATASETS
from confroute.bench.sweep import DEFAULT_METHODS, SweepConfig
from confroute.errors import ConfigurationError
from confroute.models import DEFAULT_LLM
from confroute.settings import LOCAL_PROVIDER, BackendName

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser as a package (pip install tomli)
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None

__all__ = [
    "DatasetSpec",
    "RaySpec",
    "Shard",
    "SlmSpec",
    "SweepFile",
    "load_sweep",
    "parse_sweep",
    "plan_shards",
    "sample_items",
]


class _Strict(BaseModel):
    """Frozen, and an unknown key is an error that lists the allowed ones."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - set(cls.model_fields))
            if unknown:
                raise ValueError(
                    f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(cls.model_fields)}"
                )
        return data


class SlmSpec(_Strict):
    """One SLM: a bundled name, a model directory, a ``.gguf`` file or a hub id."""

    name: str = Field(min_length=1)
    backend: BackendName | None = None
    """The engine that runs it, passed to :func:`confroute.backend_choice.choose_backend`
    (None: ``transformers``, as ``confroute bench run``; ``auto``: confroute's rule)."""

    @property
    def key(self) -> str:
        """The SLM's name in the run directory.

        Its name, with ``<backend>:`` in front for any engine but ``transformers`` (one model
        run by two engines is two SLMs of the sweep).
        """
        if self.backend in (None, "transformers"):
            return self.name
        return f"{self.backend}:{self.name}"


class DatasetSpec(_Strict):
    """One dataset and, optionally, its own item limit."""

    name: str
    limit: int | None = Field(default=None, ge=1)
    """Items of its fixed sample (None: the sweep's ``limit``)."""

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in DATASETS:
            raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
        return name


class RaySpec(_Strict):
    """Resources and retries of each Ray task (``--executor ray`` only)."""

    num_cpus: float = Field(default=1.0, gt=0)
    num_gpus: float = Field(default=0.0, ge=0)
    max_retries: int = Field(default=2, ge=0)
    """Retries of a failed task (a raised exception or a lost worker) before it is reported."""


def _named(value: Any) -> Any:
    """``"name"`` -> ``{"name": "name"}`` (a list may mix names and tables)."""
    if isinstance(value, list):
        return [{"name": v} if isinstance(v, str) else v for v in value]
    return value


def _unique(values: Sequence[Any], what: str) -> None:
    seen = [v for i, v in enumerate(values) if v in values[:i]]
    if seen:
        raise ValueError(f"{what} listed twice: {', '.join(map(str, dict.fromkeys(seen)))}")


class SweepFile(_Strict):
    """A sweep file's contents, validated (see the module docstring for an example)."""

    slms: tuple[SlmSpec, ...] = Field(min_length=1)
    datasets: tuple[DatasetSpec, ...] = Field(min_length=1)
    strong: tuple[str, ...] = (f"{LOCAL_PROVIDER}/{DEFAULT_LLM}",)
    """LiteLLM strings of the strong models (empty: none)."""
    methods: tuple[str, ...] = Field(default=DEFAULT_METHODS, min_length=1)
    formats: tuple[str, ...] = Field(default=("answer_only",), min_length=1)
    seeds: tuple[int, ...] = Field(default=(0,), min_length=1)
    limit: int | None = Field(default=100, ge=1)
    run_dir: Path = Path("runs/sweep")
    data_dir: Path | None = None
    """Benchmark data directory (None: ``CONFROUTE_DATA_DIR``)."""
    shard_size: int | None = Field(default=None, ge=1)
    """Items per task (None: a whole dataset per task)."""
    batch_size: int = Field(default=8, ge=1)
    device: str = "auto"
    max_new_tokens: int | None = Field(default=None, ge=1)
    strong_max_new_tokens: int | None = Field(default=None, ge=1)
    concurrency: int = Field(default=4, ge=1)
    baseline: bool = True
    judge: str | None = None
    ray: RaySpec = RaySpec()

    @field_validator("slms", "datasets", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        return _named(value)

    @field_validator("methods")
    @classmethod
    def _methods(cls, methods: tuple[str, ...]) -> tuple[str, ...]:
        known = registry.available()
        bad = [m for m in methods if m not in known]
        if bad:
            raise ValueError(f"unknown method(s) {', '.join(bad)}; allowed: {', '.join(known)}")
        _unique(methods, "method(s)")
        return methods

    @field_validator("formats")
    @classmethod
    def _formats(cls, formats: tuple[str, ...]) -> tuple[str, ...]:
        bad = [f for f in formats if f not in FORMATS]
        if bad:
            raise ValueError(f"unknown format(s) {', '.join(bad)}; allowed: {', '.join(FORMATS)}")
        _unique(formats, "format(s)")
        return formats

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: tuple[int, ...]) -> tuple[int, ...]:
        _unique(seeds, "seed(s)")
        return seeds

    @field_validator("strong")
    @classmethod
    def _strong(cls, strong: tuple[str, ...]) -> tuple[str, ...]:
        if any(not s.strip() for s in strong):
            raise ValueError("a strong model is an empty string; write [] for no strong model")
        _unique(strong, "strong model(s)")
        return strong

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
            raise ValueError(f"unknown device {device!r}; allowed: auto, cpu, cuda, cuda:N")
        return device

    @model_validator(mode="after")
    def _no_twice(self) -> SweepFile:
        _unique([s.key for s in self.slms], "SLM(s)")
        _unique([d.name for d in self.datasets], "dataset(s)")
        return self

    def limit_of(self, dataset: DatasetSpec) -> int | None:
        """The item limit of one dataset (its own, else the sweep's)."""
        return dataset.limit if dataset.limit is not None else self.limit

    def runner_config(self, seed: int | None = None) -> SweepConfig:
        """The :class:`SweepConfig` every shard's runner shares.

        Its datasets, limit and seed matter only to ``SweepRunner.run``, which the sweep
        executors do not call; ``sweep.json`` records them for the report.
        """
        limits = [self.limit_of(d) for d in self.datasets]
        return SweepConfig(
            datasets=tuple(d.name for d in self.datasets),
            slms=tuple(s.key for s in self.slms),
            strong_models=self.strong,
            methods=self.methods,
            formats=self.formats,
            limit=None if None in limits else max(x for x in limits if x is not None),
            seed=self.seeds[0] if seed is None else seed,
            data_dir=None if self.data_dir is None else str(self.data_dir),
            max_new_tokens=self.max_new_tokens,
            strong_max_new_tokens=self.strong_max_new_tokens,
            batch_size=self.batch_size,
            device=self.device,
            concurrency=self.concurrency,
            baseline=self.baseline,
            judge=self.judge,
        )


def _where(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def parse_sweep(data: Mapping[str, Any], source: str = "sweep file") -> SweepFile:
    """Validate a parsed sweep file.

    Raises:
        ConfigurationError: Every mistake, one line each, naming its key and what is allowed.
    """
    try:
        return SweepFile.model_validate(dict(data))
    except ValidationError as error:
        problems = error.errors(include_url=False)
        inner = [tuple(p["loc"]) for p in problems]
        lines = []
        for problem in problems:
            loc = tuple(problem["loc"])
            if problem["type"] == "too_short" and any(o[: len(loc)] == loc != o for o in inner):
                continue  # a list whose bad entries were dropped is not also "too short"
            message = str(problem["msg"]).removeprefix("Value error, ")
            # in the words of a TOML file: arrays and tables, not tuples and classes
            message = re.sub(r" for <class '[^']+'>", "", message)
            message = re.sub(r"a valid dictionary or instance of \w+", "a table", message)
            message = message.replace("Tuple should", "List should").replace("tuple", "list")
            if problem["type"] not in ("value_error", "missing", "extra_forbidden"):
                message += f" (got {problem.get('input')!r})"
            lines.append(f"  {_where(tuple(problem['loc']))}: {message}")
        raise ConfigurationError(
            f"{source} has {len(lines)} mistake(s):\n" + "\n".join(lines)
        ) from None


def load_sweep(path: str | os.PathLike[str]) -> SweepFile:
    """Read and validate a TOML sweep file; relative paths are resolved against its folder.

    Raises:
        ConfigurationError: The file cannot be read, is not TOML, or has mistakes.
    """
    source = Path(path)
    if tomllib is None:
        raise ConfigurationError("Reading a sweep file on Python 3.10 needs `pip install tomli`.")
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigurationError(f"Cannot read sweep file {source}: {error}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(f"{source} is not valid TOML: {error}") from error
    sweep = parse_sweep(data, str(source))
    base = source.parent

    def here(value: Path) -> Path:
        return value if value.expanduser().is_absolute() else base / value

    slms = []
    for index, slm in enumerate(sweep.slms):
        name = Path(slm.name).expanduser()
        local = name if name.is_absolute() else base / name
        if local.exists():
            slm = slm.model_copy(update={"name": str(local)})
        elif slm.name.endswith(".gguf") or slm.name.startswith((".", "/", "~")):
            raise ConfigurationError(
                f"{source}: slms[{index}].name: no model at {local}; write a bundled name, "
                "a model directory, a .gguf file (relative to the sweep file) or a hub id."
            )
        slms.append(slm)
    return sweep.model_copy(
        update={
            "run_dir": here(sweep.run_dir),
            "data_dir": None if sweep.data_dir is None else here(sweep.data_dir),
            "slms": tuple(slms),
        }
    )


def sample_items(sweep: SweepFile) -> dict[str, list[BenchItem]]:
    """Each dataset's items: the union of every seed's fixed sample, in first-seen order."""
    data: dict[str, list[BenchItem]] = {}
    for spec in sweep.datasets:
        chosen: dict[str, BenchItem] = {}
        for seed in sweep.seeds:
            for item in load_dataset(
                spec.name, sweep.data_dir, limit=sweep.limit_of(spec), seed=seed
            ):
                chosen.setdefault(item.item_id, item)
        data[spec.name] = list(chosen.values())
    return data


@dataclass(frozen=True)
class Shard:
    """One unit of work: a model on a slice of one dataset, in every prompt format.

    Attributes:
        role: ``slm`` or ``strong``.
        model: The SLM's :attr:`SlmSpec.key` or the strong model's LiteLLM string.
        dataset: Dataset name.
        index: The slice's number within the dataset.
        items: The slice's items.
        formats: Prompt formats.
        spec: The SLM's entry (None for a strong model).
    """

    role: str
    model: str
    dataset: str
    index: int
    items: tuple[BenchItem, ...]
    formats: tuple[str, ...]
    spec: SlmSpec | None = None

    @property
    def key(self) -> str:
        """A file-system-safe name, unique within a sweep."""
        return f"{self.role}-{model_slug(self.model)}-{self.dataset}-{self.index:04d}"


def plan_shards(
    sweep: SweepFile, data: Mapping[str, Sequence[BenchItem]], role: str
) -> list[Shard]:
    """The shards of one role (``slm`` first, then ``strong``), models outermost."""
    if role not in ("slm", "strong"):
        raise ValueError(f"role must be 'slm' or 'strong', got {role!r}")
    models: list[tuple[str, SlmSpec | None]] = (
        [(s.key, s) for s in sweep.slms] if role == "slm" else [(s, None) for s in sweep.strong]
    )
    shards = []
    for model, spec in models:
        for dataset, items in data.items():
            size = sweep.shard_size or max(1, len(items))
            for index, start in enumerate(range(0, len(items), size)):
                chunk = tuple(items[start : start + size])
                shards.append(Shard(role, model, dataset, index, chunk, sweep.formats, spec))
    return shards
