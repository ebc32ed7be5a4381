"""Sweep files: every validation error, the grid, and resuming (scripted SLM, scripted strong)."""

from __future__ import annotations

import gc
import json
import sys
import weakref
from pathlib import Path
from typing import Any

import pytest

from confroute.bench.cache import RecordFile
from confroute.bench.cli import main
from confroute.bench.datasets import load_dataset
from confroute.bench.evaluate import load_run
from confroute.bench.formats import messages_for
from confroute.bench.ray_executor import SHARDS, merge_shard, run_shard
from confroute.bench.report import write_report
from confroute.bench.runner import SweepRunner
from confroute.bench.sweep_file import (
    SlmSpec,
    SweepFile,
    load_sweep,
    parse_sweep,
    plan_shards,
    sample_items,
)
from confroute.bench.sweep_report import best_method_tables, slm_heatmap
from confroute.bench.sweep_run import default_loader, plan_jobs, record_path, run_sweep
from confroute.errors import ConfigurationError
from tests.fakes import ScriptedLocalModel, ScriptedProvider

METHODS = ["avg_token_prob", "perplexity", "min_token_prob"]


def _sweep(**extra: Any) -> SweepFile:
    data: dict[str, Any] = {"slms": ["a"], "datasets": ["commonsenseqa"], **extra}
    return parse_sweep(data)


def _mistakes(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigurationError) as caught:
        parse_sweep(data, "s.toml")
    return str(caught.value)


BASE: dict[str, Any] = {"slms": ["a"], "datasets": ["boolq"]}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"slm": ["a"]}, "(top level): unknown key(s) slm; allowed: slms, datasets, strong"),
        ({"slms": None}, "slms: Input should be a valid list"),
        ({"slms": []}, "slms: List should have at least 1 item"),
        ({"slms": [""]}, "slms[0].name: String should have at least 1 character"),
        ({"slms": [{"name": "a", "backnd": "x"}]}, "slms[0]: unknown key(s) backnd; allowed:"),
        (
            {"slms": [{"name": "a", "backend": "vllm"}]},
            "slms[0].backend: Input should be 'auto', 'transformers', 'llama.cpp' or 'server'",
        ),
        ({"slms": ["a", {"name": "a", "backend": "transformers"}]}, "SLM(s) listed twice: a"),
        ({"datasets": ["boolq", "nope"]}, "datasets[1].name: unknown dataset 'nope'; allowed:"),
        ({"datasets": [{"name": "boolq", "limit": 0}]}, "datasets[0].limit: Input should be"),
        ({"datasets": [{"name": "boolq", "limt": 5}]}, "datasets[0]: unknown key(s) limt"),
        ({"datasets": ["boolq", "boolq"]}, "dataset(s) listed twice: boolq"),
        ({"methods": ["p_true", "vibes"]}, "methods: unknown method(s) vibes; allowed:"),
        ({"methods": ["p_true", "p_true"]}, "methods: method(s) listed twice: p_true"),
        ({"methods": []}, "methods: List should have at least 1 item"),
        ({"formats": ["haiku"]}, "formats: unknown format(s) haiku; allowed: answer_only"),
        ({"formats": ["cot", "cot"]}, "formats: format(s) listed twice: cot"),
        ({"seeds": []}, "seeds: List should have at least 1 item"),
        ({"seeds": [1, 1]}, "seeds: seed(s) listed twice: 1"),
        ({"seeds": ["x"]}, "seeds[0]: Input should be a valid integer"),
        ({"limit": "many"}, "limit: Input should be a valid integer, unable to parse string"),
        ({"limit": 0}, "limit: Input should be greater than or equal to 1 (got 0)"),
        ({"strong": [""]}, "strong: a strong model is an empty string; write [] for no strong"),
        ({"strong": ["x/y", "x/y"]}, "strong: strong model(s) listed twice: x/y"),
        ({"device": "tpu"}, "device: unknown device 'tpu'; allowed: auto, cpu, cuda, cuda:N"),
        ({"batch_size": 0}, "batch_size: Input should be greater than or equal to 1"),
        ({"shard_size": 0}, "shard_size: Input should be greater than or equal to 1"),
        ({"concurrency": 0}, "concurrency: Input should be greater than or equal to 1"),
        ({"baseline": "perhaps"}, "baseline: Input should be a valid boolean"),
        (
            {"ray": {"cpus": 1}},
            "ray: unknown key(s) cpus; allowed: num_cpus, num_gpus, max_retries",
        ),
        ({"max_new_tokens": 0}, "max_new_tokens: Input should be greater than or equal to 1"),
        ({"strong_max_new_tokens": -2}, "strong_max_new_tokens: Input should be greater than"),
        ({"judge": 5}, "judge: Input should be a valid string (got 5)"),
        ({"run_dir": 3}, "run_dir: Input is not a valid path (got 3)"),
        ({"data_dir": ["a"]}, "data_dir: Input is not a valid path"),
        ({"strong": "openai/gpt-4o-mini"}, "strong: Input should be a valid list"),
        ({"ray": 2}, "ray: Input should be a table (got 2)"),
        ({"ray": {"num_cpus": 0}}, "ray.num_cpus: Input should be greater than 0"),
        ({"ray": {"num_gpus": -1}}, "ray.num_gpus: Input should be greater than or equal to 0"),
        ({"ray": {"max_retries": -1}}, "ray.max_retries: Input should be greater than or equal"),
    ],
)
def test_every_mistake_names_its_key_and_what_is_allowed(
    change: dict[str, Any], expected: str
) -> None:
    message = _mistakes({**BASE, **change})
    assert message.startswith("s.toml has 1 mistake(s):\n")
    assert expected in message


def test_missing_keys_and_several_mistakes_are_reported_together() -> None:
    message = _mistakes({"limit": 0, "formats": ["haiku"]})
    assert "has 4 mistake(s)" in message
    for line in ("slms: Field required", "datasets: Field required", "limit:", "formats:"):
        assert f"\n  {line}" in message


def test_a_valid_file_and_its_defaults(tmp_path: Path) -> None:
    (tmp_path / "my-slm.gguf").write_bytes(b"")
    path = tmp_path / "sweep.toml"
    path.write_text(
        'slms = ["qwen2.5-coder-0.5b-instruct", {name = "my-slm.gguf", backend = "llama.cpp"}]\n'
        'datasets = ["boolq", {name = "mmlu", limit = 7}]\n'
        "limit = 20\nseeds = [0, 3]\nrun_dir = 'out'\ndata_dir = '/abs/data'\n"
        "[ray]\nnum_gpus = 1\n"
    )
    sweep = load_sweep(path)
    assert [s.name for s in sweep.slms] == [
        "qwen2.5-coder-0.5b-instruct",
        str(tmp_path / "my-slm.gguf"),
    ]
    assert sweep.slms[1].backend == "llama.cpp"
    assert sweep.slms[1].key == f"llama.cpp:{tmp_path / 'my-slm.gguf'}"  # its own cache folder
    assert [sweep.limit_of(d) for d in sweep.datasets] == [20, 7]
    assert sweep.run_dir == tmp_path / "out" and sweep.data_dir == Path("/abs/data")
    assert sweep.strong == ("confroute/qwen2.5-coder-1.5b-instruct",)
    assert sweep.methods[0] == "avg_token_prob" and sweep.formats == ("answer_only",)
    assert (sweep.ray.num_cpus, sweep.ray.num_gpus, sweep.ray.max_retries) == (1.0, 1.0, 2)
    config = sweep.runner_config()
    assert config.datasets == ("boolq", "mmlu") and config.limit == 20 and config.seed == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("slms = [\n", "is not valid TOML"),
        ('slms = ["./missing.gguf"]\ndatasets = ["boolq"]\n', "slms[0].name: no model at"),
        ('slms = ["a"]\n', "datasets: Field required"),
    ],
)
def test_file_level_mistakes(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=r"sweep\.toml") as caught:
        load_sweep(path)
    assert expected in str(caught.value)
    with pytest.raises(ConfigurationError, match="Cannot read sweep file"):
        load_sweep(tmp_path / "absent.toml")


# -- the grid --------------------------------------------------------------------------------


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
        for i in range(8)
    ]
    (root / "CommonsenseQA" / "dev_rand_split.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows)
    )
    (root / "StrategyQA").mkdir()
    examples = [
        {"input": f"Is {i} even?", "target_scores": {"Yes": int(i % 2 == 0), "No": i % 2}}
        for i in range(5)
    ]
    (root / "StrategyQA" / "task.json").write_text(json.dumps({"examples": examples}))
    return root


def test_grid_expansion_shards_and_seeds(data_dir: Path) -> None:
    sweep = _sweep(
        slms=["a", {"name": "a", "backend": "llama.cpp"}],  # one model, two engines
        datasets=["commonsenseqa", {"name": "strategyqa", "limit": 2}],
        strong=["s/one", "s/two"],
        limit=5,
        seeds=[0, 1],
        shard_size=3,
        formats=["answer_only", "cot"],
        data_dir=str(data_dir),
    )
    data = sample_items(sweep)
    for name, limit, total in (("commonsenseqa", 5, 8), ("strategyqa", 2, 5)):
        one = [i.item_id for i in load_dataset(name, data_dir, limit=limit, seed=0)]
        other = [i.item_id for i in load_dataset(name, data_dir, limit=limit, seed=1)]
        assert [i.item_id for i in data[name]] == list(dict.fromkeys([*one, *other]))
        assert limit <= len(data[name]) <= min(total, 2 * limit)
    slm = plan_shards(sweep, data, "slm")
    sizes = {d: -(-len(items) // 3) for d, items in data.items()}
    assert len(slm) == 2 * sum(sizes.values())
    assert {(s.model, s.spec.backend) for s in slm if s.spec} == {
        ("a", None),
        ("llama.cpp:a", "llama.cpp"),
    }
    for model in ("a", "llama.cpp:a"):
        for dataset, items in data.items():
            mine = [s for s in slm if (s.model, s.dataset) == (model, dataset)]
            assert [s.index for s in mine] == list(range(sizes[dataset]))
            assert [i for s in mine for i in s.items] == items  # every item once, in order
            assert all(len(s.items) <= 3 and s.formats == ("answer_only", "cot") for s in mine)
    strong = plan_shards(sweep, data, "strong")
    assert {s.model for s in strong} == {"s/one", "s/two"} and all(s.spec is None for s in strong)
    assert len({s.key for s in slm + strong}) == len(slm) + len(strong)
    whole = plan_shards(sweep.model_copy(update={"shard_size": None}), data, "slm")
    assert len(whole) == 4 and all(len(s.items) == len(data[s.dataset]) for s in whole)


# -- running and resuming --------------------------------------------------------------------


@pytest.fixture
def slm(data_dir: Path) -> ScriptedLocalModel:
    script = {}
    for item in load_dataset("commonsenseqa", data_dir):
        answer = ("C", (0.9,)) if int(item.item_id[1:]) % 2 else ("A", (0.4,))
        script[messages_for(item, "answer_only")[0]["content"]] = answer
    return ScriptedLocalModel(script=script)


def _local(data_dir: Path, **extra: Any) -> SweepFile:
    base: dict[str, Any] = {
        "slms": ["scripted-slm"],
        "datasets": ["commonsenseqa"],
        "strong": ["scripted/strong"],
        "methods": METHODS,
        "limit": 8,
        "shard_size": 3,
        "batch_size": 2,
        "baseline": False,
        "concurrency": 1,
        "data_dir": str(data_dir),
    }
    return parse_sweep({**base, **extra})


def test_local_sweep_then_a_rerun_computes_nothing(
    data_dir: Path, tmp_path: Path, slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    provider.default = "C"
    loaded: list[SlmSpec] = []

    def load(spec: SlmSpec) -> ScriptedLocalModel:
        loaded.append(spec)
        return slm

    run_dir = tmp_path / "run"
    first = run_sweep(_local(data_dir), run_dir=run_dir, load_local=load, progress=False)
    assert first.failures == [] and (first.shards, first.run_shards) == (6, 6)
    assert first.stats == {"slm_generated": 8, "methods_computed": 24, "strong": 8}
    assert len(loaded) == 1  # the local executor loads each SLM once
    data = load_run(run_dir, probes=False, baseline=False)
    assert [len(g.item_ids) for g in data.groups] == [8]
    assert json.loads((run_dir / "sweep.json").read_text())["methods"] == METHODS

    again = run_sweep(_local(data_dir), run_dir=run_dir, load_local=load, progress=False)
    assert (again.run_shards, again.stats) == (0, {})
    assert len(loaded) == 1 and slm.calls == [2, 1] * 2 + [2]  # nothing generated again

    more = run_sweep(
        _local(data_dir, methods=[*METHODS, "mean_token_entropy"]),
        run_dir=run_dir,
        load_local=load,
        progress=False,
    )
    assert more.stats == {"slm_generated": 0, "methods_computed": 8, "strong": 0}


def test_a_killed_sweep_resumes_and_a_left_shard_folder_is_merged(
    data_dir: Path, tmp_path: Path, slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    provider.default = "C"
    run_dir = tmp_path / "run"
    sweep = _local(data_dir, strong=[])
    run_sweep(sweep, run_dir=run_dir, load_local=lambda spec: slm, progress=False)
    path = run_dir / "slm" / "scripted-slm" / "commonsenseqa" / "answer_only.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    # a killed Ray driver: two items only in a task folder, one line cut in the run's file
    folder = run_dir / SHARDS / "slm-scripted-slm-commonsenseqa-0001"
    (folder / path.relative_to(run_dir)).parent.mkdir(parents=True)
    (folder / path.relative_to(run_dir)).write_text("".join(lines[3:5]))
    path.write_text("".join(lines[:3]) + lines[5][:25])
    result = run_sweep(sweep, run_dir=run_dir, load_local=lambda spec: slm, progress=False)
    assert not folder.exists()
    assert result.stats["slm_generated"] == 3  # items 6-8; items 4-5 came from the folder
    assert len(RecordFile(path).load()) == 8


def test_merge_refuses_a_record_without_its_keys_or_from_another_shard(tmp_path: Path) -> None:
    folder = tmp_path / SHARDS / "k"
    cell = folder / "slm" / "m" / "d" / "answer_only.jsonl"
    good = {"item_id": "1", "text": "A", "correct": True, "confidences": {}}
    good |= {"token_ids": [1], "logprobs": [-0.1]}
    RecordFile(cell).append([good, {"item_id": "2", "text": "B"}, {**good, "item_id": "9"}])
    merged, problems = merge_shard(tmp_path, folder, {"1", "2"})
    assert merged == 1 and not folder.exists()
    assert problems == [
        "slm/m/d/answer_only.jsonl: item 2 lacks correct, confidences, token_ids, logprobs",
        "slm/m/d/answer_only.jsonl: item 9 is not one of the shard's",
    ]
    assert RecordFile(tmp_path / "slm" / "m" / "d" / "answer_only.jsonl").load() == {"1": good}


def test_a_failing_shard_is_reported_and_the_others_are_kept(
    data_dir: Path, tmp_path: Path, slm: ScriptedLocalModel
) -> None:
    def load(spec: SlmSpec) -> ScriptedLocalModel:
        if spec.name == "broken":
            raise RuntimeError("cannot load broken")
        return slm

    sweep = _local(data_dir, strong=[], slms=["broken", "scripted-slm"], shard_size=None)
    result = run_sweep(sweep, run_dir=tmp_path / "run", load_local=load, progress=False)
    assert [(f.shard, f.error) for f in result.failures] == [
        ("slm-broken-commonsenseqa-0000", "RuntimeError: cannot load broken")
    ]
    assert result.stats["slm_generated"] == 8


def test_unknown_executor_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="Unknown executor 'dask'"):
        run_sweep(_sweep(), run_dir=tmp_path / "run", executor="dask")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("backend", "probes", "engine"),
    [
        (None, False, "transformers"),  # as `confroute bench run`
        ("llama.cpp", False, "llama.cpp"),
        ("auto", True, "transformers"),  # confroute's rule: probes need hidden states
    ],
)
def test_the_default_loader_goes_through_the_backend_rule(
    monkeypatch: pytest.MonkeyPatch, backend: str | None, probes: bool, engine: str
) -> None:
    import confroute.backend_choice as backend_choice

    chosen: list[tuple[str, str, str]] = []
    monkeypatch.setattr(
        backend_choice,
        "load_backend",
        lambda choice, settings: chosen.append((choice.backend, choice.model, settings.device)),
    )
    spec = SlmSpec(name="qwen2.5-coder-0.5b-instruct", backend=backend)  # type: ignore[arg-type]
    default_loader(spec, device="cpu", probes=probes)
    assert chosen == [(engine, "qwen2.5-coder-0.5b-instruct", "cpu")]


def test_nothing_to_do_starts_no_ray_cluster(
    data_dir: Path, tmp_path: Path, slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    ray = pytest.importorskip("ray")
    provider.default = "C"
    run_dir = tmp_path / "run"
    run_sweep(_local(data_dir), run_dir=run_dir, load_local=lambda s: slm, progress=False)
    on_ray = run_sweep(_local(data_dir), run_dir=run_dir, executor="ray", progress=False)
    assert (on_ray.shards, on_ray.run_shards, on_ray.stats) == (6, 0, {})
    assert not ray.is_initialized()


def test_ray_executor_without_ray_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(ConfigurationError, match=r"pip install 'confroute\[ray\]'"):
        run_sweep(_sweep(), run_dir=tmp_path / "run", executor="ray")


def test_cli_reports_a_bad_sweep_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "sweep.toml"
    path.write_text('slms = ["a"]\ndatasets = ["boolq"]\nlimit = -1\n')
    assert main(["sweep", str(path)]) == 2
    assert "limit: Input should be greater than or equal to 1" in capsys.readouterr().err
    path.write_text('slms = ["a"]\ndatasets = ["boolq"]\n')
    assert main(["sweep", str(path), "--ray-address", "auto"]) == 2
    assert "--ray-address needs --executor ray" in capsys.readouterr().err


# -- the report across SLMs ------------------------------------------------------------------


def _row(slm: str, method: str, dataset: str, auroc: float, **extra: Any) -> dict[str, Any]:
    return {"slm": slm, "format": "answer_only", "method": method, "dataset": dataset,
            "strong": None, "auroc": auroc, **extra}  # fmt: skip


def test_which_method_is_best_for_which_slm(tmp_path: Path) -> None:
    rows = [
        _row("small", "p_true", "boolq", 0.8),
        _row("small", "p_true", "mmlu", 0.6),
        _row("small", "perplexity", "boolq", 0.65),
        _row("small", "perplexity", "mmlu", 0.55),
        _row("big", "p_true", "boolq", 0.6),
        _row("big", "perplexity", "boolq", 0.6),
        _row("big", "perplexity", "mmlu", None),  # type: ignore[arg-type]  # no AUROC: skipped
        _row("big", "p_true", "boolq", 0.0, strong="s/x", apgr=0.7),
        _row("big", "perplexity", "boolq", 0.0, strong="s/x", apgr=0.55),
    ]
    text = best_method_tables(rows)
    auroc, apgr = text.split("Mean APGR")
    assert auroc.strip().splitlines()[2:] == [
        "| method | `big` | `small` |",
        "|---|---|---|",
        "| p_true | 0.600 (1) | 0.700 (1) |",
        "| perplexity | 0.600 (1) | 0.600 (2) |",
        "| best | `p_true`, `perplexity` | `p_true` |",
    ]
    assert apgr.startswith(" routing to `s/x`") and apgr.strip().endswith("| best | `p_true` |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    [image] = slm_heatmap(plt, rows, tmp_path)
    assert image.name == "auroc_by_slm.png" and image.stat().st_size > 1000
    assert slm_heatmap(plt, [r for r in rows if r["slm"] == "big"], tmp_path) == []


def test_report_of_a_sweep_has_the_best_method_and_transfer_tables(
    data_dir: Path, tmp_path: Path, slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    for item in load_dataset("strategyqa", data_dir):
        prompt = messages_for(item, "answer_only")[0]["content"]
        slm.script[prompt] = ("Yes", (0.8,)) if int(item.item_id) % 2 else ("No", (0.6,))
    provider.default = "C"
    run_dir = tmp_path / "run"
    sweep = _local(data_dir, datasets=["commonsenseqa", "strategyqa"])
    assert (
        run_sweep(sweep, run_dir=run_dir, load_local=lambda s: slm, progress=False).failures == []
    )
    report = write_report(run_dir, n_boot=20, plots=False) / "report.md"
    text = report.read_text()
    assert "### Which method is best for which SLM" in text
    assert "| best | " in text and "Mean APGR routing to `scripted/strong`" in text
    assert "SLM `scripted-slm`, policy `fixed`, mae:" in text
    assert "| avg_token_prob | " in text.split("Calibration transfer per SLM")[1]


def test_a_task_runs_in_its_folder_and_a_bundled_strong_model_reuses_the_slm_answers(
    data_dir: Path, tmp_path: Path, slm: ScriptedLocalModel
) -> None:
    """The Ray task function, run in this process: folder, merge, reuse of the SLM answers."""
    sweep = _local(data_dir, strong=["confroute/scripted-slm"], shard_size=5)
    run_dir = tmp_path / "run"
    runner = SweepRunner(sweep.runner_config(), run_dir, load_local=lambda n: slm, progress=False)
    data = sample_items(sweep)
    first, second = plan_jobs(runner, plan_shards(sweep, data, "slm"), run_dir)
    assert (first.units, second.units, first.cached) == (5, 3, {})
    for job in (first, second):
        stats, attempt = run_shard(job, lambda spec: slm, str(run_dir))
        assert attempt == 1 and stats["slm_generated"] == len(job.shard.items)
        folder = run_dir / SHARDS / job.shard.key
        assert merge_shard(run_dir, folder, {i.item_id for i in job.shard.items}) == (
            len(job.shard.items),
            [],
        )
    assert not (run_dir / SHARDS).exists()
    assert plan_jobs(runner, plan_shards(sweep, data, "slm"), run_dir) == []

    def no_model(spec: SlmSpec) -> ScriptedLocalModel:
        raise AssertionError("the strong answers are the SLM's: nothing is loaded")

    strong_jobs = plan_jobs(runner, plan_shards(sweep, data, "strong"), run_dir)
    cell = record_path("slm", "scripted-slm", "commonsenseqa", "answer_only")
    assert [len(j.cached[cell]) for j in strong_jobs] == [5, 3]
    for job in strong_jobs:
        stats, _ = run_shard(job, no_model, str(run_dir))
        assert stats == {"slm_generated": 0, "methods_computed": 0, "strong": 0} | {
            "strong_reused": len(job.shard.items)
        }
        merge_shard(run_dir, run_dir / SHARDS / job.shard.key)
    strong = RecordFile(
        run_dir / record_path("strong", "confroute/scripted-slm", "commonsenseqa", "answer_only")
    ).load()
    assert len(strong) == 8 and all(r["from_slm"] for r in strong.values())
    assert (run_dir / "strong" / "confroute__scripted-slm" / "model.json").is_file()


def test_the_local_executor_holds_one_slm_at_a_time(
    data_dir: Path, tmp_path: Path, slm: ScriptedLocalModel
) -> None:
    refs: dict[str, weakref.ref[ScriptedLocalModel]] = {}
    alive_when_loading: list[tuple[str, list[str]]] = []

    def load(spec: SlmSpec) -> ScriptedLocalModel:
        gc.collect()
        alive_when_loading.append((spec.name, [n for n, r in refs.items() if r() is not None]))
        model = ScriptedLocalModel(script=slm.script, name=spec.name)
        model.base = slm.base  # share the tiny real model (only the scripted side differs)
        refs[spec.name] = weakref.ref(model)
        return model

    sweep = _local(data_dir, strong=[], slms=["first", "second"], shard_size=4)
    result = run_sweep(sweep, run_dir=tmp_path / "run", load_local=load, progress=False)
    assert result.failures == [] and result.stats["slm_generated"] == 16
    assert alive_when_loading == [("first", []), ("second", [])]  # once each, one at a time
