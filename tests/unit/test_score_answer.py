"""ConfRouter.score: the confidence of a given answer, teacher-forced (confroute.forced)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from confroute import ConfRouter, LocalModel
from confroute.errors import ConfigurationError
from confroute.estimators import PROBE_LAYER, EstimationContext, Perplexity
from confroute.forced import teacher_forced_ids
from tests.fakes import ScriptedLocalModel

QUESTION = "What is 2+2?"


def test_teacher_forcing_the_models_own_tokens_gives_its_generation_statistics(
    tiny_lm: LocalModel,
) -> None:
    router = ConfRouter(tiny_lm, None, max_new_tokens=6)
    generated = router.route(QUESTION).local
    assert generated is not None and generated.token_ids
    prompt = tiny_lm.encode(tiny_lm.render([{"role": "user", "content": QUESTION}]))
    forced = teacher_forced_ids(tiny_lm, prompt, generated.token_ids, generated.text)
    assert forced.token_ids == generated.token_ids
    for mine, theirs in zip(forced.logprobs, generated.logprobs, strict=True):
        assert mine == pytest.approx(theirs, abs=1e-3)
    for mine, theirs in zip(forced.entropies, generated.entropies, strict=True):
        assert mine == pytest.approx(theirs, abs=1e-3)
    assert [a.token_id for a in forced.top_logprobs[0]] == [
        a.token_id for a in generated.top_logprobs[0]
    ]
    assert Perplexity().confidence(forced, EstimationContext([])) == pytest.approx(
        Perplexity().confidence(generated, EstimationContext([])), abs=1e-3
    )


def test_score_reports_every_estimator_on_the_given_answer(tiny_lm: LocalModel) -> None:
    router = ConfRouter(tiny_lm, None, extra_estimators=["min_token_prob"])
    scored = router.score(QUESTION, "4 is the answer")
    assert scored.estimator == "perplexity"
    assert set(scored.confidences) == {"perplexity", "min_token_prob"}
    assert scored.generation is not None and scored.generation.text == "4 is the answer"
    assert scored.confidences["min_token_prob"] <= scored.confidences["perplexity"]  # type: ignore[operator]


def test_a_likelier_answer_scores_higher(tiny_lm: LocalModel) -> None:
    router = ConfRouter(tiny_lm, None, max_new_tokens=6)
    own = router.route(QUESTION).text
    scores = [router.score(QUESTION, own), router.score(QUESTION, "zebra quantum " * 3)]
    assert all(0.0 <= (s.confidence or 0.0) <= 1.0 for s in scores)
    assert scores[0].confidence is not None and scores[1].confidence is not None
    assert scores[0].confidence > scores[1].confidence
    assert scores[1].escalate is (scores[1].confidence < scores[1].threshold)


def test_follow_up_estimators_and_probes_read_a_given_answer(tiny_lm: LocalModel) -> None:
    router = ConfRouter(tiny_lm, None, estimator="p_true", max_new_tokens=4)
    scored = router.score(QUESTION, "4")
    assert scored.confidence is not None and 0.0 < scored.confidence < 1.0
    prompt = tiny_lm.encode(tiny_lm.render([{"role": "user", "content": QUESTION}]))
    forced = tiny_lm.score_answer(prompt, "4", hidden_layer=PROBE_LAYER)
    assert forced.hidden_state is not None and forced.hidden_layer == PROBE_LAYER
    assert forced.hidden_state.shape == (tiny_lm.model.config.hidden_size,)
    assert math.isfinite(float(forced.hidden_state.sum()))


def test_ascore_matches_score(tiny_lm: LocalModel) -> None:
    router = ConfRouter(tiny_lm, None)
    sync = router.score(QUESTION, "four")
    async_ = asyncio.run(router.ascore(QUESTION, "four"))
    assert async_.confidence == pytest.approx(sync.confidence)


@pytest.mark.parametrize("answer", ["", "   "])
def test_an_empty_answer_is_refused(tiny_lm: LocalModel, answer: str) -> None:
    with pytest.raises(ConfigurationError, match="empty answer"):
        ConfRouter(tiny_lm, None).score(QUESTION, answer)


def test_a_prompt_changing_estimator_cannot_score(tiny_lm: LocalModel) -> None:
    router = ConfRouter(tiny_lm, None, estimator="verbalized_1s")
    with pytest.raises(ConfigurationError, match="verbalized_1s"):
        router.score(QUESTION, "4")


def test_a_backend_that_cannot_teacher_force_is_refused(scripted_slm: ScriptedLocalModel) -> None:
    router = ConfRouter(scripted_slm, None)
    with pytest.raises(ConfigurationError, match="cannot score a given answer"):
        router.score(QUESTION, "4")


def test_score_calls_no_decision_hook(tiny_lm: LocalModel) -> None:
    seen: list[Any] = []
    router = ConfRouter(tiny_lm, None, hooks=[seen.append])
    router.score(QUESTION, "4")
    assert seen == []
    router.route(QUESTION, max_new_tokens=2)
    assert len(seen) == 1
