"""The ``confroute bench`` command group: ``run`` a sweep, ``sweep`` a sweep file, ``report``.

Wired into the main CLI with two lines in :mod:`confroute.cli` (``_parser`` and ``main``)::

    add_bench_parser(commands)  # from confroute.bench.cli import add_bench_parser
    if args.command == "bench": return run_bench(args)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from confroute.errors import ConfigurationError, ConfRouteError
from confroute.settings import environment

if TYPE_CHECKING:
    from confroute.bench.runner import SweepConfig

__all__ = ["add_bench_parser", "main", "run_bench"]

logger = logging.getLogger(__name__)

DEFAULT_RUN_DIR = "runs/bench"


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_bench_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench run``, ``bench sweep`` and ``bench report`` to a sub-command set."""
    from confroute.bench.datasets import DATA_DIR_ENV, DATASETS
    from confroute.bench.formats import FORMATS
    from confroute.bench.runner import DEFAULT_METHODS
    from confroute.models import DEFAULT_LLM, DEFAULT_SLM
    from confroute.settings import LOCAL_PROVIDER

    bench = subparsers.add_parser("bench", help="run the routing benchmark and report it")
    commands = bench.add_subparsers(dest="bench_command", required=True)
    run = commands.add_parser(
        "run",
        help="run (or resume) a sweep; cached answers are reused",
        description="Run SLMs x strong models x datasets x methods x formats. Everything is "
        "cached in the run directory; a rerun computes only what is missing.",
    )
    run.add_argument("--config", type=Path, default=None, help="sweep as a JSON file")
    run.add_argument(
        "--datasets",
        type=_list,
        default=None,
        help=f"comma-separated datasets ({', '.join(DATASETS)})",
    )
    run.add_argument("--slm", type=_list, default=None, help=f"SLMs (default {DEFAULT_SLM})")
    run.add_argument(
        "--strong",
        type=_list,
        default=None,
        help=f"strong models as LiteLLM strings (default {LOCAL_PROVIDER}/{DEFAULT_LLM}; "
        "'none' for none)",
    )
    run.add_argument(
        "--methods",
        type=_list,
        default=None,
        help=f"estimators (default {','.join(DEFAULT_METHODS)})",
    )
    run.add_argument(
        "--formats", type=_list, default=None, help=f"prompt formats ({', '.join(FORMATS)})"
    )
    run.add_argument("--limit", type=int, default=None, help="items per dataset (default 100)")
    run.add_argument("--seed", type=int, default=None, help="sample seed (default 0)")
    run.add_argument(
        "--data-dir",
        default=None,
        help=f"benchmark data directory (env {DATA_DIR_ENV})",
    )
    run.add_argument(
        "--run-dir", type=Path, default=Path(DEFAULT_RUN_DIR), help="cache and results folder"
    )
    run.add_argument("--max-new-tokens", type=int, default=None, help="SLM token cap override")
    run.add_argument(
        "--strong-max-new-tokens", type=int, default=None, help="strong model token cap override"
    )
    run.add_argument("--batch-size", type=int, default=None, help="local batch size (default 8)")
    run.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    run.add_argument(
        "--judge", default=None, help="LiteLLM model that grades free-text answers (optional)"
    )
    run.add_argument("--no-baseline", action="store_true", help="skip query embeddings")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--report", action="store_true", help="write the report afterwards")
    _add_sweep_parser(commands)
    report = commands.add_parser("report", help="write tables, plots and an HTML page")
    report.add_argument("run_dir", type=Path, help="a run directory of `confroute bench run`")
    report.add_argument("--out", type=Path, default=None, help="output folder (RUN_DIR/report)")
    report.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    report.add_argument("--no-plots", action="store_true", help="tables only")
    report.add_argument(
        "--limit",
        type=int,
        default=None,
        help="report on the first N items of each dataset's sample only (compare methods "
        "that were run with a smaller --limit on the same items)",
    )


def _add_sweep_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sweep = commands.add_parser(
        "sweep",
        help="run (or resume) the grid of a TOML sweep file, locally or on Ray",
        description="Run every SLM x strong model x dataset x method x format x seed of a "
        "sweep file (see docs/bench.md) into its run directory; only what is missing is "
        "computed, so a killed sweep resumes.",
    )
    sweep.add_argument("file", type=Path, help="the sweep file (TOML)")
    sweep.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="local: in this process (default); ray: one Ray task per (model, dataset shard)",
    )
    sweep.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster to join ('auto', 'ray://host:10001'; default RAY_ADDRESS or a new "
        "local cluster)",
    )
    sweep.add_argument("--run-dir", type=Path, default=None, help="override the file's run_dir")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar")
    sweep.add_argument("--report", action="store_true", help="write the report afterwards")


def _run_sweep_file(args: argparse.Namespace) -> int:
    from confroute.bench.report import write_report
    from confroute.bench.sweep_file import load_sweep
    from confroute.bench.sweep_run import run_sweep

    sweep = load_sweep(args.file)
    if args.ray_address is not None and args.executor != "ray":
        raise ConfigurationError("--ray-address needs --executor ray.")
    run_dir = args.run_dir or sweep.run_dir
    result = run_sweep(
        sweep,
        run_dir=run_dir,
        executor=args.executor,
        ray_address=args.ray_address,
        progress=not args.no_progress,
    )
    computed = ", ".join(f"{k}={v}" for k, v in sorted(result.stats.items())) or "nothing"
    retried = sum(1 for n in result.attempts.values() if n > 1)
    print(
        f"run dir: {run_dir}  ({result.wall_s:.1f} s, executor {args.executor}; "
        f"{result.run_shards} of {result.shards} shards had work, {retried} retried; "
        f"computed: {computed})"
    )
    for failure in result.failures:
        print(f"failed: {failure.shard} after {failure.attempts} attempt(s): {failure.error}")
    if result.failures:
        print("Rerun the same command to retry the failed shards; finished items are kept.")
    sys.stdout.flush()
    if args.report:
        out = write_report(run_dir)
        print(f"report: {out / 'report.md'}")
    return 1 if result.failures else 0


def _sweep(args: argparse.Namespace) -> SweepConfig:
    from confroute.bench.runner import SweepConfig

    data: dict[str, object] = {}
    if args.config is not None:
        try:
            data = json.loads(args.config.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigurationError(f"Cannot read sweep config {args.config}: {error}") from error
    overrides = {
        "datasets": args.datasets,
        "slms": args.slm,
        "strong_models": [] if args.strong == ["none"] else args.strong,
        "methods": args.methods,
        "formats": args.formats,
        "limit": args.limit,
        "seed": args.seed,
        "data_dir": args.data_dir,
        "max_new_tokens": args.max_new_tokens,
        "strong_max_new_tokens": args.strong_max_new_tokens,
        "batch_size": args.batch_size,
        "device": args.device,
        "judge": args.judge,
    }
    data.update({k: v for k, v in overrides.items() if v is not None})
    if args.no_baseline:
        data["baseline"] = False
    if "datasets" not in data:
        raise ConfigurationError("Name the datasets: --datasets mmlu,boolq (or --config FILE).")
    env_data_dir = environment().data_dir
    data.setdefault("data_dir", str(env_data_dir) if env_data_dir is not None else None)
    return SweepConfig.from_dict(data)


def run_bench(args: argparse.Namespace) -> int:
    """Execute ``confroute bench run|sweep|report``; returns the exit status."""
    from confroute.bench.report import write_report
    from confroute.bench.runner import SweepRunner

    if args.bench_command == "report":
        out = write_report(
            args.run_dir,
            args.out,
            n_boot=args.bootstrap,
            plots=not args.no_plots,
            limit=args.limit,
        )
        print(f"report: {out / 'report.md'}")
        print(f"html  : {out / 'report.html'}")
        return 0
    if args.bench_command == "sweep":
        return _run_sweep_file(args)
    config = _sweep(args)
    started = time.perf_counter()
    stats = SweepRunner(config, args.run_dir, progress=not args.no_progress).run()
    elapsed = time.perf_counter() - started
    computed = ", ".join(f"{k}={v}" for k, v in sorted(stats.items()))
    print(f"run dir: {args.run_dir}  ({elapsed:.1f} s; computed: {computed})")
    sys.stdout.flush()
    if args.report:
        out = write_report(args.run_dir)
        print(f"report: {out / 'report.md'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m confroute.bench run|sweep|report ...`` (the same as ``confroute bench ...``)."""
    parser = argparse.ArgumentParser(prog="confroute")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        return run_bench(args)
    except ConfRouteError as error:
        print(f"confroute: error: {error}", file=sys.stderr)
        return 2
