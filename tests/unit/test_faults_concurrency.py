"""Load: 64 concurrent async requests, a mix of local, escalated and failed escalations.

Every prompt is distinct and its answer is checkable (the SLM script answers ``local-<i>``,
the fault server echoes the question), so a response handed to the wrong caller is caught.
Run with ``-s`` to print the concurrency figure quoted in RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from confroute import ConfRouter, RoutingDecision
from tests.fakes import ScriptedLocalModel
from tests.faultserver import FaultServer, echo

N = 64
DEADLINE_S = 60.0  # a deadlock fails the test instead of hanging CI
PEAK_MEMORY_BOUND = 64 * 2**20  # bytes traced by tracemalloc while the 64 requests run
LOCAL_TEXT = "I am not sure."
CANARY = "sk-canary-load-55aa33cc"


def question(i: int) -> str:
    if i % 2 == 0:
        return f"q{i}: kept local"
    if i % 8 == 1:
        return f"q{i}: escalated to a failing server [[fault:500]]"
    return f"q{i}: escalated"


def expected(i: int) -> str:
    if i % 2 == 0:
        return f"local-{i}"
    if i % 8 == 1:
        return LOCAL_TEXT  # the escalation failed: the marked local answer
    return echo("primary", question(i))


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer() as running:
        yield running


@pytest.fixture(scope="module")
def slm() -> ScriptedLocalModel:
    return ScriptedLocalModel(
        script={question(i): (f"local-{i}", (0.99, 0.98, 0.97)) for i in range(0, N, 2)}
    )


def make_router(server: FaultServer, slm: ScriptedLocalModel) -> tuple[ConfRouter, list[Any]]:
    seen: list[RoutingDecision] = []
    router = ConfRouter(
        slm,
        "openai/primary",
        threshold=0.8,
        api_base=server.base_url,
        api_key=CANARY,
        timeout=20.0,
        max_retries=0,
        hooks=[seen.append],
    )
    return router, seen


async def run_load(
    ask: Callable[[str], Awaitable[tuple[str, dict[str, Any]]]],
) -> tuple[list[tuple[str, dict[str, Any]]], float, int]:
    """Send the N questions at once; return answers, wall time and traced peak memory."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        answers = await asyncio.wait_for(
            asyncio.gather(*(ask(question(i)) for i in range(N))), DEADLINE_S
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return list(answers), time.perf_counter() - started, peak


def check(
    label: str,
    answers: list[tuple[str, dict[str, Any]]],
    decisions: list[Any],
    wall: float,
    peak: int,
) -> None:
    assert [text for text, _ in answers] == [expected(i) for i in range(N)]
    kinds = [(d["escalated"], d["error"] is not None) for _, d in answers]
    assert kinds.count((False, False)) == N // 2
    assert kinds.count((True, False)) == N // 2 - N // 8
    assert kinds.count((True, True)) == N // 8
    ids = [d["id"] for _, d in answers]
    assert len(set(ids)) == N  # one decision per request ...
    assert sorted(_id(d) for d in decisions) == sorted(ids)  # ... each reported once
    assert peak < PEAK_MEMORY_BOUND
    print(
        f"\nconcurrency[{label}]: {N} requests, wall {wall:.2f} s, errors 0, "
        f"decisions {len(decisions)}, traced peak {peak / 2**20:.1f} MiB"
    )


def _id(decision: Any) -> str:
    return str(decision.id if isinstance(decision, RoutingDecision) else decision["id"])


async def test_64_concurrent_aroute(server: FaultServer, slm: ScriptedLocalModel) -> None:
    router, seen = make_router(server, slm)

    async def ask(prompt: str) -> tuple[str, dict[str, Any]]:
        response = await router.aroute(prompt)
        return response.text, response.decision.model_dump()

    answers, wall, peak = await run_load(ask)
    check("ConfRouter.aroute", answers, seen, wall, peak)
    escalated = {r.messages[-1]["content"] for r in server.requests}
    assert len(escalated) == N // 2 and len(server.requests) == N // 2
    assert all(r.authorization == f"Bearer {CANARY}" for r in server.requests)


async def test_64_concurrent_chat_confroute(server: FaultServer, slm: ScriptedLocalModel) -> None:
    from langchain_core.callbacks import AsyncCallbackHandler

    from langchain_confroute import DECISION_EVENT, ChatConfRoute

    class Collect(AsyncCallbackHandler):  # type: ignore[misc]
        def __init__(self) -> None:
            self.events: list[Any] = []

        async def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
            if name == DECISION_EVENT:
                self.events.append(data)

    server.reset()
    router, seen = make_router(server, slm)
    llm = ChatConfRoute(router=router)
    collector = Collect()

    async def ask(prompt: str) -> tuple[str, dict[str, Any]]:
        message = await llm.ainvoke(prompt, config={"callbacks": [collector]})
        return str(message.content), dict(message.response_metadata["confroute"])

    answers, wall, peak = await run_load(ask)
    check("ChatConfRoute.ainvoke", answers, seen, wall, peak)
    assert sorted(_id(e) for e in collector.events) == sorted(_id(d) for d in seen)


async def test_64_concurrent_confroute_llm(server: FaultServer, slm: ScriptedLocalModel) -> None:
    from llamaindex_confroute import ConfRouteLLM

    server.reset()
    router, seen = make_router(server, slm)
    llm = ConfRouteLLM(router=router)

    async def ask(prompt: str) -> tuple[str, dict[str, Any]]:
        response = await llm.acomplete(prompt)
        return response.text, dict(response.additional_kwargs["confroute"])

    answers, wall, peak = await run_load(ask)
    check("ConfRouteLLM.acomplete", answers, seen, wall, peak)
