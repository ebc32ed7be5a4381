"""Calibration profiles record the engine, and a profile moves between engines only by rule."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from confroute import calibration, calibration_transfer, profile_lookup
from confroute.assembly import threshold_policy
from confroute.backend import Capabilities
from confroute.calibration import (
    CalibrationProfile,
    PoolItem,
    ProfileFingerprint,
    default_profile_path,
)
from confroute.calibration_transfer import TransferShift, engine_problem, transfer_allowed
from confroute.errors import ProfileMismatchError
from confroute.estimators import get
from confroute.models import BUNDLED_MODELS, DEFAULT_SLM
from confroute.policies import FixedThreshold, TargetEscalationRate
from confroute.settings import RouterSettings

SMALL = TransferShift(rate_shift=0.01, flip_share=0.02, max_abs_diff=0.03, mean_abs_diff=0.004)
LARGE = TransferShift(rate_shift=0.06, flip_share=0.09, max_abs_diff=0.2, mean_abs_diff=0.03)
PAIR = frozenset({"transformers", "llama.cpp"})


@pytest.fixture
def measured(monkeypatch: pytest.MonkeyPatch) -> None:
    """A table in which perplexity transfers between the engines and p_true does not."""
    monkeypatch.setitem(
        calibration_transfer.MEASURED_SHIFTS, PAIR, {"perplexity": SMALL, "p_true": LARGE}
    )


def profile(
    backend: str = "transformers",
    estimator: str = "perplexity",
    model: tuple[str, str] = ("slm", "a" * 64),
) -> CalibrationProfile:
    fingerprint = ProfileFingerprint(
        model_name=model[0], model_fingerprint=model[1], estimator=estimator, backend=backend
    )
    items = [PoolItem(dataset="d", item_id=str(i), confidence=c) for i, c in enumerate((0.2, 0.8))]
    return CalibrationProfile.from_pool(items, fingerprint)


def test_the_fingerprint_records_the_engine_and_round_trips(tmp_path: Path) -> None:
    made = profile("llama.cpp")
    path = tmp_path / "p.json"
    made.save(path)
    assert json.loads(path.read_text())["fingerprint"]["backend"] == "llama.cpp"
    assert CalibrationProfile.load(path).fingerprint.backend == "llama.cpp"
    assert made.fingerprint.short().endswith("engine llama.cpp")


def test_a_profile_written_before_the_engine_was_recorded_is_a_transformers_one(
    tmp_path: Path,
) -> None:
    data = json.loads(profile().model_dump_json())
    del data["fingerprint"]["backend"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    assert CalibrationProfile.load(path).fingerprint.backend == "transformers"


@pytest.mark.usefixtures("measured")
def test_the_rule_allows_only_measured_small_shifts() -> None:
    assert transfer_allowed("llama.cpp", "llama.cpp", "anything")
    assert transfer_allowed("transformers", "llama.cpp", "perplexity")
    assert transfer_allowed("llama.cpp", "transformers", "perplexity")  # the shift is symmetric
    assert not transfer_allowed("transformers", "llama.cpp", "p_true")
    assert not transfer_allowed("transformers", "llama.cpp", "min_token_prob")  # not measured
    assert not transfer_allowed("transformers", "server", "perplexity")
    assert engine_problem("transformers", None, "p_true") is None  # engine not checked


@pytest.mark.usefixtures("measured")
def test_check_compatible_accepts_a_small_shift_and_refuses_a_large_one() -> None:
    profile().check_compatible("a" * 64, "perplexity", backend="llama.cpp")  # silent
    with pytest.raises(ProfileMismatchError) as info:
        profile(estimator="p_true").check_compatible("a" * 64, "p_true", backend="llama.cpp")
    message = str(info.value)
    assert "engine 'llama.cpp' vs 'transformers'" in message
    assert "0.060" in message and "9.0%" in message
    assert "confroute calibrate --slm-backend llama.cpp" in message
    with pytest.raises(ProfileMismatchError, match="never measured"):
        profile().check_compatible("a" * 64, "perplexity", backend="server")
    with pytest.warns(UserWarning, match="--slm-backend server"):
        profile().check_compatible("a" * 64, "perplexity", backend="server", strict=False)
    # a weights mismatch alone says nothing about engines
    with pytest.raises(ProfileMismatchError) as weights:
        profile().check_compatible("b" * 64, "perplexity", backend="transformers")
    assert "--slm-backend" not in str(weights.value)


def _local(backend: str) -> Any:
    """What threshold_policy reads of a backend: the bundled 0.5B's name and weights."""
    return SimpleNamespace(
        name=DEFAULT_SLM,
        fingerprint=BUNDLED_MODELS[DEFAULT_SLM].sha256,
        capabilities=Capabilities(backend=backend),
    )


BUNDLED = (DEFAULT_SLM, BUNDLED_MODELS[DEFAULT_SLM].sha256)


@pytest.fixture
def transformers_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A profile directory with the bundled 0.5B's transformers profiles only (no engine's own)."""
    for name in ("perplexity", "p_true"):
        profile("transformers", name, BUNDLED).save(tmp_path / DEFAULT_SLM / f"{name}.json")
    monkeypatch.setattr(profile_lookup, "profile_search_dirs", lambda: [tmp_path])
    return tmp_path


def test_the_engine_s_own_profile_comes_before_the_engine_neutral_one(
    transformers_only: Path,
) -> None:
    flat = transformers_only / DEFAULT_SLM / "p_true.json"
    assert default_profile_path(DEFAULT_SLM, "p_true", "llama.cpp") == flat  # none of its own
    own = transformers_only / DEFAULT_SLM / "llama.cpp" / "p_true.json"
    profile("llama.cpp", "p_true", BUNDLED).save(own)
    assert default_profile_path(DEFAULT_SLM, "p_true", "llama.cpp") == own
    assert default_profile_path(DEFAULT_SLM, "p_true", "transformers") == flat
    assert default_profile_path(DEFAULT_SLM, "p_true") == flat
    assert default_profile_path(DEFAULT_SLM, "min_token_prob", "llama.cpp") is None
    assert calibration.shipped_profiles() == [
        f"{DEFAULT_SLM}/llama.cpp/p_true",
        f"{DEFAULT_SLM}/p_true",
        f"{DEFAULT_SLM}/perplexity",
    ]
    # a static threshold on llama.cpp now holds the rate of the engine's own profile, which
    # the rule would refuse from the transformers one (p_true moved too far between them)
    policy = threshold_policy(
        RouterSettings(escalation_rate=0.3, adapt_to_traffic=False),
        _local("llama.cpp"),
        get("p_true"),
        None,
    )
    assert isinstance(policy, TargetEscalationRate)
    assert policy.profile.fingerprint.backend == "llama.cpp"


@pytest.mark.usefixtures("measured", "transformers_only")
def test_the_shipped_profile_is_used_on_another_engine_only_by_rule(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = RouterSettings(adapt_to_traffic=False)  # a static threshold: the strict rule
    kept = threshold_policy(settings, _local("llama.cpp"), get("perplexity"), None)
    assert isinstance(kept, TargetEscalationRate)  # the shipped profile's rate is held
    with caplog.at_level(logging.WARNING, logger="confroute.assembly"):
        fixed = threshold_policy(settings, _local("llama.cpp"), get("p_true"), None)
    assert type(fixed) is FixedThreshold
    assert "--slm-backend llama.cpp" in caplog.text and "p_true" in caplog.text
    with pytest.raises(ProfileMismatchError, match=r"--slm-backend llama\.cpp"):
        threshold_policy(
            RouterSettings(escalation_rate=0.3, adapt_to_traffic=False),
            _local("llama.cpp"),
            get("p_true"),
            None,
        )
    own = threshold_policy(settings, _local("transformers"), get("p_true"), None)
    assert isinstance(own, TargetEscalationRate)


@pytest.mark.usefixtures("measured", "transformers_only")
def test_a_held_rate_starts_from_a_measured_engine_pair_and_refuses_an_unmeasured_one() -> None:
    held = threshold_policy(RouterSettings(), _local("llama.cpp"), get("p_true"), None)
    assert not isinstance(held, FixedThreshold)  # the traffic corrects the start point
    rate = threshold_policy(
        RouterSettings(escalation_rate=0.3), _local("llama.cpp"), get("p_true"), None
    )
    assert not isinstance(rate, FixedThreshold)
    with pytest.raises(ProfileMismatchError, match="never measured"):
        threshold_policy(RouterSettings(escalation_rate=0.3), _local("server"), get("p_true"), None)


def test_the_measured_table_agrees_with_its_own_rule() -> None:
    for shifts in calibration_transfer.MEASURED_SHIFTS.values():
        for name, shift in shifts.items():
            assert shift.small == transfer_allowed("transformers", "llama.cpp", name)
            assert 0.0 <= shift.mean_abs_diff <= shift.max_abs_diff <= 1.0
    assert np.isclose(calibration_transfer.RATE_TOLERANCE, 0.02)
