"""The calibration profiles shipped for the bundled Qwen models are complete and consistent."""

from __future__ import annotations

import pytest

from confroute.calibration import CalibrationProfile, default_profile_path, shipped_profiles
from confroute.estimators import get
from confroute.models import BUNDLED_MODELS

SLMS = ("qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct")
ESTIMATORS = (
    "perplexity",
    "avg_token_prob",
    "mean_token_entropy",
    "min_token_prob",
    "p_true",
    "ood_probe",
)


LLAMA_CPP_ESTIMATORS = tuple(e for e in ESTIMATORS if e != "ood_probe")  # no hidden states
SHIPPED = [(slm, "transformers", e) for slm in SLMS for e in ESTIMATORS] + [
    (slm, "llama.cpp", e) for slm in SLMS for e in LLAMA_CPP_ESTIMATORS
]


@pytest.mark.parametrize(("slm", "engine", "estimator"), SHIPPED)
def test_profile_ships_for_the_model_engine_and_estimator(
    slm: str, engine: str, estimator: str
) -> None:
    path = default_profile_path(slm, estimator, engine)
    assert path is not None, f"no shipped profile for {slm}/{estimator} on {engine}"
    where = path.parent.name if engine == "transformers" else path.parent.parent.name
    assert where == slm and (engine == "transformers" or path.parent.name == engine)
    profile = CalibrationProfile.load(path)
    assert profile.fingerprint.model_name == slm
    assert profile.fingerprint.model_fingerprint == BUNDLED_MODELS[slm].sha256
    assert profile.fingerprint.estimator == estimator
    assert profile.fingerprint.backend == engine  # transformers: made before it was recorded
    assert profile.fingerprint.estimator_params == get(estimator).params()
    assert profile.correct is not None  # graded on the kit datasets
    formats = profile.formats()
    assert {"letter", "yes_no", "number"} <= set(formats)
    assert min(formats.values()) >= 30  # enough items for a per-format threshold
    datasets = {entry.dataset for entry in profile.manifest}
    assert len(datasets) >= 10 and profile.size >= 500
    thresholds = [profile.threshold_for(r) for r in (0.1, 0.2, 0.3, 0.4, 0.5)]
    assert thresholds == sorted(thresholds) and thresholds[0] > 0.0


def test_shipped_profiles_are_listed() -> None:
    listed = shipped_profiles()
    expected = {f"{s}/{e}" if g == "transformers" else f"{s}/{g}/{e}" for s, g, e in SHIPPED}
    assert expected <= set(listed)


@pytest.mark.parametrize("slm", SLMS)
def test_the_engines_profiles_hold_the_same_calibration_items(slm: str) -> None:
    """Both engines' profiles score one item set, so their shift is measured item by item."""
    for estimator in LLAMA_CPP_ESTIMATORS:
        items = []
        for engine in ("transformers", "llama.cpp"):
            path = default_profile_path(slm, estimator, engine)
            assert path is not None
            profile = CalibrationProfile.load(path)
            assert profile.fingerprint.backend == engine  # not the engine-neutral fallback
            manifest = profile.manifest
            items.append({(entry.dataset, entry.item_id) for entry in manifest})
        assert items[0] == items[1]
