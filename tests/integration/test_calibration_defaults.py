"""``escalation_rate=0.3`` out of the box: the shipped profile of the bundled SLM, everywhere.

Engine, CLI, LangChain and LlamaIndex all find the profile shipped for the bundled 0.5B and the
chosen estimator, accept its fingerprint (the real weights' sha256), and compare each answer's
confidence with the threshold of the request's answer format.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from confroute import ConfRouter, RoutingDecision
from confroute.calibration import CalibrationProfile, default_profile_path
from confroute.models import DEFAULT_SLM
from confroute.policies import StreamingQuantile
from tests.integration.lc_fixtures import bundled_slm

MC = "Which planet is largest?\n\nA. Mars\nB. Jupiter\nC. Venus\nD. Mercury\n\nGive the letter."
YES_NO = "Is 7 a prime number? Answer with yes or no."


@pytest.mark.parametrize("estimator", ["perplexity", "avg_token_prob", "mean_token_entropy"])
def test_engine_uses_the_shipped_profile_per_answer_format(estimator: str) -> None:
    path = default_profile_path(DEFAULT_SLM, estimator)
    assert path is not None
    profile = CalibrationProfile.load(path)
    slm = bundled_slm()
    for prompt, answer_format in ((MC, "letter"), (YES_NO, "yes_no")):
        seen: list[RoutingDecision] = []
        router = ConfRouter(
            slm,
            None,
            estimator=estimator,
            escalation_rate=0.3,
            max_new_tokens=8,
            hooks=[seen.append],
        )
        assert isinstance(router.policy, StreamingQuantile) and router.policy.per_format
        router.route(prompt)
        # a router's first request meets its format's profile quantile (no traffic yet; later
        # requests move it: the live quantile and the budget feedback of held_rate)
        [decision] = seen
        assert decision.threshold == pytest.approx(profile.threshold_for(0.3, answer_format))
        assert decision.escalated == ((decision.confidence or 0.0) < decision.threshold)
        assert decision.reason in ("confident", "local_only")


def test_cli_escalation_rate_without_a_profile_file() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [
            *(sys.executable, "-m", "confroute", "ask", YES_NO, "--escalation-rate", "0.3"),
            *("--max-new-tokens", "8", "--json", "--llm", "none"),
            *("--slm-backend", "transformers"),  # the shipped profiles' engine
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    profile = CalibrationProfile.load(default_profile_path(DEFAULT_SLM, "perplexity"))  # type: ignore[arg-type]
    assert payload["threshold"] == pytest.approx(profile.threshold_for(0.3, "yes_no"))


def test_langchain_and_llamaindex_take_an_escalation_rate() -> None:
    from langchain_confroute import ChatConfRoute
    from llamaindex_confroute import ConfRouteLLM

    chat = ChatConfRoute(
        local_model=bundled_slm(), strong_model=None, escalation_rate=0.3, max_tokens=8
    )
    message = chat.invoke(YES_NO)
    profile = CalibrationProfile.load(default_profile_path(DEFAULT_SLM, "perplexity"))  # type: ignore[arg-type]
    expected = profile.threshold_for(0.3, "yes_no")
    assert message.response_metadata["confroute"]["threshold"] == pytest.approx(expected)
    llm = ConfRouteLLM(
        local_model=bundled_slm(), strong_model=None, escalation_rate=0.3, max_tokens=8
    )
    response = llm.complete(YES_NO)
    decision = response.additional_kwargs["confroute"]
    assert decision["threshold"] == pytest.approx(expected)
