"""Every estimator on a fixed small set of prompts with the bundled 0.5B model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from confroute import ConfRouter, LocalModel, estimators
from confroute.estimators import (
    EstimationContext,
    JaccardDegree,
    LogisticCombination,
    OODProbe,
    PTrue,
    TrainedProbe,
)
from confroute.estimators.probe_network import train_probe
from confroute.local import GenerationConfig
from confroute.models import DEFAULT_SLM

PROMPTS = [
    "What is 17*23? Reply with the number only.",
    "What is the capital of France? Answer in one word.",
    "Which planet is known as the Red Planet? A) Venus B) Mars C) Jupiter D) Saturn. "
    "Reply with just the letter.",
    "Is the Pacific the largest ocean on Earth? Answer yes or no.",
]
MAX_NEW_TOKENS = 12


@pytest.fixture(scope="module")
def slm() -> LocalModel:
    return LocalModel(DEFAULT_SLM)


@pytest.fixture(scope="module")
def fitted(slm: LocalModel, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Throwaway probes and combination for the model (random labels: cost, not quality)."""
    folder = tmp_path_factory.mktemp("fitted")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, slm.model.config.hidden_size)).astype(np.float32)
    y = np.arange(32) % 2
    paths = {}
    for kind in ("trained", "ood"):
        probe = train_probe(x, y, model=slm.name, fingerprint=slm.fingerprint, kind=kind, epochs=1)
        paths[kind], _ = probe.save(folder / f"{kind}_probe")
    combo = LogisticCombination.fit(rng.uniform(size=(32, 4)), y)
    paths["combination"] = combo.save(folder / "combination.json")
    return paths


def test_all_methods_run_on_one_generation_each(slm: LocalModel, fitted: dict[str, Path]) -> None:
    extras = [
        "avg_token_prob",
        "mean_token_entropy",
        "min_token_prob",
        "p_true",
        "verbalized_2s",
        "grounded_answer",
        "tool_call",
        JaccardDegree(seed=0),
        TrainedProbe(fitted["trained"]),
        OODProbe(fitted["ood"]),
        LogisticCombination(fitted["combination"]),
    ]
    router = ConfRouter(
        slm,
        None,
        estimator="perplexity",
        extra_estimators=extras,
        threshold=0.0,
        max_new_tokens=MAX_NEW_TOKENS,
    )
    assert router.defaults.keep_cache and router.defaults.hidden_layer == -8
    responses = router.route_batch(PROMPTS)
    expected = set(estimators.available()) - {"verbalized_1s"}
    for response in responses:
        assert set(response.confidences) == expected
        for name, value in response.confidences.items():
            if value is None:
                assert name == "verbalized_2s", f"{name} gave no confidence"
            else:
                assert 0.0 <= value <= 1.0, (name, value)
        assert response.local is not None
        assert response.local.hidden_state is not None
        assert response.local.hidden_state.shape == (slm.model.config.hidden_size,)
        assert "prefix" not in response.local.extras
        assert not response.decision.escalated
    assert all(r.text.strip() for r in responses)  # correctness is not asserted: it is a 0.5B
    # the confidence of the policy is the primary estimator's
    assert responses[0].decision.confidence == responses[0].confidences["perplexity"]


def test_verbalized_1s_on_the_fixed_set(slm: LocalModel) -> None:
    router = ConfRouter(
        slm, None, estimator="verbalized_1s", threshold=0.0, max_new_tokens=MAX_NEW_TOKENS + 8
    )
    responses = router.route_batch(PROMPTS)
    for response in responses:
        value = response.decision.confidence
        assert value is None or 0.0 <= value <= 1.0
        assert "confidence:" not in response.text.lower()


def test_p_true_reuses_the_cache_and_agrees_with_a_full_prefill(slm: LocalModel) -> None:
    conversation = [{"role": "user", "content": PROMPTS[0]}]
    [generation] = slm.generate(
        [conversation], GenerationConfig(max_new_tokens=MAX_NEW_TOKENS, keep_cache=True)
    )
    context = EstimationContext(messages=conversation, local_model=slm)
    cached = PTrue().confidence(generation, context)
    assert slm.last_follow_up_reused >= generation.prompt_tokens
    mass = context.extras["p_true_mass"]
    generation.extras.pop("prefix")
    full = PTrue().confidence(generation, EstimationContext(conversation, slm))
    assert slm.last_follow_up_reused == 0
    assert cached is not None and full is not None
    assert cached == pytest.approx(full, abs=0.05)  # bf16 numerics differ slightly
    assert 0.0 < mass <= 1.0


def test_jaccard_degree_draws_five_samples(slm: LocalModel) -> None:
    conversation = [{"role": "user", "content": PROMPTS[1]}]
    config = GenerationConfig(max_new_tokens=MAX_NEW_TOKENS)
    [generation] = slm.generate([conversation], config)
    context = EstimationContext(conversation, slm, config=config)
    value = JaccardDegree(seed=0).confidence(generation, context)
    assert len(context.extras["jaccard_samples"]) == 5
    assert value is not None and 0.2 <= value <= 1.0
