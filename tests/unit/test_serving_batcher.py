"""MicroBatcher: concurrent calls become one batched call and each caller gets its own answers."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from confroute.backend import LocalBackend
from confroute.errors import ConfigurationError, ContextOverflowError
from confroute.generation import Generation
from confroute.local import GenerationConfig, LocalModel
from confroute.router import ConfRouter
from confroute.serving.batcher import MicroBatcher
from tests.fakes import SCRIPTED_CAPABILITIES, ScriptedLocalModel

SCRIPT = {
    "sure?": ("391", (0.99, 0.98, 0.97)),
    "unsure?": ("maybe 12", (0.2, 0.3, 0.4)),
    "boom": ("", (0.5,)),
}
CONFIG = GenerationConfig(max_new_tokens=4)


def _ask(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


@dataclass
class ExplodingModel(ScriptedLocalModel):
    """Raises for any batch that holds the prompt of ``boom``."""

    def generate_from_ids(
        self, prompts: Sequence[Sequence[int]], config: GenerationConfig
    ) -> list[Generation]:
        if any(self._by_prompt[tuple(p)][0] == "" for p in prompts):
            self.calls.append(-len(prompts))
            raise RuntimeError("boom")
        return super().generate_from_ids(prompts, config)


def _concurrently(batcher: MicroBatcher, questions: list[str], config: GenerationConfig = CONFIG):
    """Run ``batcher.generate`` for each question on its own thread, all released together."""
    results: dict[int, object] = {}
    barrier = threading.Barrier(len(questions))

    def call(index: int, question: str) -> None:
        barrier.wait()
        try:
            results[index] = batcher.generate([_ask(question)], config)[0]
        except Exception as error:
            results[index] = error

    threads = [threading.Thread(target=call, args=(i, q)) for i, q in enumerate(questions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return [results[i] for i in range(len(questions))]


def test_concurrent_threads_share_one_batched_call() -> None:
    slm = ScriptedLocalModel(script=SCRIPT)
    with MicroBatcher(slm, window_ms=300, max_batch=8) as batcher:
        questions = ["sure?", "unsure?", "other", "sure?", "unsure?"]
        answers = _concurrently(batcher, questions)
        assert slm.calls == [5]
        assert [a.text for a in answers] == ["391", "maybe 12", "I am not sure.", "391", "maybe 12"]
        assert batcher.stats.requests == 5
        assert batcher.stats.batches == 1
        assert list(batcher.stats.recent) == [5]
        assert batcher.stats.mean_batch == 5.0


async def test_concurrent_async_calls_share_one_batched_call() -> None:
    slm = ScriptedLocalModel(script=SCRIPT)
    with MicroBatcher(slm, window_ms=300) as batcher:
        answers = await asyncio.gather(
            batcher.agenerate([_ask("sure?")], CONFIG),
            batcher.agenerate([_ask("unsure?"), _ask("sure?")], CONFIG),
            batcher.agenerate([_ask("x")], CONFIG),
        )
        assert slm.calls == [4]
        assert [[g.text for g in group] for group in answers] == [
            ["391"],
            ["maybe 12", "391"],
            ["I am not sure."],
        ]


def test_max_batch_splits_without_exceeding_it() -> None:
    slm = ScriptedLocalModel(script=SCRIPT)
    with MicroBatcher(slm, window_ms=300, max_batch=4) as batcher:
        answers = _concurrently(batcher, ["sure?"] * 6)
        assert sorted(slm.calls) == [2, 4]
        assert [a.text for a in answers] == ["391"] * 6


def test_different_configs_are_not_merged() -> None:
    slm = ScriptedLocalModel(script=SCRIPT)
    with MicroBatcher(slm, window_ms=300) as batcher:
        results: list[list[Generation]] = []

        async def both() -> None:
            results.extend(
                await asyncio.gather(
                    batcher.agenerate([_ask("sure?")], GenerationConfig(max_new_tokens=4)),
                    batcher.agenerate([_ask("sure?")], GenerationConfig(max_new_tokens=8)),
                    batcher.agenerate([_ask("unsure?")], GenerationConfig(max_new_tokens=4)),
                )
            )

        asyncio.run(both())
        assert sorted(slm.calls) == [1, 2]
        assert [r[0].text for r in results] == ["391", "391", "maybe 12"]


def test_seeded_sampling_runs_alone() -> None:
    slm = ScriptedLocalModel(script=SCRIPT)
    seeded = GenerationConfig(max_new_tokens=4, temperature=0.7, seed=3)
    with MicroBatcher(slm, window_ms=300) as batcher:
        _concurrently(batcher, ["sure?", "unsure?"], seeded)
        assert slm.calls == [1, 1]


def test_a_failing_call_does_not_fail_its_batch_mates() -> None:
    slm = ExplodingModel(script=SCRIPT)
    with MicroBatcher(slm, window_ms=300) as batcher:
        answers = _concurrently(batcher, ["sure?", "boom", "unsure?"])
        assert [getattr(a, "text", None) for a in answers] == ["391", None, "maybe 12"]
        assert isinstance(answers[1], RuntimeError)
        assert str(answers[1]) == "boom"
        assert slm.calls[0] == -3  # the merged call failed, then each ran alone
        assert sorted(slm.calls[1:]) == [-1, 1, 1]


def test_context_overflow_is_raised_to_its_caller_only() -> None:
    slm = ScriptedLocalModel(script=SCRIPT)
    with MicroBatcher(slm) as batcher:
        with pytest.raises(ContextOverflowError, match="context window of 1024"):
            batcher.generate_from_ids([[1] * 1020], GenerationConfig(max_new_tokens=8))
        assert batcher.stats.requests == 0
        assert batcher.generate([_ask("sure?")], CONFIG)[0].text == "391"


def test_batched_greedy_answers_equal_one_at_a_time_answers(tiny_lm) -> None:  # type: ignore[no-untyped-def]
    questions = ["What is 17*23?", "The capital of France?", "Yes or no?", "1 2 3"]
    config = GenerationConfig(max_new_tokens=6)
    alone = [tiny_lm.generate([_ask(q)], config)[0] for q in questions]
    with MicroBatcher(tiny_lm, window_ms=300) as batcher:
        merged = _concurrently(batcher, questions, config)
        assert batcher.stats.batches == 1
    assert [g.token_ids for g in merged] == [g.token_ids for g in alone]
    assert [g.text for g in merged] == [g.text for g in alone]
    for one, other in zip(merged, alone, strict=True):
        assert one.logprobs == pytest.approx(other.logprobs, abs=1e-4)


def test_the_wrapper_looks_like_the_wrapped_model() -> None:
    slm = ScriptedLocalModel(script=SCRIPT)
    batcher = MicroBatcher(slm)
    assert (batcher.name, batcher.fingerprint, batcher.context_window) == (
        "scripted-slm",
        "scripted-sha",
        1024,
    )
    assert batcher.tokenizer is slm.tokenizer
    assert batcher.wrapped is slm
    assert batcher.max_batch == 8
    assert batcher.render(_ask("sure?")) == slm.render(_ask("sure?"))
    assert batcher.encode("391") == slm.encode("391")
    assert batcher.generate_from_ids([], CONFIG) == []
    assert "window_ms=5" in repr(batcher)
    batcher.close()
    batcher.close()
    with pytest.raises(ConfigurationError, match="closed"):
        batcher.generate([_ask("sure?")], CONFIG)


def test_bad_settings_are_rejected() -> None:
    slm = ScriptedLocalModel(script=SCRIPT)
    with pytest.raises(ConfigurationError, match="window_ms"):
        MicroBatcher(slm, window_ms=-1)
    with pytest.raises(ConfigurationError, match="max_batch"):
        MicroBatcher(slm, max_batch=0)
    with pytest.raises(ConfigurationError, match="not another MicroBatcher"):
        MicroBatcher(MicroBatcher(slm))
    with pytest.raises(ConfigurationError, match="LocalModel"):
        MicroBatcher("qwen")  # type: ignore[arg-type]


async def test_router_requests_meet_in_one_batch(provider) -> None:  # type: ignore[no-untyped-def]
    slm = ScriptedLocalModel(script=SCRIPT)
    with MicroBatcher(slm, window_ms=300) as batcher:
        router = ConfRouter(batcher, "scripted/strong", threshold=0.8)
        sure, unsure = await asyncio.gather(router.aroute("sure?"), router.aroute("unsure?"))
        assert slm.calls == [2]
        assert (sure.text, sure.decision.escalated, sure.decision.reason) == (
            "391",
            False,
            "confident",
        )
        assert (unsure.text, unsure.decision.escalated) == ("strong answer", True)
        assert sure.decision.local_model == "scripted-slm"
        assert len(provider.calls) == 1


async def test_sixteen_async_routes_meet_in_one_batch_not_one_per_worker_thread() -> None:
    """More async callers than the event loop has default worker threads share one batch."""
    slm = ScriptedLocalModel(script=SCRIPT, max_batch_size=16)
    with MicroBatcher(slm, window_ms=300) as batcher:
        router = ConfRouter(batcher, None)
        answers = await asyncio.gather(*(router.aroute("sure?") for _ in range(16)))
        assert slm.calls == [16]
        assert {a.text for a in answers} == {"391"}


def test_the_batcher_and_the_fakes_are_local_backends_by_composition() -> None:
    slm = ScriptedLocalModel(script=SCRIPT)
    with MicroBatcher(slm, window_ms=300) as batcher:
        for backend in (slm, ExplodingModel(script=SCRIPT), batcher):
            assert isinstance(backend, LocalBackend)
            assert not isinstance(backend, LocalModel)
        assert batcher.capabilities is slm.capabilities is SCRIPTED_CAPABILITIES
        assert batcher.capabilities.missing({"hidden_state", "follow_up"}) == ["hidden_state"]
        assert batcher.special_token_ids() == slm.base.special_token_ids()
        assert dict(batcher.vocabulary()) == dict(slm.base.vocabulary())
        answers = _concurrently(batcher, ["unsure?", "other", "sure?"])
        assert slm.calls == [3]
        assert [a.text for a in answers] == ["maybe 12", "I am not sure.", "391"]
        assert [a.logprobs for a in answers] == [
            tuple(math.log(p) for p in probs)
            for probs in ((0.2, 0.3, 0.4), (0.5, 0.5, 0.5), (0.99, 0.98, 0.97))
        ]


def test_a_step_monitor_stops_a_scripted_row_inside_a_batch() -> None:
    def stop_below_half(rows: int):  # type: ignore[no-untyped-def]
        return lambda step, ids, logprobs, entropies: [lp < math.log(0.5) for lp in logprobs]

    slm = ScriptedLocalModel(script=SCRIPT)
    config = GenerationConfig(max_new_tokens=4, step_monitor=stop_below_half)
    with MicroBatcher(slm, window_ms=300) as batcher:
        sure, unsure = _concurrently(batcher, ["sure?", "unsure?"], config)
    assert slm.calls == [2]
    assert (sure.text, sure.finish_reason, sure.extras) == ("391", "stop", {})
    assert (unsure.text, unsure.finish_reason) == ("maybe 12", "length")
    assert (len(unsure.logprobs), unsure.extras["stopped_early_at"]) == (1, 1)
