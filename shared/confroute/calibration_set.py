"""Building a calibration profile: the paper's binned sample of a scored pool, or a bench run.

:func:`build_calibration_set` samples a pool of scored items (the confidence range split into
bins, a share of each bin kept); :func:`profile_from_run` makes the pool from the answers a
``confroute bench run`` cached and builds the profile from it (no model is loaded). Both are
importable from :mod:`confroute.calibration`, which holds the profile itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from confroute.errors import CalibrationError, ConfigurationError

if TYPE_CHECKING:
    from confroute.bench.evaluate import RunData
    from confroute.calibration import CalibrationProfile, PoolItem, ProfileFingerprint

__all__ = ["build_calibration_set", "profile_from_run"]


def build_calibration_set(
    pool: Sequence[PoolItem],
    fingerprint: ProfileFingerprint,
    *,
    bins: int = 30,
    fraction: float = 0.1,
    seed: int = 0,
) -> CalibrationProfile:
    """The paper's calibration set: split the confidence range into bins, sample from each.

    Each bin contributes ``fraction`` of its items (stochastic rounding keeps the expected
    share exact, so the sampled distribution follows the pool's).

    Args:
        pool: Scored instances pooled over many datasets.
        fingerprint: What the pool was scored with.
        bins: Number of equal-width confidence bins over the pool's range.
        fraction: Share of each bin to sample, in (0, 1].
        seed: Seed of the sampler.

    Raises:
        CalibrationError: The pool is empty, or ``bins`` / ``fraction`` are invalid.
    """
    if not pool:
        raise CalibrationError(
            "The calibration pool is empty: score at least one item before building a set."
        )
    if bins < 1:
        raise CalibrationError(f"bins must be >= 1, got {bins}.")
    if not 0.0 < fraction <= 1.0:
        raise CalibrationError(f"fraction must be in (0, 1], got {fraction}.")
    rng = np.random.default_rng(seed)
    values = np.asarray([item.confidence or 0.0 for item in pool], dtype=float)
    low, high = float(values.min()), float(values.max())
    edges = np.linspace(low, high, bins + 1) if high > low else np.array([low, low + 1.0])
    index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    chosen: list[PoolItem] = []
    for b in range(len(edges) - 1):
        members = np.flatnonzero(index == b)
        if members.size == 0:
            continue
        expected = fraction * members.size
        count = int(math.floor(expected) + (rng.random() < expected - math.floor(expected)))
        picked = rng.choice(members, size=min(count, members.size), replace=False)
        chosen.extend(pool[int(i)] for i in sorted(picked))
    construction = {
        "bins": bins,
        "fraction": fraction,
        "seed": seed,
        "pool_size": len(pool),
        "datasets": sorted({item.dataset for item in pool}),
    }
    from confroute.calibration import CalibrationProfile

    return CalibrationProfile.from_pool(chosen, fingerprint, construction)


def profile_from_run(
    run_dir: str | Path,
    slm: str,
    estimator: str,
    *,
    prompt_format: str = "answer_only",
    datasets: Sequence[str] | None = None,
    item_ids: dict[str, set[str]] | None = None,
    strong: str | None = None,
    fingerprint: str | None = None,
    bins: int = 30,
    fraction: float = 1.0,
    seed: int = 0,
    data: RunData | None = None,
    backend: str = "transformers",
) -> CalibrationProfile:
    """A calibration profile from the SLM answers cached in a bench run (no model is loaded).

    Every item gets its raw confidence (as the router computes it; for ``ood_probe`` the score
    of a probe trained on the *other* datasets, which is what the shipped probe gives unseen
    data), its correctness, the strong model's correctness when ``strong`` answered it, and its
    answer format; then the paper's construction (:func:`build_calibration_set`) samples the
    set.

    Args:
        run_dir: A ``confroute bench run`` directory.
        slm: The SLM whose answers to use.
        estimator: The estimator (a method of the run).
        prompt_format: Prompt format of the answers.
        datasets: Datasets to pool (default: all in the run).
        item_ids: Dataset -> item ids to keep; datasets not named are left out (default:
            every cached item).
        strong: Strong model for ``strong_correct`` (optional).
        fingerprint: SLM weights fingerprint (default: the bundled model's sha256).
        bins: Confidence bins of the construction.
        fraction: Share of each bin to keep.
        seed: Sampling seed.
        data: An already loaded run.
        backend: Engine that computed the cached answers (recorded in the fingerprint).

    Raises:
        CalibrationError: Nothing to calibrate on (no such SLM, estimator or datasets).
        ConfigurationError: ``fingerprint`` is missing for a model that is not bundled.
    """
    import confroute
    from confroute import estimators as registry
    from confroute.bench.evaluate import group_records, load_run, record_format
    from confroute.calibration import PoolItem, ProfileFingerprint
    from confroute.models import BUNDLED_MODELS

    root = Path(run_dir)
    if fingerprint is None:
        if slm not in BUNDLED_MODELS:
            raise ConfigurationError(
                f"{slm} is not a bundled model: pass its weights fingerprint (LocalModel("
                f"{slm!r}).fingerprint)."
            )
        fingerprint = BUNDLED_MODELS[slm].sha256
    data = data or load_run(root, baseline=False, probes=estimator in ("ood_probe",))
    pool: list[PoolItem] = []
    for group in data.groups:
        if group.slm != slm or group.prompt_format != prompt_format:
            continue
        if datasets is not None and group.dataset not in datasets:
            continue
        if estimator not in group.confidences:
            continue
        values = group.effective(estimator)
        correct = group.correct_for(estimator)
        answers = data.strong.get((strong, group.dataset, prompt_format), {}) if strong else {}
        kind = record_format(group_records(root, group)[0]).key
        keep = item_ids.get(group.dataset, set()) if item_ids is not None else None
        for k, item_id in enumerate(group.item_ids):
            if keep is not None and item_id not in keep:
                continue
            pool.append(
                PoolItem(
                    dataset=group.dataset,
                    item_id=item_id,
                    confidence=max(0.0, float(values[k])),
                    correct=bool(correct[k]),
                    strong_correct=answers.get(item_id),
                    answer_format=kind,
                )
            )
    if not pool:
        raise CalibrationError(
            f"{root} holds no {estimator!r} confidences of {slm} in format {prompt_format!r}; "
            "run `confroute bench run` (or `confroute calibrate --data-dir`) with that "
            "estimator first."
        )
    estimator_object = registry.get(estimator)
    profile_fingerprint = ProfileFingerprint(
        model_name=slm,
        model_fingerprint=fingerprint,
        estimator=estimator,
        estimator_params=estimator_object.params(),
        prompt_style=f"bench:{prompt_format}",
        confroute_version=confroute.__version__,
        backend=backend,
    )
    return build_calibration_set(pool, profile_fingerprint, bins=bins, fraction=fraction, seed=seed)
