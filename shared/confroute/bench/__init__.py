"""The routing benchmark: datasets, prompt formats, a cached sweep runner, metrics, reports.

Run it with ``confroute bench run --datasets mmlu --limit 20`` (or ``python -m confroute.bench
run ...``) and ``confroute bench report runs/bench``; see ``docs/bench.md``.
"""

from confroute.bench.datasets import DATASETS, BenchItem, load_dataset
from confroute.bench.formats import FORMATS, extract_answer, grade, messages_for
from confroute.bench.runner import SweepConfig, SweepRunner

__all__ = [
    "DATASETS",
    "FORMATS",
    "BenchItem",
    "SweepConfig",
    "SweepRunner",
    "extract_answer",
    "grade",
    "load_dataset",
    "messages_for",
]
