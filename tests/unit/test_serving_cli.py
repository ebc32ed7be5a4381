"""``confroute serve`` argument handling: which router and server the options build."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

import confroute.backend_choice
import confroute.local
import confroute.serving.server
from confroute.errors import ConfigurationError
from confroute.router import ConfRouter
from confroute.serving.batcher import MicroBatcher
from confroute.serving.cli import add_serve_parser, run_serve
from confroute.serving.early import EarlyEscalationRouter
from tests.fakes import ScriptedLocalModel


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="confroute")
    commands = parser.add_subparsers(dest="command", required=True)
    add_serve_parser(commands)
    return parser.parse_args(["serve", *argv])


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Capture what run_serve would serve, with a scripted local model instead of weights."""
    captured: dict[str, Any] = {}

    def fake_model(name: str, *, max_batch_size: int) -> ScriptedLocalModel:
        captured["slm"], captured["max_batch_size"] = name, max_batch_size
        return ScriptedLocalModel()

    def fake_serve(router: ConfRouter, **kwargs: Any) -> None:
        captured["router"] = router
        captured.update(kwargs)

    monkeypatch.setattr(confroute.local, "LocalModel", fake_model)
    monkeypatch.setattr(confroute.serving.server, "serve", fake_serve)
    # the transformers engine (the one that is micro-batched), whatever is installed
    monkeypatch.setattr(confroute.backend_choice, "llama_cpp_installed", lambda: False)
    return captured


def test_an_engine_that_batches_itself_is_not_micro_batched(
    served: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[str] = []

    def fake_load(choice: Any, settings: Any) -> ScriptedLocalModel:
        loaded.append(choice.backend)
        return ScriptedLocalModel()

    monkeypatch.setattr(confroute.backend_choice, "llama_cpp_installed", lambda: True)
    monkeypatch.setattr(confroute.backend_choice, "load_backend", fake_load)
    assert run_serve(_parse("--local-only")) == 0
    assert loaded == ["llama.cpp"] and not isinstance(served["router"].local, MicroBatcher)
    args = _parse("--local-only", "--slm", "hosted_vllm/Qwen/Qwen2.5-1.5B-Instruct")
    assert run_serve(args) == 0
    assert loaded == ["llama.cpp", "server"]
    assert not isinstance(served["router"].local, MicroBatcher)


def test_defaults_serve_on_loopback_with_batching(served: dict[str, Any]) -> None:
    args = _parse("--local-only")
    assert run_serve(args) == 0
    router = served["router"]
    assert (served["host"], served["port"], served["model_name"]) == (
        "127.0.0.1",
        8000,
        "confroute",
    )
    assert served["api_key"] is None
    assert isinstance(router.local, MicroBatcher)
    assert (router.local.window_s, router.local.max_batch) == (0.005, 16)
    assert served["max_batch_size"] == 16
    assert router.escalation is None
    assert type(router) is ConfRouter
    router.local.close()


def test_options_reach_the_router(served: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIENT_KEY", "s3cret")
    args = _parse(
        "--llm",
        "scripted/strong",
        "--no-batching",
        "--early-every",
        "4",
        "--early-margin",
        "0.3",
        "--threshold",
        "0.7",
        "--port",
        "9001",
        "--model-name",
        "edge",
        "--server-key-env",
        "CLIENT_KEY",
        "--max-new-tokens",
        "32",
    )
    run_serve(args)
    router = served["router"]
    assert isinstance(router, EarlyEscalationRouter)
    assert not isinstance(router.local, MicroBatcher)
    assert router.escalation.model == "scripted/strong"
    assert (router.early_escalation.every, router.early_escalation.margin) == (4, 0.3)
    assert router.early_escalation.threshold == 0.7
    assert router.defaults.max_new_tokens == 32
    assert (served["port"], served["model_name"], served["api_key"]) == (9001, "edge", "s3cret")


def test_a_missing_key_variable_is_an_error(served: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="NOT_SET_ANYWHERE"):
        run_serve(_parse("--local-only", "--server-key-env", "NOT_SET_ANYWHERE"))
    with pytest.raises(ConfigurationError, match="max-batch"):
        run_serve(_parse("--local-only", "--max-batch", "0"))


def test_sticky_options_wrap_the_policy_in_a_conversation_policy(served: dict[str, Any]) -> None:
    from confroute.policies import ConversationPolicy

    assert run_serve(_parse("--local-only")) == 0
    assert not isinstance(served["router"].policy, ConversationPolicy)
    args = _parse("--local-only", "--sticky-turns", "2", "--sticky-release-confidence", "0.9")
    assert run_serve(args) == 0
    router = served["router"]
    assert isinstance(router.policy, ConversationPolicy)
    assert (router.settings.sticky_turns, router.settings.sticky_release_confidence) == (2, 0.9)


def test_a_negative_sticky_turn_count_is_refused(served: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="sticky_turns"):
        run_serve(_parse("--local-only", "--sticky-turns", "-1"))
