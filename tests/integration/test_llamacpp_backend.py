"""The llama.cpp backend on the bundled 0.5B, against the transformers backend on the same GGUF.

One ``LlamaCppModel`` and one ``LocalModel`` per session. Prompts are short and answers at most
16 tokens.

Measured agreement (10 prompts, 16 tokens, this 2-core machine, llama-cpp-python 0.3.36 Q4_K_M
kernels against transformers' bf16 dequantized copy): the greedy tokens were the same on 10 of
10 prompts; on the tokens both chose the largest difference of one token's log-prob was 0.12
nats, and of a confidence 0.020 (min_token_prob; avg_token_prob 0.019, perplexity 0.017,
mean_token_entropy 0.015). The tolerance below is 2.5x the largest measured difference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed")

from confroute import ConfRouter, LocalModel, RoutingDecision
from confroute.calibration import CalibrationProfile, default_profile_path
from confroute.estimators import EstimationContext, JaccardDegree, get
from confroute.generation import Generation, GenerationConfig
from confroute.llamacpp import LlamaCppModel
from confroute.models import DEFAULT_SLM

TOLERANCE = 0.05
"""Largest allowed difference of a single-pass confidence between the two backends."""
SINGLE_PASS = ("perplexity", "avg_token_prob", "min_token_prob", "mean_token_entropy")
PROMPTS = (
    "What is 2+2? Reply with the number only.",
    "Name the capital of France.",
    "What does HTTP stand for?",
    "Is 17 a prime number? Answer yes or no.",
    "Give one synonym of 'happy'.",
    "Who wrote 'Romeo and Juliet'?",
)
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather of a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


@pytest.fixture(scope="session")
def llama() -> Iterator[LlamaCppModel]:
    yield LlamaCppModel(DEFAULT_SLM)


@pytest.fixture(scope="session")
def transformers_model() -> LocalModel:
    return LocalModel(DEFAULT_SLM)


def _conversations() -> list[list[dict[str, object]]]:
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    return [
        [{"role": "user", "content": PROMPTS[0]}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Ünïcode ✓?"}],
        [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
    ]


def test_prompts_tokens_and_fingerprint_are_the_transformers_backends(
    llama: LlamaCppModel, transformers_model: LocalModel
) -> None:
    for conversation in _conversations():
        for tools in (None, TOOLS):
            text = llama.render(conversation, tools)
            assert text == transformers_model.render(conversation, tools)
            assert llama.encode(text) == transformers_model.encode(text)
    assert dict(llama.vocabulary()) == dict(transformers_model.vocabulary())
    assert transformers_model.special_token_ids() <= llama.special_token_ids()
    assert llama.fingerprint == transformers_model.fingerprint
    assert llama.name == transformers_model.name == DEFAULT_SLM


def _common(a: Generation, b: Generation) -> tuple[Generation, Generation]:
    """Both generations cut to the tokens both chose (their common prefix)."""
    count = 0
    for x, y in zip(a.token_ids, b.token_ids, strict=False):
        if x != y:
            break
        count += 1

    def cut(g: Generation) -> Generation:
        return dataclasses.replace(
            g,
            text="".join(g.tokens[:count]),
            token_ids=g.token_ids[:count],
            tokens=g.tokens[:count],
            logprobs=g.logprobs[:count],
            top_logprobs=g.top_logprobs[:count],
            entropies=g.entropies[:count],
        )

    return cut(a), cut(b)


def test_greedy_tokens_and_single_pass_confidences_agree(
    llama: LlamaCppModel, transformers_model: LocalModel
) -> None:
    config = GenerationConfig(max_new_tokens=16)
    differing = 0
    for prompt in PROMPTS:
        messages = [{"role": "user", "content": prompt}]
        ids = llama.encode(llama.render(messages))
        [ours] = llama.generate_from_ids([ids], config)
        [theirs] = transformers_model.generate_from_ids([ids], config)
        differing += ours.token_ids != theirs.token_ids
        a, b = _common(ours, theirs)
        assert a.token_ids, prompt  # the first greedy token is the same
        context = EstimationContext(messages=messages)
        for name in SINGLE_PASS:
            mine, other = get(name).confidence(a, context), get(name).confidence(b, context)
            assert mine is not None and other is not None
            assert mine == pytest.approx(other, abs=TOLERANCE), (prompt, name)
    assert differing <= len(PROMPTS) // 3


def test_p_true_and_verbalized_2s_reuse_the_kept_prefix(llama: LlamaCppModel) -> None:
    router = ConfRouter(
        local_model=llama,
        strong_model=None,
        estimator="p_true",
        extra_estimators=["verbalized_2s"],
        max_new_tokens=16,
    )
    prompt = "Name the capital of France."
    response = router.route(prompt)
    assert "Paris" in response.text
    confidence = response.decision.confidence
    assert confidence is not None and 0.0 < confidence < 1.0
    prompt_tokens = llama.count_tokens([{"role": "user", "content": prompt}])
    # the follow-up read the prompt and the answer from llama.cpp's cache
    assert llama.last_follow_up_reused > prompt_tokens


def test_jaccard_degree_draws_reproducible_samples(llama: LlamaCppModel) -> None:
    estimator = JaccardDegree(num_samples=3, seed=0, max_new_tokens=8)
    router = ConfRouter(
        local_model=llama, strong_model=None, estimator=estimator, max_new_tokens=16
    )
    first = router.route("Give one synonym of 'happy'.")
    again = router.route("Give one synonym of 'happy'.")
    assert first.decision.confidence is not None
    assert 1 / 3 <= first.decision.confidence <= 1.0
    assert again.decision.confidence == first.decision.confidence


async def test_async_and_streaming_routes_agree_with_sync(llama: LlamaCppModel) -> None:
    router = ConfRouter(
        local_model=llama, strong_model=None, estimator="perplexity", max_new_tokens=12
    )
    prompt = "What does HTTP stand for?"
    sync = router.route(prompt)
    asynchronous = await router.aroute(prompt)
    chunks = list(router.stream(prompt))
    assert asynchronous.text == sync.text
    assert asynchronous.decision.confidence == sync.decision.confidence
    final = chunks[-1].response
    assert final is not None and "".join(c.text for c in chunks) == sync.text
    assert final.decision.confidence == sync.decision.confidence


def test_an_answer_after_another_equals_the_answer_alone(llama: LlamaCppModel) -> None:
    """The shared system turn is read from the cache, computed as it is from an empty one."""
    config = GenerationConfig(max_new_tokens=12)
    question = [{"role": "user", "content": "Name a prime number above 10."}]
    llama.generate([[{"role": "user", "content": PROMPTS[0]}]], config)
    [after_other] = llama.generate([question], config)
    llama.generate([[{"role": "system", "content": "Answer in French."}, *question]], config)
    [after_a_new_system_turn] = llama.generate([question], config)
    assert after_other.token_ids == after_a_new_system_turn.token_ids
    assert after_other.logprobs == after_a_new_system_turn.logprobs


@pytest.mark.parametrize("static", [False, True])
def test_an_escalation_rate_starts_from_the_profile_made_on_llama_cpp(
    llama: LlamaCppModel, static: bool
) -> None:
    """The bundled model on llama.cpp takes its own engine's shipped profile, held or static."""
    path = default_profile_path(DEFAULT_SLM, "p_true", "llama.cpp")
    assert path is not None and path.parent.name == "llama.cpp"
    profile = CalibrationProfile.load(path)
    assert profile.fingerprint.backend == "llama.cpp"
    seen: list[RoutingDecision] = []
    router = ConfRouter(
        llama,
        None,
        estimator="p_true",
        escalation_rate=0.3,
        adapt_to_traffic=not static,
        max_new_tokens=8,
        hooks=[seen.append],
    )  # p_true's transformers profile would be refused as a static threshold on llama.cpp
    router.route("Is 7 a prime number? Answer with yes or no.")
    [decision] = seen
    assert decision.local_backend == "llama.cpp"
    assert decision.threshold == pytest.approx(profile.threshold_for(0.3, "yes_no"))
