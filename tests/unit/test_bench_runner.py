"""The sweep runner with a scripted SLM and a scripted strong model: caching, resume, report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from confroute.bench.baseline import fit_logistic, train_on_other_datasets
from confroute.bench.cache import RecordFile
from confroute.bench.datasets import load_dataset, sample_items
from confroute.bench.evaluate import load_run, metric_rows
from confroute.bench.formats import messages_for
from confroute.bench.report import write_report
from confroute.bench.runner import SweepConfig, SweepRunner
from confroute.errors import ConfigurationError
from tests.fakes import ScriptedLocalModel, ScriptedProvider

METHODS = ("avg_token_prob", "perplexity", "min_token_prob", "mean_token_entropy")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "CommonsenseQA").mkdir(parents=True)
    rows = [
        {
            "id": f"q{i}",
            "answerKey": "C",
            "question": {
                "stem": f"Question number {i}?",
                "choices": [{"label": x, "text": f"option {x}{i}"} for x in "ABCDE"],
            },
        }
        for i in range(6)
    ]
    (root / "CommonsenseQA" / "dev_rand_split.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows)
    )
    return root


@pytest.fixture
def slm(data_dir: Path) -> ScriptedLocalModel:
    items = {i.item_id: i for i in load_dataset("commonsenseqa", data_dir)}
    answers = {
        "q0": ("C", (0.9,)),
        "q1": ("C", (0.8,)),
        "q2": ("C", (0.7,)),
        "q3": ("A", (0.3,)),
        "q4": ("A", (0.2,)),
        "q5": ("I am not sure", (0.99, 0.99, 0.99)),  # unparsed, yet "confident"
    }
    script = {messages_for(items[k], "answer_only")[0]["content"]: v for k, v in answers.items()}
    return ScriptedLocalModel(script=script)


def _config(data_dir: Path, **kwargs: object) -> SweepConfig:
    base: dict[str, object] = {
        "datasets": ("commonsenseqa",),
        "slms": ("scripted-slm",),
        "strong_models": ("scripted/strong",),
        "methods": METHODS,
        "limit": 6,
        "data_dir": str(data_dir),
        "batch_size": 4,
        "baseline": False,
        "concurrency": 1,
    }
    base.update(kwargs)
    return SweepConfig.from_dict(base)


def _scripted_run(
    data_dir: Path, tmp_path: Path, slm: ScriptedLocalModel, provider: ScriptedProvider
) -> tuple[Path, Path]:
    """Run the scripted sweep; return the run directory and the SLM's cache file."""
    provider.default = "C"
    run_dir = tmp_path / "run"
    SweepRunner(_config(data_dir), run_dir, load_local=lambda name: slm, progress=False).run()
    return run_dir, run_dir / "slm" / "scripted-slm" / "commonsenseqa" / "answer_only.jsonl"


def test_second_run_reuses_the_cache_and_computes_nothing(
    data_dir: Path, tmp_path: Path, slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    provider.default = "C"
    run_dir = tmp_path / "run"
    first = SweepRunner(_config(data_dir), run_dir, load_local=lambda name: slm, progress=False)
    assert first.run() == {"slm_generated": 6, "methods_computed": 24, "strong": 6}
    assert slm.calls == [4, 2] and len(provider.calls) == 6
    loaded: list[str] = []

    def load(name: str) -> ScriptedLocalModel:
        loaded.append(name)
        return slm

    again = SweepRunner(_config(data_dir), run_dir, load_local=load, progress=False)
    assert again.run() == {"slm_generated": 0, "methods_computed": 0, "strong": 0}
    assert slm.calls == [4, 2] and len(provider.calls) == 6
    assert loaded == []  # nothing to do: the model is not even loaded

    # a new method is computed from the cached statistics, without generating again
    more = _config(data_dir, methods=(*METHODS, "p_true"))
    stats = SweepRunner(more, run_dir, load_local=lambda name: slm, progress=False).run()
    assert stats == {"slm_generated": 0, "methods_computed": 6, "strong": 0}
    assert slm.calls == [4, 2]


def test_interrupted_run_resumes_and_skips_a_damaged_line(
    data_dir: Path, tmp_path: Path, slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    run_dir, path = _scripted_run(data_dir, tmp_path, slm, provider)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:4]) + lines[4][:30])  # a crash in the middle of a line
    stats = SweepRunner(_config(data_dir), run_dir, load_local=lambda n: slm, progress=False).run()
    assert stats["slm_generated"] == 2 and stats["strong"] == 0
    assert sorted(RecordFile(path).load()) == [f"q{i}" for i in range(6)]


def test_records_and_metrics_of_the_scripted_run(
    data_dir: Path, tmp_path: Path, slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    provider.default = "C"
    run_dir = tmp_path / "run"
    SweepRunner(_config(data_dir), run_dir, load_local=lambda name: slm, progress=False).run()
    data = load_run(run_dir)
    [group] = data.groups
    assert group.item_ids == [f"q{i}" for i in range(6)]
    assert group.correct.tolist() == [True, True, True, False, False, False]
    assert group.parsed.tolist() == [True] * 5 + [False]
    assert group.effective("avg_token_prob").tolist() == [0.9, 0.8, 0.7, 0.3, 0.2, -1.0]
    rows = metric_rows(data, n_boot=20)
    local = {r["method"]: r for r in rows if r["strong"] is None}
    assert local["avg_token_prob"]["auroc"] == 1.0
    assert local["avg_token_prob"]["unparsed"] == 1
    routed = {r["method"]: r for r in rows if r["strong"] == "scripted/strong"}
    assert routed["avg_token_prob"]["llm_accuracy"] == 1.0
    assert routed["avg_token_prob"]["cpt50"] == pytest.approx(2 / 6, abs=1e-3)
    assert routed["avg_token_prob"]["cpt80"] == pytest.approx(3 / 6, abs=1e-3)


def test_report_writes_tables_plots_and_a_self_contained_page(
    data_dir: Path, tmp_path: Path, slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    provider.default = "C"
    run_dir = tmp_path / "run"
    SweepRunner(_config(data_dir), run_dir, load_local=lambda name: slm, progress=False).run()
    out = write_report(run_dir, n_boot=20)
    markdown = (out / "report.md").read_text()
    assert "| avg_token_prob | 1.000" in markdown
    assert "Routing to `scripted/strong`" in markdown
    mean_line = next(
        x for x in markdown.splitlines() if x.startswith("| avg_token_prob | 1.000 | 1 |")
    )
    assert "mean APGR (scripted/strong)" in markdown and mean_line.count("|") == 8
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == [
        "auroc_heatmap_scripted-slm_answer_only.png",
        "confidence_hist_scripted-slm_answer_only.png",
        "relative_accuracy_scripted-slm_answer_only_scripted_strong.png",
        "routing_scripted-slm_answer_only_commonsenseqa.png",
    ]
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4
    assert "<table>" in page


def test_sweep_config_rejects_unknown_names() -> None:
    with pytest.raises(ConfigurationError, match="Unknown methods"):
        SweepConfig(datasets=("mmlu",), methods=("astrology",))
    with pytest.raises(ConfigurationError, match="Unknown formats"):
        SweepConfig(datasets=("mmlu",), formats=("haiku",))
    with pytest.raises(ConfigurationError, match="Unknown sweep keys"):
        SweepConfig.from_dict({"datasets": ["mmlu"], "limt": 5})


def test_query_router_learns_from_other_datasets() -> None:
    rng = np.random.default_rng(0)

    def dataset(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(size=(n, 4))
        return x, x[:, 0] > 0  # correctness readable from the first feature

    data = {name: dataset(80) for name in ("a", "b", "c")}
    w, _ = fit_logistic(*data["a"])
    assert w[0] > np.abs(w[1:]).max()
    predicted = train_on_other_datasets(
        {k: v[0] for k, v in data.items()}, {k: v[1] for k, v in data.items()}
    )
    from confroute.bench.metrics import auroc

    assert auroc(predicted["c"], data["c"][1]) > 0.9


def test_judge_grades_free_text_answers(tmp_path: Path, provider: ScriptedProvider) -> None:
    root = tmp_path / "data"
    (root / "last_letters").mkdir(parents=True)
    examples = [{"question": "Take the last letters of 'Ab Cd'", "answer": "bd"}]
    (root / "last_letters" / "last_letters.json").write_text(json.dumps({"examples": examples}))
    slm = ScriptedLocalModel(default=("The letters are b and d", (0.5,) * 3))
    provider.default = "Yes"
    config = SweepConfig(
        datasets=("last_letters",),
        slms=("scripted-slm",),
        strong_models=(),
        methods=("perplexity",),
        data_dir=str(root),
        baseline=False,
        judge="scripted/judge",
    )
    SweepRunner(config, tmp_path / "run", load_local=lambda n: slm, progress=False).run()
    path = tmp_path / "run" / "slm" / "scripted-slm" / "last_letters" / "answer_only.jsonl"
    [record] = RecordFile(path).load().values()
    assert record["judge"] is True and record["correct_exact"] is False
    assert record["correct"] is True
    assert "Reference answer: bd" in provider.calls[0]["messages"][0]["content"]


def test_probes_score_out_of_fold_and_across_datasets() -> None:
    from confroute.bench.metrics import auroc
    from confroute.bench.probing import cross_validated, trained_on_others

    rng = np.random.default_rng(0)

    def dataset(n: int) -> tuple[np.ndarray, np.ndarray]:
        correct = rng.random(n) < 0.5
        hidden = rng.normal(size=(n, 16)).astype(np.float32)
        hidden[:, 0] += np.where(correct, 2.0, -2.0)
        return hidden, correct

    hidden, correct = dataset(60)
    values = cross_validated(hidden, correct)
    assert values is not None and not np.isnan(values).any()
    assert auroc(values, correct) > 0.85
    others = trained_on_others({"a": dataset(60), "b": dataset(60), "c": (hidden, correct)})
    assert auroc(others["c"], correct) > 0.85
    assert cross_validated(hidden[:6], correct[:6]) is None  # too few items for 5 folds


def test_option_prob_renormalises_over_option_token_variants() -> None:
    import math

    from confroute.bench.evaluate import option_prob

    def top(*pairs: tuple[str, float]) -> list[list[object]]:
        return [[t, i, math.log(p)] for i, (t, p) in enumerate(pairs)]

    letter = {
        "answer": "B",
        "answer_format": "letter",
        "num_options": 4,
        "tokens": ["(", "B", ")"],
        "top": [
            top(("(", 0.9)),
            top(("B", 0.3), (" B", 0.1), ("A", 0.2), ("b", 0.1), ("x", 0.3)),
            top((")", 0.9)),
        ],
    }
    assert option_prob(letter) == pytest.approx(0.5 / 0.7)
    yes_no = {
        "answer": "no",
        "answer_format": "yes_no",
        "tokens": ["No"],
        "top": [top(("No", 0.4), ("no", 0.2), ("Yes", 0.3))],
    }
    assert option_prob(yes_no) == pytest.approx(0.6 / 0.9)
    assert option_prob({**letter, "answer": None}) is None
    assert option_prob({**letter, "answer_format": "number"}) is None


def test_verbalized_one_step_answers_on_its_own_prompt_in_one_batch(
    data_dir: Path, tmp_path: Path, slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    from confroute import estimators

    provider.default = "C"
    verbalized = estimators.get("verbalized_1s")
    for item in load_dataset("commonsenseqa", data_dir):
        [message] = verbalized.transform_messages(messages_for(item, "answer_only", firm=False))
        # q5 states a confidence but no answer: unparsed, so the lowest confidence
        text = "Confidence: 90" if item.item_id == "q5" else "C\nConfidence: 80"
        slm.script[message["content"]] = (text, (0.5,) * 4)
    config = _config(data_dir, methods=("perplexity", "verbalized_1s"))
    stats = SweepRunner(config, tmp_path / "run", load_local=lambda n: slm, progress=False).run()
    assert stats["methods_computed"] == 12
    assert slm.calls == [4, 4, 2, 2]  # answers and verbalized answers, batched alike
    [group] = load_run(tmp_path / "run").groups
    assert group.confidences["verbalized_1s"].tolist() == [0.8] * 5 + [0.9]
    assert group.correct_for("verbalized_1s").tolist() == [True] * 5 + [False]  # own answers
    assert group.effective("verbalized_1s").tolist() == [0.8] * 5 + [-1.0]
    assert group.correct_for("perplexity").tolist() == [True] * 3 + [False] * 3


def test_cli_reports_a_run_and_explains_a_missing_dataset_list(
    data_dir: Path,
    tmp_path: Path,
    slm: ScriptedLocalModel,
    provider: ScriptedProvider,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from confroute.bench.cli import main

    provider.default = "C"
    SweepRunner(_config(data_dir), tmp_path / "run", load_local=lambda n: slm, progress=False).run()
    assert main(["report", str(tmp_path / "run"), "--bootstrap", "10", "--no-plots"]) == 0
    assert "report.md" in capsys.readouterr().out
    out = tmp_path / "first3"
    args = ["report", str(tmp_path / "run"), "--bootstrap", "10", "--no-plots", "--limit", "3"]
    assert main([*args, "--out", str(out)]) == 0
    assert "| commonsenseqa | 3 |" in (out / "report.md").read_text()
    assert main(["run", "--run-dir", str(tmp_path / "other")]) == 2
    assert "--datasets" in capsys.readouterr().err


def test_in_process_strong_model_reuses_the_same_models_slm_answers(
    data_dir: Path, tmp_path: Path, slm: ScriptedLocalModel
) -> None:
    run_dir = tmp_path / "run"
    config = _config(data_dir, strong_models=("confroute/scripted-slm",))
    stats = SweepRunner(config, run_dir, load_local=lambda name: slm, progress=False).run()
    # the strong answers are the SLM's greedy answers: copied, not generated again
    assert stats["strong_reused"] == 6 and stats["strong"] == 0
    assert slm.calls == [4, 2]
    data = load_run(run_dir)
    assert data.strong[("confroute/scripted-slm", "commonsenseqa", "answer_only")] == {
        f"q{i}": i < 3 for i in range(6)
    }
    # a different token cap would give other answers: nothing is copied then
    capped = _config(data_dir, strong_models=("confroute/scripted-slm",), strong_max_new_tokens=3)
    other = SweepRunner(capped, run_dir, load_local=lambda name: slm, progress=False)
    items = load_dataset("commonsenseqa", data_dir)
    group = other._group("strong", "confroute/scripted-slm", "commonsenseqa", "answer_only", items)
    assert other._reuse_slm_answers(group, items) == items


def test_routing_metrics_use_the_items_the_strong_model_answered(
    data_dir: Path,
    tmp_path: Path,
    slm: ScriptedLocalModel,
    provider: ScriptedProvider,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from confroute.bench import evaluate

    provider.default = "C"
    run_dir = tmp_path / "run"
    SweepRunner(_config(data_dir), run_dir, load_local=lambda name: slm, progress=False).run()
    data = load_run(run_dir)
    answers = data.strong[("scripted/strong", "commonsenseqa", "answer_only")]
    del answers["q0"], answers["q3"]  # a strong run with a smaller --limit
    monkeypatch.setattr(evaluate, "MIN_ROUTED_ITEMS", 4)
    rows = metric_rows(data, n_boot=20)
    routed = next(r for r in rows if r["strong"] and r["method"] == "avg_token_prob")
    assert routed["n"] == 4 and routed["slm_accuracy"] == 0.5  # q1, q2 right; q4, q5 wrong
    local = next(r for r in rows if r["strong"] is None and r["method"] == "avg_token_prob")
    assert local["n"] == 6
    monkeypatch.setattr(evaluate, "MIN_ROUTED_ITEMS", 5)
    assert not [r for r in metric_rows(data, n_boot=20) if r["strong"]]


def test_a_method_scored_on_part_of_a_group_is_left_out(
    data_dir: Path, tmp_path: Path, slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    run_dir, path = _scripted_run(data_dir, tmp_path, slm, provider)
    records = RecordFile(path).load()
    records["q2"]["confidences"]["p_true"] = 0.9  # as if p_true ran on one item only
    RecordFile(path).append([records["q2"]])
    [group] = load_run(run_dir).groups
    assert "p_true" not in group.confidences
    assert set(METHODS) <= set(group.confidences)


def test_report_limit_compares_methods_on_the_first_items_of_the_sample(
    data_dir: Path, tmp_path: Path, slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    """A method added with a smaller --limit is left out of the whole group, and included
    when the report is restricted to the items that limit asked."""
    provider.default = "C"
    run_dir = tmp_path / "run"
    few = _config(data_dir, methods=("avg_token_prob", "perplexity"))
    SweepRunner(few, run_dir, load_local=lambda n: slm, progress=False).run()
    more = _config(data_dir, methods=METHODS, limit=3)
    SweepRunner(more, run_dir, load_local=lambda n: slm, progress=False).run()
    [whole] = load_run(run_dir).groups
    assert len(whole.item_ids) == 6
    assert "min_token_prob" not in whole.confidences
    [first] = load_run(run_dir, limit=3).groups
    expected = sample_items(load_dataset("commonsenseqa", data_dir), 3)
    assert first.item_ids == sorted(i.item_id for i in expected)
    assert "min_token_prob" in first.confidences
    assert first.correct.tolist() == [
        whole.correct[whole.item_ids.index(i)] for i in first.item_ids
    ]
    with pytest.raises(ConfigurationError, match="at least 1"):
        load_run(run_dir, limit=0)


class MessagesOnly:
    """The scripted SLM as a model behind an API (as ``ServerModel``): messages in, no tokenizer."""

    def __init__(self, model: ScriptedLocalModel) -> None:
        self._model = model
        self.capabilities = dataclasses.replace(model.capabilities, tokenizer=False)
        self.batches: list[int] = []

    def __getattr__(self, name: str) -> Any:
        if name in ("render", "encode", "generate_from_ids"):
            raise AssertionError(f"{name} called on a model without a tokenizer")
        return getattr(self._model, name)

    def generate(self, conversations: Any, config: Any = None, *, tools: Any = None) -> Any:
        self.batches.append(len(conversations))
        return self._model.generate(conversations, config, tools=tools)


def test_a_model_without_a_tokenizer_answers_from_messages(
    data_dir: Path, tmp_path: Path, slm: ScriptedLocalModel
) -> None:
    config = _config(data_dir, strong_models=(), methods=METHODS[:3])
    served = MessagesOnly(slm)
    by_ids, by_messages = tmp_path / "ids", tmp_path / "messages"
    SweepRunner(config, by_ids, load_local=lambda name: slm, progress=False).run()
    stats = SweepRunner(config, by_messages, load_local=lambda name: served, progress=False).run()
    assert stats == {"slm_generated": 6, "methods_computed": 18, "strong": 0}
    assert served.batches == [4, 2]
    cell = Path("slm", "scripted-slm", "commonsenseqa", "answer_only.jsonl")

    def answers(run_dir: Path) -> dict[str, Any]:
        return {
            i: (r["answer"], r["correct"], r["confidences"])
            for i, r in RecordFile(run_dir / cell).load().items()
        }

    assert answers(by_messages) == answers(by_ids)
    assert answers(by_messages)["q3"][:2] == ("A", False)
