"""``confroute calibrate`` and ``confroute profile show``: thin CLI wrappers over the library.

The calibration logic lives in :mod:`confroute.calibration` (a pure function returning a frozen
profile); this module only reads prompts, scores them with a local-only router, and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from confroute.calibration import (
    CalibrationProfile,
    PoolItem,
    ProfileFingerprint,
    build_calibration_set,
    profile_from_run,
)
from confroute.cli_args import add_slm_backend_arguments, slm_backend_settings
from confroute.errors import CalibrationError, InvalidRequestError
from confroute.settings import environment, settings_from

__all__ = [
    "CALIBRATION_DATASETS",
    "add_parsers",
    "read_prompts",
    "run_calibrate",
    "run_profile",
    "score_pool",
]

CALIBRATION_DATASETS: tuple[str, ...] = (
    "mmlu",
    "arc_challenge",
    "commonsenseqa",
    "boolq",
    "arc_easy",
    "openbookqa",
    "hellaswag",
    "truthfulqa",
    "strategyqa",
    "coin_flip",
    "svamp",
)
"""The kit datasets the shipped profiles are built from (letter, yes/no and number answers)."""


def add_parsers(commands: Any, default_slm: str, estimators: Sequence[str]) -> None:
    """Add the ``calibrate`` and ``profile`` subcommands to the main parser."""
    calibrate = commands.add_parser(
        "calibrate",
        help="build a calibration profile from benchmark datasets or a JSONL of prompts",
        description="Score prompts with the local model and estimator and save the calibration "
        "set's profile (JSON). Either a JSONL file (each line: {'id', 'prompt' or 'messages', "
        "optional 'dataset', optional 'correct': true/false}) or --data-dir DIR (datasets in "
        "the benchmark kit's layout, asked in the answer-only format and graded; the answers "
        "are cached in --run-dir like `confroute bench run`, so a rerun reuses them).",
    )
    calibrate.add_argument("prompts", type=Path, nargs="?", help="JSONL file of prompts")
    calibrate.add_argument(
        "--data-dir", default=None, help="benchmark data directory (env CONFROUTE_DATA_DIR)"
    )
    calibrate.add_argument(
        "--datasets",
        default=",".join(CALIBRATION_DATASETS),
        help="comma-separated datasets with --data-dir (default %(default)s)",
    )
    calibrate.add_argument("--limit", type=int, default=100, help="items per dataset")
    calibrate.add_argument(
        "--strong",
        default=None,
        help="with --data-dir/--run-dir: a strong model of the run whose answers label the "
        "profile (for the predicted system accuracy)",
    )
    calibrate.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="answer cache (a `confroute bench run` directory of answers from the engine "
        "of --slm-backend; default CACHE/calibration, CACHE/calibration-ENGINE for another "
        "engine than transformers); without --data-dir the profile is built from what it holds",
    )
    calibrate.add_argument("--output", "-o", type=Path, required=True, help="profile JSON to write")
    calibrate.add_argument("--slm", default=default_slm, help="local model (default %(default)s)")
    calibrate.add_argument("--estimator", default="perplexity", choices=list(estimators))
    add_slm_backend_arguments(calibrate, environment())
    calibrate.add_argument("--bins", type=int, default=30, help="confidence bins (default 30)")
    calibrate.add_argument(
        "--fraction",
        type=float,
        default=1.0,
        help="share of each bin to keep (the paper samples 0.1 of a large pool; default 1.0 "
        "keeps every scored item)",
    )
    calibrate.add_argument("--seed", type=int, default=0)
    calibrate.add_argument("--batch-size", type=int, default=8)
    calibrate.add_argument("--max-new-tokens", type=int, default=64)
    calibrate.add_argument("--prompt-style", default="default", help="name recorded in the profile")
    profile = commands.add_parser("profile", help="inspect a calibration profile")
    actions = profile.add_subparsers(dest="profile_command", required=True)
    show = actions.add_parser("show", help="print a summary and save a histogram plot")
    show.add_argument("file", type=Path)
    show.add_argument("--plot", type=Path, default=None, help="PNG path (default FILE.png)")


def read_prompts(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a prompts JSONL file, checked."""
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise CalibrationError(f"Cannot read {path}: {error}") from error
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise CalibrationError(f"{path}:{number} is not JSON: {error}") from error
        if not isinstance(row, dict) or ("prompt" not in row and "messages" not in row):
            raise CalibrationError(f"{path}:{number} needs a 'prompt' or 'messages' field.")
        row.setdefault("id", str(number))
        row.setdefault("dataset", path.stem)
        yield row


def score_pool(
    router: Any, rows: Sequence[dict[str, Any]], batch_size: int, progress: bool = True
) -> list[PoolItem]:
    """Score every row with a (local-only) router; one batched generation per batch."""
    from tqdm import tqdm

    items: list[PoolItem] = []
    bar = tqdm(
        total=len(rows), desc="scoring", unit="prompt", disable=not progress, file=sys.stderr
    )
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        prompts = [row.get("messages") or row["prompt"] for row in batch]
        responses = router.route_batch(prompts)
        for row, response in zip(batch, responses, strict=True):
            items.append(
                PoolItem(
                    dataset=str(row["dataset"]),
                    item_id=str(row["id"]),
                    confidence=response.decision.confidence,
                    correct=row.get("correct"),
                )
            )
        bar.update(len(batch))
    bar.close()
    return items


def run_calibrate(args: argparse.Namespace) -> int:
    """Build and save a profile from a prompts file or benchmark datasets."""
    if args.prompts is None:
        return _calibrate_from_datasets(args)
    import confroute
    from confroute.router import ConfRouter

    rows = list(read_prompts(args.prompts))
    if not rows:
        raise CalibrationError(f"{args.prompts} holds no prompts: the calibration set is empty.")
    router = ConfRouter(
        args.slm,
        None,
        estimator=args.estimator,
        threshold=0.0,
        max_new_tokens=args.max_new_tokens,
        **slm_backend_settings(args),
    )
    pool = score_pool(router, rows, args.batch_size)
    fingerprint = ProfileFingerprint(
        model_name=router.local.name,
        model_fingerprint=router.local.fingerprint,
        estimator=router.estimator.name,
        estimator_params=router.estimator.params(),
        prompt_style=args.prompt_style,
        confroute_version=confroute.__version__,
        backend=router.local.capabilities.backend,
    )
    profile = build_calibration_set(
        pool, fingerprint, bins=args.bins, fraction=args.fraction, seed=args.seed
    )
    profile.save(args.output)
    print(f"wrote {args.output}: {profile.size} of {len(pool)} scored items")
    _print_summary(profile)
    return 0


def _calibrate_from_datasets(args: argparse.Namespace) -> int:
    """``--data-dir`` / ``--run-dir``: score kit datasets through the bench runner's cache."""
    from confroute.backend_choice import choose_backend, load_backend
    from confroute.models import BUNDLED_MODELS, cache_dir

    data_dir = args.data_dir or environment().data_dir
    if data_dir is None and args.run_dir is None:
        raise CalibrationError(
            "Give a JSONL file of prompts, --data-dir DIR (benchmark datasets), or --run-dir "
            "RUN (answers already cached by `confroute bench run`)."
        )
    settings = settings_from(None, **slm_backend_settings(args))
    from confroute.estimators import get

    choice = choose_backend(
        args.slm,
        settings.local_backend,
        api_base=settings.with_env().local_api_base,
        needs=get(args.estimator).requires,
    )
    suffix = "" if choice.backend == "transformers" else f"-{choice.backend}"
    run_dir = args.run_dir or cache_dir() / f"calibration{suffix}"
    datasets = [d for d in args.datasets.split(",") if d]
    item_ids = None
    fingerprint = None
    if data_dir is not None:
        from confroute.bench import SweepConfig, SweepRunner, load_dataset

        config = SweepConfig(
            datasets=tuple(datasets),
            slms=(args.slm,),
            strong_models=(args.strong,) if args.strong else (),
            methods=(args.estimator,),
            limit=args.limit,
            seed=args.seed,
            data_dir=str(data_dir),
            batch_size=args.batch_size,
            baseline=False,
        )
        runner = SweepRunner(config, run_dir, load_local=lambda _: load_backend(choice, settings))
        runner.run()
        item_ids = {
            d: {i.item_id for i in load_dataset(d, data_dir, limit=args.limit, seed=args.seed)}
            for d in datasets
        }
        if args.slm not in BUNDLED_MODELS:
            fingerprint = runner.local_model(args.slm).fingerprint
    profile = profile_from_run(
        run_dir,
        args.slm,
        args.estimator,
        datasets=datasets,
        item_ids=item_ids,
        strong=args.strong,
        fingerprint=fingerprint,
        bins=args.bins,
        fraction=args.fraction,
        seed=args.seed,
        backend=choice.backend,
    )
    profile.save(args.output)
    print(f"wrote {args.output}: {profile.size} items from {run_dir} ({choice.backend})")
    _print_summary(profile)
    return 0


def _print_summary(profile: CalibrationProfile) -> None:
    for key, value in profile.summary().items():
        shown = f"{value:.4f}" if isinstance(value, float) else value
        print(f"{key:16s} {shown}")


def run_profile(args: argparse.Namespace) -> int:
    """``profile show``: summary on stdout, histogram PNG beside the file."""
    profile = CalibrationProfile.load(args.file)
    _print_summary(profile)
    plot = args.plot or args.file.with_suffix(".png")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise InvalidRequestError(
            "Plotting needs matplotlib: pip install 'confroute[bench]'"
        ) from error
    figure, axis = plt.subplots(figsize=(6, 3.5))
    if profile.correct is not None:
        right = [c for c, ok in zip(profile.confidences, profile.correct, strict=True) if ok]
        wrong = [c for c, ok in zip(profile.confidences, profile.correct, strict=True) if not ok]
        axis.hist([right, wrong], bins=30, range=(0, 1), stacked=True, label=["correct", "wrong"])
        axis.legend()
    else:
        axis.hist(profile.confidences, bins=30, range=(0, 1))
    axis.set_xlabel(f"confidence ({profile.fingerprint.estimator})")
    axis.set_ylabel("items")
    axis.set_title(profile.fingerprint.short(), fontsize=8)
    figure.tight_layout()
    figure.savefig(plot, dpi=120)
    plt.close(figure)
    print(f"histogram      {plot}")
    return 0
