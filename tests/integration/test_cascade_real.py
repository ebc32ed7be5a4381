"""A real three-tier cascade: bundled SmolLM2 -> bundled 0.5B (llama.cpp) -> a real server.

The last tier is a real ``llama_cpp.server`` (OpenAI-compatible, serving the bundled SmolLM2
under an alias) reached through LiteLLM, as a hosted model would be.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from confroute import ConfRouter
from confroute.cascade import Cascade, Tier
from tests.integration.llama_server import llama_server

pytest.importorskip("llama_cpp")

FIRST = "smollm2-135m-instruct"
MIDDLE = "llama.cpp:qwen2.5-coder-0.5b-instruct"
HOST = "openai/cascade-host"


@pytest.fixture(scope="module")
def host_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log_dir = Path(tmp_path_factory.mktemp("cascade-host"))
    with llama_server(FIRST, "cascade-host", log_dir) as base_url:
        yield base_url


def _router(host_url: str, middle: str | Tier) -> ConfRouter:
    return ConfRouter(
        FIRST,
        [middle, HOST],
        threshold=1.0,  # every scored tier hands on, unless its Tier says otherwise
        local_backend="llama.cpp",
        api_base=host_url,
        api_key="sk-cascade-test",
        max_new_tokens=12,
    )


def test_unsure_tiers_hand_on_to_the_real_server(host_url: str) -> None:
    router = _router(host_url, MIDDLE)
    assert isinstance(router.escalation, Cascade)
    response = router.route("What is the capital of France? Answer in one word.")
    decision = response.decision
    assert decision.escalated and decision.answered_by == HOST
    assert [t.model for t in decision.tiers][1:] == ["qwen2.5-coder-0.5b-instruct", HOST]
    first, middle, last = decision.tiers
    assert first.backend == middle.backend == "llama.cpp"
    for scored in (first, middle):
        assert scored.escalated and scored.confidence is not None and 0 < scored.confidence < 1
        assert scored.completion_tokens and scored.completion_tokens > 0
    assert last.backend == "litellm" and last.error is None and response.text.strip()
    assert "sk-cascade-test" not in str(decision.model_dump())

    chunks = list(router.stream("Name a primary colour."))
    final = chunks[-1].response
    assert final is not None and [t.model for t in final.decision.tiers][-1] == HOST
    assert "".join(c.text for c in chunks) == final.text


def test_a_confident_middle_tier_keeps_the_request(host_url: str) -> None:
    router = _router(host_url, Tier(MIDDLE, threshold=0.0))
    decision = router.route("What is 2 + 2? Reply with the number.").decision
    assert decision.answered_by == "qwen2.5-coder-0.5b-instruct"
    assert len(decision.tiers) == 2 and not decision.tiers[1].escalated
    assert decision.tiers[1].confidence is not None
