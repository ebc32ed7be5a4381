"""The routing benchmark: datasets, prompt formats, a cached sweep runner, metrics, reports.

Run it with ``confroute bench run --datasets mmlu --limit 20`` (or ``python -m confroute.bench
run ...``) and ``confroute bench report runs/bench``; see ``docs/bench.md``.
"""

from confroute.bench.bfcl import BFCL_CATEGORIES, BfclItem, grade_calls, load_bfcl
from confroute.bench.datasets import DATASETS, BenchItem, load_dataset
from confroute.bench.formats import FORMATS, extract_answer, grade, messages_for
from confroute.bench.runner import SweepConfig, SweepRunner

__all__ = [
    "BFCL_CATEGORIES",
    "DATASETS",
    "FORMATS",
    "BenchItem",
    "BfclItem",
    "SweepConfig",
    "SweepRunner",
    "extract_answer",
    "grade",
    "grade_calls",
    "load_bfcl",
    "load_dataset",
    "messages_for",
]
