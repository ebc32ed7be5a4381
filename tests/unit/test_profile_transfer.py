"""benchmarks/profile_transfer.py --from-profiles: the shift between two engines' profiles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from confroute import profile_lookup
from confroute.calibration import CalibrationProfile, PoolItem, ProfileFingerprint
from confroute.calibration_transfer import FLIP_TOLERANCE
from tests.scripts import load_benchmark


def _save(engine: str, confidences: list[float], where: Path) -> None:
    fingerprint = ProfileFingerprint(
        model_name="slm", model_fingerprint="a" * 64, estimator="perplexity", backend=engine
    )
    items = [PoolItem(dataset="d", item_id=str(i), confidence=c) for i, c in enumerate(confidences)]
    CalibrationProfile.from_pool(items, fingerprint).save(where)


def test_the_engines_profiles_are_compared_item_by_item_at_the_transformers_thresholds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    base = [i / 100 for i in range(100)]
    moved = list(base)
    moved[15], moved[25] = 0.05, 0.35  # two items cross the 0.2 and 0.3 thresholds
    _save("transformers", base, tmp_path / "slm" / "perplexity.json")
    _save("llama.cpp", moved, tmp_path / "slm" / "llama.cpp" / "perplexity.json")
    monkeypatch.setattr(profile_lookup, "profile_search_dirs", lambda: [tmp_path])
    script = load_benchmark("profile_transfer")
    code = script.main(
        ["--slm", "slm", "--from-profiles", "--json", "--estimators", "perplexity,p_true"]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["items"] == 100 and summary["missing"] == ["p_true"]
    figures = summary["estimators"]["perplexity"]
    assert figures["max_abs_diff"] == pytest.approx(0.1)
    assert figures["max_abs_diff_same_tokens"] is None  # a profile holds no tokens
    flips = {p["rate"]: p["flips"] for p in figures["points"]}
    assert flips[0.1] == 1 and flips[0.5] == 0  # item 15 drops below 0.1's threshold
    assert figures["max_flip_share"] == max(flips.values()) / 100 <= FLIP_TOLERANCE
    assert summary["rule"]["perplexity"] == "allowed"
