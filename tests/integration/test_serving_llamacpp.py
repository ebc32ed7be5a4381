"""Escalation through LiteLLM to a real HTTP provider: llama-cpp-python's OpenAI-compatible server.

The test starts ``python -m llama_cpp.server`` on 127.0.0.1 with the bundled 1.5B GGUF. The
server returns log-probabilities only when ``top_logprobs`` is passed
(``Escalation(top_logprobs=...)``). Needs ``pip install 'llama-cpp-python[server]'``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

pytest.importorskip("llama_cpp.server", reason="llama-cpp-python not installed")

from confroute import ConfRouter, Escalation, LocalModel
from confroute.models import DEFAULT_SLM
from confroute.serving import BackgroundServer
from tests.integration import llama_server as servers

ALIAS = "qwen2.5-coder-1.5b-gguf"
STRONG = f"openai/{ALIAS}"
QUESTION = "What is 2+2? Reply with the number only."


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The llama.cpp server's OpenAI base URL; the process is stopped after the session."""
    folder = Path(tmp_path_factory.mktemp("llama"))
    with servers.llama_server("qwen2.5-coder-1.5b-instruct", ALIAS, folder) as base_url:
        yield base_url


@pytest.fixture(scope="session")
def slm() -> LocalModel:
    return LocalModel(DEFAULT_SLM)


def _router(slm: LocalModel, base_url: str, top_logprobs: int | None) -> ConfRouter:
    escalation = Escalation(
        STRONG, api_base=base_url, api_key="sk-unused", timeout=300, top_logprobs=top_logprobs
    )
    # threshold 1.0 escalates every request
    return ConfRouter(slm, escalation, threshold=1.0, max_new_tokens=8)


def test_escalation_returns_the_servers_answer_and_logprobs(
    slm: LocalModel, llama_server: str
) -> None:
    response = _router(slm, llama_server, top_logprobs=2).route(QUESTION, max_new_tokens=8)
    decision = response.decision
    assert (decision.escalated, decision.reason, decision.answered_by) == (
        True,
        "low_confidence",
        STRONG,
    )
    assert "4" in response.text
    assert decision.remote_completion_tokens is not None and decision.remote_completion_tokens > 0
    assert response.remote is not None
    content = response.logprobs["content"]  # type: ignore[index]
    assert len(content) > 0
    assert all(entry["logprob"] <= 0.0 for entry in content)
    assert all(len(entry["top_logprobs"]) == 2 for entry in content)
    assert "".join(entry["token"] for entry in content).strip() == response.text.strip()


def test_without_top_logprobs_the_server_sends_none(slm: LocalModel, llama_server: str) -> None:
    response = _router(slm, llama_server, top_logprobs=None).route(QUESTION, max_new_tokens=8)
    assert response.decision.answered_by == STRONG
    assert "4" in response.text
    assert response.logprobs is None


def test_streamed_escalation(slm: LocalModel, llama_server: str) -> None:
    chunks = list(_router(slm, llama_server, top_logprobs=None).stream(QUESTION, max_new_tokens=8))
    final = chunks[-1].response
    assert final is not None and final.decision.answered_by == STRONG
    assert "".join(c.text for c in chunks) == final.text
    assert "4" in final.text


def test_confroute_serve_escalates_to_llama_cpp(slm: LocalModel, llama_server: str) -> None:
    """OpenAI SDK -> confroute serve -> (escalation through LiteLLM) -> llama.cpp server."""
    router = _router(slm, llama_server, top_logprobs=1)
    with BackgroundServer(router) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="confroute",
            messages=[{"role": "user", "content": QUESTION}],
            max_tokens=8,
            logprobs=True,
            top_logprobs=1,
        )
        completion = raw.parse()
        assert raw.headers["x-confroute-escalated"] == "true"
        assert raw.headers["x-confroute-answered-by"] == STRONG
        assert "4" in (completion.choices[0].message.content or "")
        assert completion.model_extra["confroute"]["remote_model"] == STRONG
        tokens = completion.choices[0].logprobs.content
        assert tokens and all(len(t.top_logprobs) == 1 for t in tokens)
        streamed = list(
            client.chat.completions.create(
                model="confroute",
                messages=[{"role": "user", "content": QUESTION}],
                max_tokens=8,
                stream=True,
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        assert "4" in text
        assert streamed[-1].model_extra["confroute"]["answered_by"] == STRONG
