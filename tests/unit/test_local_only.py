"""Local-only mode (``strong_model=None``) opens no network connection at all.

Sockets are blocked with pytest-socket while every entry point runs; would-be escalations are
reported with reason ``local_only``. A fresh interpreter with ``socket.connect`` disabled also
imports confroute and answers, proving that import and first use stay offline.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_socket import SocketBlockedError, disable_socket, enable_socket

from confroute import ConfRouter
from confroute.errors import ContextOverflowError
from tests.fakes import ScriptedLocalModel

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = {"sure?": ("391", "confident"), "unsure?": ("maybe 12", "local_only")}


@pytest.fixture(scope="module")
def slm() -> ScriptedLocalModel:
    return ScriptedLocalModel(
        script={"sure?": ("391", (0.99, 0.98, 0.97)), "unsure?": ("maybe 12", (0.2, 0.3, 0.4))}
    )


@pytest.fixture
def no_network() -> Iterator[None]:
    disable_socket(allow_unix_socket=True)  # the event loop's self-pipe is a unix socket
    try:
        yield
    finally:
        enable_socket()


def test_blocking_is_effective(no_network: None, slm: ScriptedLocalModel) -> None:
    with pytest.raises(SocketBlockedError):
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # the same router with a strong model does try the network, and is stopped
    router = ConfRouter(
        slm, "openai/x", api_base="http://127.0.0.1:9/v1", api_key="k", threshold=0.8, max_retries=0
    )
    response = router.route("unsure?")
    assert response.decision.escalated and response.decision.error is not None


@pytest.mark.parametrize("mode", ["route", "aroute", "stream", "astream", "batch", "abatch"])
async def test_local_only_never_connects(
    no_network: None, slm: ScriptedLocalModel, mode: str
) -> None:
    seen: list[Any] = []
    router = ConfRouter(slm, None, threshold=0.8, hooks=[seen.append])
    assert router.escalation is None
    texts: dict[str, str] = {}
    reasons: dict[str, str] = {}
    if mode in ("batch", "abatch"):
        prompts = list(PROMPTS)
        responses = (
            router.route_batch(prompts) if mode == "batch" else await router.aroute_batch(prompts)
        )
        for prompt, response in zip(prompts, responses, strict=True):
            texts[prompt], reasons[prompt] = response.text, response.decision.reason
    else:
        for prompt in PROMPTS:
            if mode == "route":
                response = router.route(prompt)
            elif mode == "aroute":
                response = await router.aroute(prompt)
            else:
                chunks = (
                    list(router.stream(prompt))
                    if mode == "stream"
                    else [c async for c in router.astream(prompt)]
                )
                assert chunks[-1].response is not None
                response = chunks[-1].response
            texts[prompt], reasons[prompt] = response.text, response.decision.reason
    assert texts == {p: answer for p, (answer, _) in PROMPTS.items()}
    assert reasons == {p: reason for p, (_, reason) in PROMPTS.items()}
    assert len(seen) == len(PROMPTS)
    for decision in seen:
        assert not decision.escalated and decision.error is None and decision.attempts == 0
        assert decision.remote_model is None and decision.answered_by == "scripted-slm"


def test_local_only_overflow_is_a_clear_error(no_network: None) -> None:
    small = ScriptedLocalModel()
    small.context_window = 32
    seen: list[Any] = []
    router = ConfRouter(small, None, max_new_tokens=8, hooks=[seen.append])
    with pytest.raises(ContextOverflowError, match="no strong model is configured"):
        router.route("word " * 200)
    assert [d.reason for d in seen] == ["context_overflow"] and not seen[0].escalated


async def test_adapters_in_local_only_mode_never_connect(
    no_network: None, slm: ScriptedLocalModel
) -> None:
    from langchain_confroute import ChatConfRoute
    from llamaindex_confroute import ConfRouteLLM

    chat = ChatConfRoute(local_model=slm, strong_model=None, threshold=0.8)
    message = await chat.ainvoke("unsure?")
    assert message.content == "maybe 12"
    assert message.response_metadata["confroute"]["reason"] == "local_only"
    llm = ConfRouteLLM(slm, None, threshold=0.8)
    completion = await llm.acomplete("unsure?")
    assert completion.text == "maybe 12"
    assert completion.additional_kwargs["confroute"]["reason"] == "local_only"


def test_fresh_interpreter_imports_and_answers_offline() -> None:
    script = textwrap.dedent(
        """
        import socket
        attempts = []
        def refuse(self, address, *args):
            attempts.append(address)
            raise OSError("network disabled by the test")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = lambda address, *a, **k: refuse(None, address)

        import confroute
        from confroute import ConfRouter
        from tests.fakes import ScriptedLocalModel
        slm = ScriptedLocalModel(script={"unsure?": ("maybe 12", (0.2, 0.3, 0.4))})
        response = ConfRouter(slm, None, threshold=0.8).route("unsure?")
        assert response.text == "maybe 12", response.text
        assert response.decision.reason == "local_only"
        assert attempts == [], attempts
        print("OFFLINE-OK")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}
    env.update(HF_HUB_OFFLINE="1", CONFROUTE_QUIET="1", PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "OFFLINE-OK" in result.stdout
