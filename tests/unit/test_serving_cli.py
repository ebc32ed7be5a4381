"""``confroute serve`` argument handling: which router and server the options build."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

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
    return captured


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
