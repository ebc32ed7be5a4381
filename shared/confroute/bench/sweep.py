"""A sweep: SLMs x strong models x datasets x methods x formats x limit, as a frozen config.

Also the pieces both runners (:mod:`.runner` for the SLMs, :mod:`.strong` for the strong models)
share: a :class:`SweepCell` with its cache file, batching and the progress bar.

A sweep can be written as JSON (the keys are the attribute names below) and passed to
``confroute bench run --config FILE``; command-line options override its values.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from confroute import estimators as registry
from confroute.bench.formats import FORMATS
from confroute.errors import ConfigurationError
from confroute.models import DEFAULT_LLM, DEFAULT_SLM
from confroute.settings import LOCAL_PROVIDER

if TYPE_CHECKING:
    from confroute.bench.cache import RecordFile
    from confroute.bench.datasets import BenchItem

__all__ = [
    "DEFAULT_METHODS",
    "PROBE_METHODS",
    "SINGLE_PASS_METHODS",
    "SweepCell",
    "SweepConfig",
    "chunks",
    "progress_bar",
]

SINGLE_PASS_METHODS: tuple[str, ...] = (
    "avg_token_prob",
    "perplexity",
    "mean_token_entropy",
    "min_token_prob",
)
"""Methods read from the answer's own forward pass (no extra model work)."""
PROBE_METHODS: tuple[str, ...] = ("trained_probe", "ood_probe")
"""Methods trained by the benchmark on the cached hidden states (see :mod:`.probing`)."""
DEFAULT_METHODS: tuple[str, ...] = (*SINGLE_PASS_METHODS, "p_true")


@dataclass(frozen=True)
class SweepConfig:
    """What to run.

    Attributes:
        datasets: Dataset names (see :data:`confroute.bench.datasets.DATASETS`).
        slms: Local models (bundled names, directories, ``.gguf`` files or hub ids).
        strong_models: LiteLLM model strings of the strong models (may be empty).
        methods: Estimator names; ``trained_probe``/``ood_probe`` are trained by the benchmark.
        formats: Prompt formats (see :data:`confroute.bench.formats.FORMATS`).
        limit: Items per dataset (a fixed sample; None for all).
        seed: Sample seed.
        data_dir: Benchmark data directory (None: ``CONFROUTE_DATA_DIR``).
        max_new_tokens: Override of every format's SLM token cap (None: the format's caps).
        strong_max_new_tokens: Override of the strong model's token cap.
        batch_size: Local generation batch size.
        device: ``auto``, ``cpu`` or ``cuda``.
        concurrency: Parallel calls to a remote strong model.
        baseline: Embed every query for the query-only router baseline.
        judge: LiteLLM model that grades free-text answers (None: exact match only).
    """

    datasets: tuple[str, ...]
    slms: tuple[str, ...] = (DEFAULT_SLM,)
    strong_models: tuple[str, ...] = (f"{LOCAL_PROVIDER}/{DEFAULT_LLM}",)
    methods: tuple[str, ...] = DEFAULT_METHODS
    formats: tuple[str, ...] = ("answer_only",)
    limit: int | None = 100
    seed: int = 0
    data_dir: str | None = None
    max_new_tokens: int | None = None
    strong_max_new_tokens: int | None = None
    batch_size: int = 8
    device: str = "auto"
    concurrency: int = 4
    baseline: bool = True
    judge: str | None = None

    def __post_init__(self) -> None:
        """Reject unknown names early, before any model is loaded."""
        known = set(registry.available())
        unknown = [m for m in self.methods if m not in known]
        if unknown:
            raise ConfigurationError(
                f"Unknown methods {unknown}; choose from: {', '.join(sorted(known))}."
            )
        bad = [f for f in self.formats if f not in FORMATS]
        if bad:
            raise ConfigurationError(f"Unknown formats {bad}; choose from {', '.join(FORMATS)}.")
        if not self.datasets or not self.slms:
            raise ConfigurationError("A sweep needs at least one dataset and one SLM.")
        if self.batch_size < 1 or self.concurrency < 1:
            raise ConfigurationError("batch_size and concurrency must be >= 1.")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepConfig:
        """Build from a JSON object; unknown keys are rejected."""
        names = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigurationError(f"Unknown sweep keys {unknown}; known: {sorted(names)}.")
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class SweepCell:
    """One (model, dataset, format) cell of the sweep and its cache file."""

    model: str
    dataset: str
    prompt_format: str
    items: list[BenchItem]
    records: RecordFile
    cached: dict[str, dict[str, Any]] = field(default_factory=dict)


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar on stderr (disabled when ``enabled`` is False)."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        file=sys.stderr,
        leave=False,
        dynamic_ncols=True,
        disable=not enabled,
    )


def chunks(items: Sequence[BenchItem], size: int) -> list[list[BenchItem]]:
    """``items`` in consecutive batches of at most ``size``."""
    return [list(items[i : i + size]) for i in range(0, len(items), size)]
