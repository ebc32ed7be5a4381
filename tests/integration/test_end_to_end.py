"""End to end with the bundled models: the 0.5B answers, the 1.5B (in-process LiteLLM) escalates."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from confroute import ConfRouter, FixedThreshold, LocalModel, RoutingDecision
from confroute.backend_choice import choose_backend
from confroute.models import DEFAULT_LLM, DEFAULT_SLM

QUESTION = "What is 17*23?"
STRONG = f"confroute/{DEFAULT_LLM}"


@pytest.fixture(scope="session")
def slm() -> LocalModel:
    return LocalModel(DEFAULT_SLM)


@pytest.fixture
def decisions() -> list[RoutingDecision]:
    return []


@pytest.fixture
def router(slm: LocalModel, decisions: list[RoutingDecision]) -> Iterator[ConfRouter]:
    yield ConfRouter(slm, STRONG, max_new_tokens=48, hooks=[decisions.append])


def test_threshold_one_escalates_to_the_bundled_strong_model(
    router: ConfRouter, decisions: list[RoutingDecision]
) -> None:
    router.policy = FixedThreshold(1.0)
    response = router.route(QUESTION)
    assert response.decision.escalated
    assert response.decision.answered_by == STRONG
    assert response.decision.cost_usd == 0.0
    assert "391" in response.text
    assert decisions == [response.decision]


def test_threshold_zero_stays_local(router: ConfRouter) -> None:
    router.policy = FixedThreshold(0.0)
    response = router.route(QUESTION)
    assert not response.decision.escalated
    assert response.decision.answered_by == DEFAULT_SLM
    assert response.local is not None and response.text == response.local.text
    assert 0.0 < (response.decision.confidence or 0.0) <= 1.0
    assert response.decision.local_completion_tokens == response.local.completion_tokens


async def test_async_stream_and_batch_agree_with_sync(router: ConfRouter) -> None:
    router.policy = FixedThreshold(0.0)
    prompts = [QUESTION, "Name the capital of France in one word."]
    sync = [router.route(p) for p in prompts]
    batch = router.route_batch(prompts)
    asynchronous = [await router.aroute(p) for p in prompts]
    for a, b, c in zip(sync, batch, asynchronous, strict=True):
        assert a.text == b.text == c.text
        assert a.decision.confidence == pytest.approx(b.decision.confidence, abs=0.02)
    chunks = [c async for c in router.astream(prompts[1])]
    assert "".join(c.text for c in chunks) == sync[1].text
    assert chunks[-1].response is not None


def test_cli_json_escalates_and_second_run_uses_the_cache() -> None:
    command = [
        sys.executable,
        "-m",
        "confroute",
        "ask",
        QUESTION,
        "--json",
        "--threshold",
        "1.0",
        "--max-new-tokens",
        "32",
    ]
    env = {**os.environ, "CONFROUTE_QUIET": "0"}
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=900, check=True
    )
    payload = json.loads(result.stdout)
    assert payload["escalated"] is True
    assert payload["model"] == STRONG
    assert payload["reason"] == "low_confidence"
    assert "391" in payload["answer"]
    # the models are cached by now: nothing is assembled or converted again
    assert "converting" not in result.stderr and "assembling" not in result.stderr
    # the engine rule: llama.cpp runs the bundled GGUF when installed (no bf16 copy to load)
    engine = choose_backend("qwen2.5-coder-0.5b-instruct").backend
    assert payload["local_backend"] == engine
    if engine == "transformers":
        assert "loading qwen2.5-coder-0.5b-instruct" in result.stderr


def test_corrupted_converted_copy_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CONFROUTE_CACHE", str(tmp_path))
    first = LocalModel("smollm2-135m-instruct")
    [before] = first.generate([[{"role": "user", "content": "Say hi."}]])
    [weights] = list(tmp_path.glob("models/*/model.safetensors"))
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="confroute.models"):
        second = LocalModel("smollm2-135m-instruct")
    assert any("failed its sha256 check" in r.message for r in caplog.records)
    [after] = second.generate([[{"role": "user", "content": "Say hi."}]])
    assert after.token_ids == before.token_ids
