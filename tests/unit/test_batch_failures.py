"""Batches where one item fails, and streams abandoned by their reader (issue 19, items 3-4).

A batch keeps every finished answer and reports every decision once, whatever one item does:
``ConfRouter.route_batch(return_exceptions=True)`` hands back each item's answer or exception,
and without it the first failure is raised only after every item was finished and reported.
``ChatConfRoute.batch`` routes the batch once: one decision, one local generation for the batch
and one upstream call per escalated input, also when one input fails under ``"raise"``. A
stream closed after its first chunk reports exactly one decision on every path.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest

from confroute import ConfRouter, EscalationError, RoutedResponse, RoutingDecision
from tests.fakes import ScriptedLocalModel
from tests.faultserver import FaultServer

BATCH = ["a", "b [[fault:500]]", "c", "sure?"]
"""Three unsure inputs (one of them fails upstream) and one the local model keeps."""


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer() as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh(server: FaultServer) -> None:
    server.reset()


@pytest.fixture
def slm() -> ScriptedLocalModel:
    return ScriptedLocalModel(
        default=("x", (0.2,) * 3), script={"sure?": ("391", (0.99, 0.98, 0.97))}
    )


def make_router(
    server: FaultServer, slm: ScriptedLocalModel, seen: list[RoutingDecision], policy: str
) -> ConfRouter:
    return ConfRouter(
        slm,
        "openai/primary",
        threshold=0.5,
        api_base=server.base_url,
        api_key="sk-test",
        max_retries=0,
        on_escalation_error=policy,
        hooks=[seen.append],
    )


def check_batch_counts(
    server: FaultServer, slm: ScriptedLocalModel, seen: list[RoutingDecision]
) -> None:
    """Four decisions, one local generation of four prompts, three upstream calls."""
    assert len(seen) == 4
    assert slm.calls == [4]
    assert len(server.requests) == 3
    assert sum(d.error is not None for d in seen) == 1


# -- ConfRouter.route_batch / aroute_batch ---------------------------------------------------


def check_items(results: list[Any]) -> None:
    assert [type(r) for r in results] == [
        RoutedResponse,
        EscalationError,
        RoutedResponse,
        RoutedResponse,
    ]
    assert results[0].decision.escalated and results[0].decision.error is None
    assert results[3].text == "391" and not results[3].decision.escalated
    assert results[1].decision is not None and results[1].decision.error


def test_route_batch_returns_each_items_answer_or_exception(
    server: FaultServer, slm: ScriptedLocalModel
) -> None:
    seen: list[RoutingDecision] = []
    results = make_router(server, slm, seen, "raise").route_batch(BATCH, return_exceptions=True)
    check_items(results)
    check_batch_counts(server, slm, seen)


async def test_aroute_batch_returns_each_items_answer_or_exception(
    server: FaultServer, slm: ScriptedLocalModel
) -> None:
    seen: list[RoutingDecision] = []
    router = make_router(server, slm, seen, "raise")
    check_items(await router.aroute_batch(BATCH, return_exceptions=True))
    check_batch_counts(server, slm, seen)


@pytest.mark.parametrize("order", [BATCH, ["b [[fault:500]]", "sure?"]])
def test_route_batch_raises_after_every_item_was_reported(
    server: FaultServer, slm: ScriptedLocalModel, order: list[str]
) -> None:
    seen: list[RoutingDecision] = []
    with pytest.raises(EscalationError) as info:
        make_router(server, slm, seen, "raise").route_batch(order)
    assert len(seen) == len(order)  # the items after the failing one were reported too
    assert info.value.decision is not None and info.value.decision.error


async def test_aroute_batch_raises_after_every_item_finished(
    server: FaultServer, slm: ScriptedLocalModel
) -> None:
    seen: list[RoutingDecision] = []
    server.queue.extend(["500", "hang"])  # the second escalation is still running
    server.hang_s = 0.5
    with pytest.raises(EscalationError):
        await make_router(server, slm, seen, "raise").aroute_batch(["a", "c"])
    assert len(seen) == 2


# -- ChatConfRoute.batch / abatch ------------------------------------------------------------


def chat_model(router: ConfRouter) -> Any:
    from langchain_confroute import ChatConfRoute

    return ChatConfRoute(router=router)


class Events:
    """Collects the decision events and the start/end callbacks of each input."""

    def __init__(self) -> None:
        from langchain_core.callbacks import BaseCallbackHandler

        from langchain_confroute import DECISION_EVENT

        outer = self
        self.decisions: list[dict[str, Any]] = []
        self.starts = 0
        self.ends = 0
        self.errors = 0

        class Handler(BaseCallbackHandler):  # type: ignore[misc]
            def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
                outer.starts += 1

            def on_llm_end(self, *args: Any, **kwargs: Any) -> None:
                outer.ends += 1

            def on_llm_error(self, *args: Any, **kwargs: Any) -> None:
                outer.errors += 1

            def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
                if name == DECISION_EVENT:
                    outer.decisions.append(dict(data))

        self.handler = Handler()


def check_messages(messages: list[Any], events: Events) -> None:
    assert isinstance(messages[1], EscalationError)
    assert messages[3].content == "391"
    assert all(m.response_metadata["confroute"] for i, m in enumerate(messages) if i != 1)
    assert (events.starts, events.ends, events.errors, len(events.decisions)) == (4, 3, 1, 4)


def test_langchain_batch_with_a_failing_input_routes_each_input_once(
    server: FaultServer, slm: ScriptedLocalModel
) -> None:
    seen: list[RoutingDecision] = []
    llm, events = chat_model(make_router(server, slm, seen, "raise")), Events()
    messages = llm.batch(BATCH, config={"callbacks": [events.handler]}, return_exceptions=True)
    check_messages(messages, events)
    check_batch_counts(server, slm, seen)


async def test_langchain_abatch_with_a_failing_input_routes_each_input_once(
    server: FaultServer, slm: ScriptedLocalModel
) -> None:
    seen: list[RoutingDecision] = []
    llm, events = chat_model(make_router(server, slm, seen, "raise")), Events()
    messages = await llm.abatch(
        BATCH, config={"callbacks": [events.handler]}, return_exceptions=True
    )
    check_messages(messages, events)
    check_batch_counts(server, slm, seen)


def test_langchain_batch_raises_the_failure_without_rerunning(
    server: FaultServer, slm: ScriptedLocalModel
) -> None:
    seen: list[RoutingDecision] = []
    llm = chat_model(make_router(server, slm, seen, "raise"))
    with pytest.raises(EscalationError):
        llm.batch(BATCH)
    check_batch_counts(server, slm, seen)


# -- abandoned streams -----------------------------------------------------------------------


def check_abandoned(seen: list[RoutingDecision]) -> None:
    [decision] = seen
    assert decision.escalated and decision.remote_model == "openai/primary"
    assert decision.error is not None and "closed by its reader" in decision.error


async def settle() -> None:
    """Let the event loop run the finalizers of dropped async generators."""
    gc.collect()
    for _ in range(20):
        await asyncio.sleep(0)


def test_router_stream_dropped_after_the_first_chunk_reports_once(
    server: FaultServer, slm: ScriptedLocalModel
) -> None:
    seen: list[RoutingDecision] = []
    stream = make_router(server, slm, seen, "return_local").stream("q")
    assert next(iter(stream)).text
    del stream
    gc.collect()
    check_abandoned(seen)


async def test_router_astream_closed_after_the_first_chunk_reports_once(
    server: FaultServer, slm: ScriptedLocalModel
) -> None:
    seen: list[RoutingDecision] = []
    stream = make_router(server, slm, seen, "return_local").astream("q")
    assert (await stream.__anext__()).text
    await stream.aclose()
    check_abandoned(seen)


async def test_router_astream_dropped_after_the_first_chunk_reports_once(
    server: FaultServer, slm: ScriptedLocalModel
) -> None:
    seen: list[RoutingDecision] = []
    stream = make_router(server, slm, seen, "return_local").astream("q")
    assert (await stream.__anext__()).text
    del stream
    await settle()
    check_abandoned(seen)


def test_langchain_stream_abandoned_after_the_first_chunk_reports_once(
    server: FaultServer, slm: ScriptedLocalModel
) -> None:
    seen: list[RoutingDecision] = []
    llm = chat_model(make_router(server, slm, seen, "return_local"))
    for chunk in llm.stream("q"):
        assert chunk.content
        break
    gc.collect()
    check_abandoned(seen)


async def test_langchain_astream_abandoned_after_the_first_chunk_reports_once(
    server: FaultServer, slm: ScriptedLocalModel
) -> None:
    seen: list[RoutingDecision] = []
    llm = chat_model(make_router(server, slm, seen, "return_local"))
    async for chunk in llm.astream("q"):
        assert chunk.content
        break
    await settle()
    check_abandoned(seen)


async def test_langchain_astream_closed_after_the_first_chunk_reports_once(
    server: FaultServer, slm: ScriptedLocalModel
) -> None:
    seen: list[RoutingDecision] = []
    stream = chat_model(make_router(server, slm, seen, "return_local")).astream("q")
    assert (await stream.__anext__()).content
    await stream.aclose()
    await settle()  # LangChain does not close _astream: its finalizer closes the router's
    check_abandoned(seen)
