"""The default path on real models: a bundled name runs on llama.cpp when it is installed.

Needs ``llama-cpp-python`` (the README's test set-up installs it) and the bundled 0.5B.
"""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed")

from confroute import ConfRouter, LlamaCppModel, LocalModel
from confroute.cli import main
from confroute.errors import ConfigurationError
from confroute.models import DEFAULT_SLM

QUESTION = "What is 2+2? Reply with the number only."


def test_a_bundled_name_runs_on_llama_cpp_and_the_decision_says_so() -> None:
    router = ConfRouter(DEFAULT_SLM, None, max_new_tokens=4)
    assert isinstance(router.local, LlamaCppModel)
    decision = router.route(QUESTION).decision
    assert decision.local_backend == "llama.cpp"
    assert decision.confidence is not None and 0.0 < decision.confidence <= 1.0


def test_a_probe_keeps_a_bundled_name_on_transformers() -> None:
    router = ConfRouter(DEFAULT_SLM, None, estimator="ood_probe", max_new_tokens=4)
    assert isinstance(router.local, LocalModel)
    assert router.route(QUESTION).decision.local_backend == "transformers"


def test_a_probe_forced_onto_llama_cpp_names_what_would_work() -> None:
    with pytest.raises(ConfigurationError) as raised:
        ConfRouter(f"llama.cpp:{DEFAULT_SLM}", None, estimator="ood_probe")
    message = str(raised.value)
    assert "llama.cpp backend" in message and "'ood_probe'" in message
    assert "perplexity" in message and "p_true" in message


def test_confroute_models_says_which_engine(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(DEFAULT_SLM))
    assert line.endswith("runs on llama.cpp")


def test_confroute_ask_json_reports_the_engine(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    args = ["ask", QUESTION, "--llm", "none", "--max-new-tokens", "4", "--json"]
    assert main([*args, "--slm-backend", "llama.cpp"]) == 0
    assert json.loads(capsys.readouterr().out)["local_backend"] == "llama.cpp"


def test_llama_cpp_scores_its_own_answer_as_it_wrote_it() -> None:
    router = ConfRouter(DEFAULT_SLM, None, max_new_tokens=8, extra_estimators=["min_token_prob"])
    routed = router.route(QUESTION)
    assert routed.local is not None
    scored = router.score(QUESTION, routed.local.text)
    assert scored.generation is not None
    if scored.generation.token_ids == routed.local.token_ids:
        # same tokens, same prefill, same loop: the statistics are the decoding loop's own
        assert scored.confidence == pytest.approx(routed.decision.confidence, abs=1e-5)
        assert scored.confidences["min_token_prob"] == pytest.approx(
            routed.confidences["min_token_prob"], abs=1e-5
        )
    wrong = router.score(QUESTION, "The answer is 5.")
    assert wrong.confidence is not None and scored.confidence is not None
    assert wrong.confidence < scored.confidence
    with pytest.raises(ConfigurationError, match="no hidden layer"):
        router.local.score_answer([1, 2], "4", hidden_layer=-8)  # type: ignore[attr-defined]
