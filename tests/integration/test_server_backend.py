"""The SLM behind a real OpenAI-compatible server: ``python -m llama_cpp.server`` on 127.0.0.1.

The server runs the bundled 0.5B GGUF; confroute reaches it through LiteLLM as
``ServerModel("openai/<alias>", api_base=...)``, the local model of a ConfRouter with no strong
model. Every estimator the backend claims gives a confidence strictly inside (0, 1), through
each call path. Needs ``pip install 'llama-cpp-python[server]'``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] not installed")

from confroute import ConfRouter
from confroute.errors import LocalBackendError
from confroute.estimators import Estimator, JaccardDegree, Perplexity, PTrue, Verbalized2S
from confroute.models import DEFAULT_SLM
from confroute.server_backend import ServerModel
from tests.integration.llama_server import free_port, llama_server

ALIAS = "qwen2.5-coder-0.5b-gguf"
MODEL = f"openai/{ALIAS}"
QUESTION = "Name one color of the rainbow."
MAX_NEW_TOKENS = 12


@pytest.fixture(scope="module")
def slm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The llama.cpp server's OpenAI base URL; the process is stopped after the module."""
    with llama_server(DEFAULT_SLM, ALIAS, Path(tmp_path_factory.mktemp("llama-slm"))) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def slm(slm_server: str) -> ServerModel:
    return ServerModel(MODEL, api_base=slm_server, api_key="sk-unused", timeout=300)


def _router(slm: ServerModel, estimator: str | Estimator = "perplexity") -> ConfRouter:
    # threshold 0.5: some answers are kept, some would escalate (reported as local_only)
    return ConfRouter(
        local_model=slm,
        strong_model=None,
        estimator=estimator,
        threshold=0.5,
        max_new_tokens=MAX_NEW_TOKENS,
    )


@pytest.mark.parametrize(
    "estimator",
    [Perplexity(), PTrue(), Verbalized2S(), JaccardDegree(num_samples=3, seed=7)],
    ids=lambda e: e.name,
)
def test_each_estimator_the_server_backend_claims_gives_a_real_confidence(
    slm: ServerModel, estimator: Estimator
) -> None:
    response = _router(slm, estimator).route(QUESTION)
    decision = response.decision
    assert response.text.strip()
    assert decision.estimator == estimator.name
    assert decision.confidence is not None and 0.0 < decision.confidence < 1.0
    assert decision.reason in ("confident", "local_only")
    assert decision.answered_by == decision.local_model == MODEL
    assert 0 < decision.local_completion_tokens <= MAX_NEW_TOKENS
    assert decision.local_prompt_tokens > 0


def test_route_aroute_stream_and_astream_give_the_same_greedy_answer(slm: ServerModel) -> None:
    router = _router(slm)
    routed = router.route(QUESTION)
    awaited = asyncio.run(router.aroute(QUESTION))
    chunks = list(router.stream(QUESTION))

    async def collect() -> list[object]:
        return [chunk async for chunk in router.astream(QUESTION)]

    async_chunks = asyncio.run(collect())
    for final, pieces in ((chunks[-1].response, chunks), (async_chunks[-1].response, async_chunks)):
        assert final is not None
        assert "".join(c.text for c in pieces) == final.text  # type: ignore[attr-defined]
        assert final.text == routed.text
        assert final.decision.confidence == pytest.approx(routed.decision.confidence)
    assert awaited.text == routed.text
    assert awaited.decision.confidence == pytest.approx(routed.decision.confidence)
    assert routed.decision.confidence is not None and 0.0 < routed.decision.confidence < 1.0


@pytest.mark.parametrize("estimator", ["p_true", "verbalized_2s"])
def test_the_awaited_follow_up_gives_the_confidence_of_the_sync_one(
    slm: ServerModel, estimator: str
) -> None:
    """``aroute`` awaits the second call (``AsyncMessageFollowUp``); ``route`` makes it in turn."""
    router = _router(slm, estimator)
    routed = router.route(QUESTION)

    async def both() -> list[object]:
        return await asyncio.gather(router.aroute(QUESTION), router.aroute(QUESTION))

    for awaited in asyncio.run(both()):
        assert awaited.text == routed.text  # type: ignore[attr-defined]
        confidence = awaited.decision.confidence  # type: ignore[attr-defined]
        assert confidence == pytest.approx(routed.decision.confidence, abs=1e-6)
    assert routed.decision.confidence is not None and 0.0 < routed.decision.confidence <= 1.0


def test_the_perplexity_confidence_is_the_servers_own_log_probabilities(
    slm: ServerModel, slm_server: str
) -> None:
    """Read through the OpenAI SDK (not LiteLLM): the same greedy tokens, the same number."""
    decision = _router(slm).route(QUESTION).decision
    client = openai.OpenAI(base_url=slm_server, api_key="unused", max_retries=0)
    completion = client.chat.completions.create(
        model=ALIAS,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=MAX_NEW_TOKENS,
        temperature=0.0,
        logprobs=True,
        top_logprobs=1,
    )
    content = completion.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content
    expected = math.exp(math.fsum(t.logprob for t in content) / len(content))
    assert decision.confidence == pytest.approx(expected, rel=1e-6)
    assert decision.local_completion_tokens == len(content)


def test_both_adapters_route_through_the_server_backend(slm: ServerModel) -> None:
    """LangChain and LlamaIndex take the loaded ServerModel as their local model."""
    from langchain_confroute import ChatConfRoute
    from llamaindex_confroute import ConfRouteLLM, routing_decision

    chat = ChatConfRoute(local_model=slm, strong_model=None, max_tokens=MAX_NEW_TOKENS)
    message = chat.invoke(QUESTION)
    decision = message.response_metadata["confroute"]
    assert message.content and decision["answered_by"] == MODEL
    assert 0.0 < decision["confidence"] < 1.0
    llm = ConfRouteLLM(local_model=slm, strong_model=None, max_tokens=MAX_NEW_TOKENS)
    completion = llm.complete(QUESTION)
    routed = routing_decision(completion)
    assert completion.text == message.content  # the same greedy answer
    assert routed.confidence == pytest.approx(decision["confidence"])


def test_agenerate_calls_litellm_acompletion_concurrently(slm: ServerModel) -> None:
    from confroute.generation import GenerationConfig

    conversations = [[{"role": "user", "content": q}] for q in (QUESTION, "Name a fruit.")]
    config = GenerationConfig(max_new_tokens=4)
    generations = asyncio.run(slm.agenerate(conversations, config))
    assert [g.text for g in generations] == [g.text for g in slm.generate(conversations, config)]
    for generation in generations:
        assert generation.logprobs and all(lp <= 0.0 for lp in generation.logprobs)
        assert all(len(alternatives) == 5 for alternatives in generation.top_logprobs)


def test_perplexity_agrees_with_the_transformers_backend_on_the_same_weights(
    slm: ServerModel,
) -> None:
    """The server runs the GGUF's quantized kernels, LocalModel the same weights dequantized.

    Measured on three short prompts (12 tokens, greedy): the same tokens, perplexity
    confidences 0.0001-0.0095 apart, per-token log-probabilities at most 0.16 apart. The
    tolerance is 0.03 on the tokens both wrote alike.
    """
    from confroute import LocalModel
    from confroute.generation import GenerationConfig

    conversation = [[{"role": "user", "content": QUESTION}]]
    config = GenerationConfig(max_new_tokens=MAX_NEW_TOKENS)
    [served] = slm.generate(conversation, config)
    [local] = LocalModel(DEFAULT_SLM).generate(conversation, config)
    common = 0
    for ours, theirs in zip(served.tokens, local.tokens, strict=False):
        if ours != theirs:
            break
        common += 1
    assert common > 0, (served.text, local.text)
    assert served.prompt_tokens == local.prompt_tokens

    def confidence(logprobs: tuple[float, ...]) -> float:
        return math.exp(math.fsum(logprobs[:common]) / common)

    assert confidence(served.logprobs) == pytest.approx(confidence(local.logprobs), abs=0.03)


def test_a_server_that_is_down_raises_a_confroute_error_with_the_url_masked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Real LiteLLM, a closed port: the error and every log line keep the secrets out."""
    base = f"http://user:sk-SECRET@127.0.0.1:{free_port()}/v1"
    model = ServerModel(MODEL, api_base=base, api_key="sk-KEY", max_retries=1, backoff_s=0.0)
    with caplog.at_level(logging.DEBUG), pytest.raises(LocalBackendError) as caught:
        model.generate([[{"role": "user", "content": QUESTION}]])
    message = str(caught.value)
    assert caught.value.attempts == 2
    assert "http://***@127.0.0.1:" in message
    assert "retry" in caplog.text  # the retry was logged ...
    for text in (message, *caught.value.errors, caplog.text, repr(model)):
        assert "sk-SECRET" not in text and "sk-KEY" not in text  # ... without a secret
