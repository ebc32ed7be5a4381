"""Leave-one-dataset-out transfer and profiles built from a bench run's cache (no model)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from confroute.bench.cache import RecordFile, generation_to_record
from confroute.bench.evaluate import load_run
from confroute.bench.transfer import (
    format_of,
    leave_one_dataset_out,
    markdown,
    pivot_markdown,
    variant_confidences,
)
from confroute.calibration import CalibrationProfile, profile_from_run
from confroute.errors import CalibrationError, ConfigurationError
from confroute.generation import Generation
from confroute.models import BUNDLED_MODELS
from confroute.policies import TargetEscalationRate

SLM = "qwen2.5-coder-0.5b-instruct"


def _record(item_id: str, p: float, correct: bool, kind: str, options: int) -> dict[str, object]:
    text = "B" if kind == "letter" else "yes"
    generation = Generation(
        text=text,
        token_ids=(1,),
        tokens=(text,),
        logprobs=(math.log(p),),
        top_logprobs=((),),
        entropies=(0.5,),
        finish_reason="stop",
        prompt_tokens=10,
    )
    return {
        "item_id": item_id,
        **generation_to_record(generation),
        "confidences": {"perplexity": p, "avg_token_prob": p},
        "answer": text,
        "correct": correct,
        "answer_format": kind,
        "num_options": options,
    }


def write_run(root: Path, spec: dict[str, tuple[list[float], str, int]]) -> None:
    """One SLM group per dataset: confidences, format and options; right when p > median."""
    for dataset, (probs, kind, options) in spec.items():
        median = float(np.median(probs))
        records = [
            _record(f"{dataset}-{i}", float(p), bool(p > median), kind, options)
            for i, p in enumerate(probs)
        ]
        folder = root / "slm" / SLM / dataset
        folder.mkdir(parents=True)
        (folder.parent / "model.json").write_text(json.dumps({"model": SLM, "role": "slm"}))
        RecordFile(folder / "answer_only.jsonl").append(records)
        strong = root / "strong" / "scripted__strong" / dataset
        strong.mkdir(parents=True)
        (strong.parent / "model.json").write_text(json.dumps({"model": "scripted/strong"}))
        RecordFile(strong / "answer_only.jsonl").append(
            [{"item_id": r["item_id"], "correct": True} for r in records]
        )


def test_same_distribution_everywhere_transfers_almost_exactly(tmp_path: Path) -> None:
    probs = list(np.linspace(0.3, 0.9, 40))
    write_run(tmp_path, {d: (probs, "letter", 4) for d in ("a", "b", "c")})
    rows = leave_one_dataset_out(tmp_path, methods=["perplexity"])
    raw = next(r for r in rows if (r.variant, r.pooling, r.policy) == ("raw", "pooled", "fixed"))
    assert raw.mae < 0.02
    assert raw.curve_kind == "system accuracy"
    assert set(raw.per_dataset) == {"a", "b", "c"}
    assert raw.per_dataset["a"] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5], abs=0.03)
    assert raw.curve_rms < 0.05
    assert {r.variant for r in rows} == {"raw", "answer_span", "chance", "lift"}
    assert "| perplexity | raw | pooled | fixed |" in markdown(rows)
    table = pivot_markdown(rows, "fixed")
    assert "| method | raw / pooled | raw / per_format | answer_span / pooled |" in table
    line = next(x for x in table.splitlines() if x.startswith("| perplexity |"))
    assert line.split(" | ")[1] == f"{raw.mae:.3f}"


def test_lift_lines_up_formats_that_raw_confidence_does_not(tmp_path: Path) -> None:
    # the same "twice as likely as a guess" spread for 2-, 4- and 5-option questions
    lifts = np.linspace(1.1, 1.9, 40)
    write_run(
        tmp_path,
        {
            "yn": (list(lifts / 2), "yes_no", 2),
            "four": (list(lifts / 4), "letter", 4),
            "five": (list(lifts / 5), "letter", 5),
        },
    )
    rows = {
        (r.variant, r.pooling, r.policy): r
        for r in leave_one_dataset_out(tmp_path, methods=["perplexity"])
    }
    assert rows[("lift", "pooled", "fixed")].mae < 0.03
    # scales differ: fixed thresholds do not transfer
    assert rows[("raw", "pooled", "fixed")].mae > 0.25
    # per-format pooling uses the other letter dataset for a letter dataset
    assert rows[("raw", "per_format", "fixed")].mae < rows[("raw", "pooled", "fixed")].mae
    # the streaming quantile follows the held-out scale without labels
    assert rows[("raw", "pooled", "streaming")].mae < rows[("raw", "pooled", "fixed")].mae / 2


def test_variants_that_do_not_apply_are_none(tmp_path: Path) -> None:
    write_run(tmp_path, {"a": ([0.5, 0.6], "letter", 4), "b": ([0.4, 0.7], "yes_no", 2)})
    data = load_run(tmp_path, baseline=False, probes=False)
    group = data.groups[0]
    assert variant_confidences(tmp_path, group, "p_true", "raw") is None
    assert variant_confidences(tmp_path, group, "mean_token_entropy", "chance") is None
    chance = variant_confidences(tmp_path, group, "perplexity", "chance")
    assert chance is not None and chance.tolist() == pytest.approx([1 / 3, 0.35 / 0.75])
    with pytest.raises(ValueError, match="unknown variant"):
        variant_confidences(tmp_path, group, "perplexity", "nope")
    assert format_of({"answer_format": "letter", "num_options": 5}).options == 5
    assert format_of({}).key == "any"


def test_profile_from_run_records_formats_and_labels(tmp_path: Path) -> None:
    write_run(
        tmp_path,
        {
            "yn": (list(np.linspace(0.5, 0.9, 40)), "yes_no", 2),
            "four": (list(np.linspace(0.25, 0.6, 40)), "letter", 4),
        },
    )
    profile = profile_from_run(tmp_path, SLM, "perplexity", strong="scripted/strong")
    assert profile.size == 80
    assert profile.fingerprint.model_fingerprint == BUNDLED_MODELS[SLM].sha256
    assert profile.formats() == {"yes_no": 40, "letter": 40}
    assert profile.strong_correct is not None and all(profile.strong_correct)
    pooled = profile.threshold_for(0.25)
    letter = profile.threshold_for(0.25, "letter")
    yes_no = profile.threshold_for(0.25, "yes_no")
    assert letter < pooled < yes_no
    policy = TargetEscalationRate(profile, 0.25, per_format=True)
    assert policy.decide(0.4, answer_format="letter").escalate is False
    assert policy.decide(0.4, answer_format="yes_no").escalate is True
    assert policy.decide(0.4, answer_format="any").threshold == pytest.approx(pooled)
    only = profile_from_run(tmp_path, SLM, "perplexity", item_ids={"yn": {"yn-0", "yn-1"}})
    assert only.size == 2


def test_profile_from_run_errors(tmp_path: Path) -> None:
    write_run(tmp_path, {"a": ([0.5, 0.6], "letter", 4)})
    with pytest.raises(CalibrationError, match="p_true"):
        profile_from_run(tmp_path, SLM, "p_true")
    with pytest.raises(ConfigurationError, match="fingerprint"):
        profile_from_run(tmp_path, "my-own-model", "perplexity")


def test_cli_calibrate_from_a_run_dir_and_its_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from confroute import cli

    monkeypatch.delenv("CONFROUTE_DATA_DIR", raising=False)
    run = tmp_path / "run"
    write_run(run, {"boolq": (list(np.linspace(0.5, 0.9, 40)), "yes_no", 2)})
    out = tmp_path / "profile.json"
    argv = ["calibrate", "--run-dir", str(run), "--datasets", "boolq", "--slm", SLM, "-o", str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "40 items" in printed and "yes_no" in printed
    assert CalibrationProfile.load(out).formats() == {"yes_no": 40}
    assert cli.main(["calibrate", "-o", str(out)]) == 2
    assert "--data-dir" in capsys.readouterr().err
