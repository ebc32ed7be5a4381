"""Estimators inside the engine: follow-ups reuse the cache, samples come in one batch,
several estimators share one generation, verbalized_1s changes the prompt and strips its line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from confroute import ConfRouter
from confroute.backend import Capabilities
from confroute.errors import ConfigurationError
from confroute.estimators import (
    EstimationContext,
    Estimator,
    JaccardDegree,
    LogisticCombination,
    PTrue,
    Requirement,
)
from confroute.estimators.prompts import VERBALIZED_1S_INSTRUCTION
from confroute.generation import Generation
from confroute.local import GenerationConfig, LocalModel
from tests.fakes import ScriptedLocalModel, ScriptedProvider, scripted_generation

QUESTION = [{"role": "user", "content": "What is 17*23?"}]


def test_follow_up_reuses_the_kept_cache_and_matches_a_full_prefill(tiny_lm: LocalModel) -> None:
    [generation] = tiny_lm.generate([QUESTION], GenerationConfig(max_new_tokens=4, keep_cache=True))
    prefix = generation.extras["prefix"]
    assert len(prefix.token_ids) == generation.prompt_tokens + 3  # the 4th token was never fed
    follow = [*prefix.token_ids, 5, 6, 7]
    reused = tiny_lm.next_token_logprobs(follow, prefix)
    assert tiny_lm.last_follow_up_reused == len(prefix.token_ids)
    full = tiny_lm.next_token_logprobs(follow)
    assert tiny_lm.last_follow_up_reused == 0
    np.testing.assert_allclose(reused, full, atol=1e-4)
    assert tiny_lm.continue_greedy(follow, 3, prefix) == tiny_lm.continue_greedy(follow, 3)


def test_kept_cache_of_a_padded_batch_row_is_exact(tiny_lm: LocalModel) -> None:
    conversations = [QUESTION, [{"role": "user", "content": "The capital of France is? Yes no"}]]
    generations = tiny_lm.generate(
        conversations, GenerationConfig(max_new_tokens=3, keep_cache=True)
    )
    for generation in generations:
        prefix = generation.extras["prefix"]
        follow = [*prefix.token_ids, 9, 10]
        np.testing.assert_allclose(
            tiny_lm.next_token_logprobs(follow, prefix),
            tiny_lm.next_token_logprobs(follow),
            atol=1e-4,
        )
    # without keep_cache nothing is kept
    [plain] = tiny_lm.generate([QUESTION], GenerationConfig(max_new_tokens=2))
    assert "prefix" not in plain.extras


def test_p_true_reads_the_true_and_false_variants_after_a_follow_up(
    scripted_slm: ScriptedLocalModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    vocab = scripted_slm.tokenizer.get_vocab()
    true_id, false_id = vocab["\u0120true"], vocab["\u0120false"]
    seen: list[list[int]] = []

    def fake_logprobs(ids: Sequence[int], prefix: Any = None) -> np.ndarray:
        seen.append(list(ids))
        probs = np.full(len(scripted_slm.tokenizer), 1e-9)
        probs[true_id], probs[false_id] = 0.3, 0.1
        return np.log(probs)

    monkeypatch.setattr(scripted_slm, "next_token_logprobs", fake_logprobs)
    estimator = PTrue()
    generation = scripted_generation("391", (0.9, 0.9, 0.9))
    context = EstimationContext(messages=QUESTION, local_model=scripted_slm)
    assert estimator.confidence(generation, context) == pytest.approx(0.75, abs=1e-6)
    assert context.extras["p_true_mass"] == pytest.approx(0.4, abs=1e-5)
    rendered = scripted_slm.tokenizer.decode(seen[0])
    assert rendered.endswith("True or False.<|im_end|>\n<|im_start|>assistant\n")
    assert "391" in rendered


def test_jaccard_degree_draws_m_samples_in_one_batched_call() -> None:
    class Sampler:
        capabilities = Capabilities()  # a tokenizer: samples from token ids

        def __init__(self) -> None:
            self.calls: list[tuple[list[list[int]], GenerationConfig]] = []

        def render(self, messages: Any, tools: Any = None) -> str:
            return "prompt"

        def encode(self, text: str) -> list[int]:
            return [1, 2, 3]

        def generate_from_ids(
            self, prompts: list[list[int]], config: GenerationConfig
        ) -> list[Generation]:
            self.calls.append((prompts, config))
            texts = ["391", "391", "391", "it is 391", "12"]
            return [scripted_generation(t, (0.5,)) for t in texts]

    sampler = Sampler()
    context = EstimationContext(
        messages=QUESTION,
        local_model=sampler,  # type: ignore[arg-type]
        config=GenerationConfig(max_new_tokens=7, stop=("\n",)),
    )
    value = JaccardDegree(seed=3).confidence(scripted_generation("391", (0.9,)), context)
    [(prompts, config)] = sampler.calls
    assert prompts == [[1, 2, 3]]
    assert (config.num_samples, config.temperature, config.seed) == (5, 1.0, 3)
    assert (config.max_new_tokens, config.stop) == (7, ("\n",))
    # W: three identical {391}; {it,is,391} vs {391} = 1/3; {12} disjoint from all
    w = np.ones((5, 5))
    for i in range(3):
        w[i, 3] = w[3, i] = 1 / 3
    for i in range(4):
        w[i, 4] = w[4, i] = 0.0
    w[0:3, 0:3] = 1.0
    assert value == pytest.approx(w.sum() / 25)


def test_several_estimators_share_one_generation(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    replies: list[int] = []

    def fake_greedy(ids: Sequence[int], max_new_tokens: int, prefix: Any = None) -> str:
        replies.append(max_new_tokens)
        return "I am 70% sure"

    monkeypatch.setattr(scripted_slm, "continue_greedy", fake_greedy)
    router = ConfRouter(
        scripted_slm,
        "scripted/strong",
        estimator="perplexity",
        extra_estimators=["avg_token_prob", "min_token_prob", "verbalized_2s"],
        threshold=0.5,
    )
    assert router.defaults.keep_cache is True and router.defaults.hidden_layer is None
    response = router.route("sure?")
    assert scripted_slm.calls == [1]  # one generation for four estimators
    assert replies == [8]
    assert response.confidences == pytest.approx(
        {
            "perplexity": (0.99 * 0.98 * 0.97) ** (1 / 3),
            "avg_token_prob": 0.98,
            "min_token_prob": 0.97,
            "verbalized_2s": 0.70,
        }
    )
    assert response.decision.confidence == pytest.approx(response.confidences["perplexity"])
    assert "prefix" not in response.local.extras  # the cache is released after scoring


def test_an_estimator_chosen_twice_is_refused(scripted_slm: ScriptedLocalModel) -> None:
    with pytest.raises(ConfigurationError, match="once"):
        ConfRouter(scripted_slm, None, estimator="perplexity", extra_estimators=["perplexity"])


def test_verbalized_1s_changes_the_prompt_and_strips_its_line(
    provider: ScriptedProvider,
) -> None:
    slm = ScriptedLocalModel(
        script={
            "sure?" + VERBALIZED_1S_INSTRUCTION: ("391\nConfidence: 90%", (0.9, 0.9)),
            "unsure?" + VERBALIZED_1S_INSTRUCTION: ("12, I think.", (0.9, 0.9)),
        }
    )
    router = ConfRouter(slm, "scripted/strong", estimator="verbalized_1s", threshold=0.5)
    kept = router.route("sure?")
    assert kept.text == "391"
    assert kept.decision.confidence == pytest.approx(0.9) and not kept.decision.escalated
    escalated = router.route("unsure?")
    assert escalated.decision.confidence is None
    assert escalated.decision.reason == "no_confidence" and escalated.text == "strong answer"
    assert provider.calls[0]["messages"] == [{"role": "user", "content": "unsure?"}]


def test_only_one_prompt_changing_estimator(scripted_slm: ScriptedLocalModel) -> None:
    class Other(Estimator):
        name = "other"
        requires = frozenset({Requirement.PROMPT})

        def confidence(self, generation: Generation, context: EstimationContext) -> float:
            return 1.0

    with pytest.raises(ConfigurationError, match="Only one estimator"):
        ConfRouter(
            scripted_slm,
            None,
            estimator="verbalized_1s",
            extra_estimators=[Other()],
        )


def test_logistic_combination_reuses_the_shared_confidences(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    combination = LogisticCombination(
        signals=["perplexity", "min_token_prob"], weights=[2.0, -1.0], bias=0.5
    )
    router = ConfRouter(
        scripted_slm,
        "scripted/strong",
        estimator=combination,
        extra_estimators=["perplexity"],
        threshold=0.5,
    )
    response = router.route("unsure?")
    ppl = (0.2 * 0.3 * 0.4) ** (1 / 3)
    expected = 1 / (1 + np.exp(-(2.0 * ppl - 1.0 * 0.2 + 0.5)))
    assert response.decision.confidence == pytest.approx(expected)
    assert response.confidences["perplexity"] == pytest.approx(ppl)
