"""A tiny real benchmark run: bundled 0.5B as SLM, in-process 1.5B as strong model, 5 items.

Needs the benchmark data: ``CONFROUTE_DATA_DIR`` or the team kit at ``../shared/data/benchmarks``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from confroute.bench.cli import main
from confroute.bench.evaluate import load_run, metric_rows

KIT = Path(__file__).resolve().parents[3] / "shared" / "data" / "benchmarks"
DATA_DIR = Path(os.environ.get("CONFROUTE_DATA_DIR", KIT))

pytestmark = pytest.mark.skipif(
    not (DATA_DIR / "CommonsenseQA").is_dir(),
    reason=f"benchmark data not found at {DATA_DIR}; set CONFROUTE_DATA_DIR",
)

METHODS = "avg_token_prob,perplexity,mean_token_entropy,min_token_prob,p_true"


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench") / "run"


def _run(run_dir: Path) -> float:
    started = time.perf_counter()
    status = main(
        [
            "run",
            "--datasets",
            "commonsenseqa",
            "--limit",
            "5",
            "--methods",
            METHODS,
            "--data-dir",
            str(DATA_DIR),
            "--run-dir",
            str(run_dir),
            "--strong-max-new-tokens",
            "8",
            "--no-baseline",
            "--no-progress",
        ]
    )
    assert status == 0
    return time.perf_counter() - started


def test_tiny_real_run_then_a_rerun_from_the_cache(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = _run(run_dir)
    out = capsys.readouterr().out
    assert "slm_generated=5" in out and "strong=5" in out
    second = _run(run_dir)
    out = capsys.readouterr().out
    assert "slm_generated=0" in out and "strong=0" in out and "methods_computed=0" in out
    assert second < first / 3

    data = load_run(run_dir)
    [group] = data.groups
    assert group.slm == "qwen2.5-coder-0.5b-instruct" and len(group.item_ids) == 5
    assert set(group.confidences) == {*METHODS.split(","), "option_prob_renorm"}
    for values in group.confidences.values():
        finite = values[~np.isnan(values)]
        assert np.all((finite >= 0) & (finite <= 1))
    [strong] = data.strong
    assert strong == ("confroute/qwen2.5-coder-1.5b-instruct", "commonsenseqa", "answer_only")
    rows = metric_rows(data, n_boot=50)
    assert {r["strong"] for r in rows} == {None, "confroute/qwen2.5-coder-1.5b-instruct"}
    record = json.loads(
        next((run_dir / "slm").glob("*/commonsenseqa/answer_only.jsonl")).read_text().split("\n")[0]
    )
    assert record["finish_reason"] in ("stop", "length") and record["gold"] in "ABCDE"
    assert "question" not in record  # no dataset text in the cache


def test_report_of_the_real_run(run_dir: Path) -> None:
    assert main(["report", str(run_dir), "--bootstrap", "50"]) == 0
    report = run_dir / "report"
    assert (report / "report.html").stat().st_size > 10_000
    assert "commonsenseqa" in (report / "report.md").read_text()


def test_query_embedder_separates_topics() -> None:
    from confroute.bench.baseline import QueryEmbedder

    vectors = QueryEmbedder().embed(
        ["What is 17 times 23?", "Compute 45 plus 12.", "Who painted the Mona Lisa?"]
    )
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
