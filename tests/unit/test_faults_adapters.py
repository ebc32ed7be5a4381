"""Escalation faults seen through the LangChain and LlamaIndex adapters.

A failed escalation must still reach the framework's own reporting channel exactly once (the
LangChain custom event ``confroute_decision``, the LlamaIndex ``RoutingDecisionEvent``), also
when the policy is ``"raise"`` and also when a stream breaks after partial text.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from confroute import EscalationError
from tests.fakes import ScriptedLocalModel
from tests.faultserver import FaultServer, echo

LOCAL_TEXT = "I am not sure."


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer() as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh(server: FaultServer) -> None:
    server.reset()


@pytest.fixture(scope="module")
def slm() -> ScriptedLocalModel:
    return ScriptedLocalModel()


# -- LangChain -------------------------------------------------------------------------------


def chat_model(server: FaultServer, slm: ScriptedLocalModel, policy: str) -> Any:
    from langchain_confroute import ChatConfRoute

    return ChatConfRoute(
        local_model=slm,
        strong_model="openai/primary",
        api_base=server.base_url,
        api_key="sk-test",
        threshold=0.8,
        max_retries=0,
        on_escalation_error=policy,
    )


def decision_collector() -> Any:
    from langchain_core.callbacks import AsyncCallbackHandler

    from langchain_confroute import DECISION_EVENT

    class Collect(AsyncCallbackHandler):  # type: ignore[misc]
        def __init__(self) -> None:
            self.decisions: list[dict[str, Any]] = []

        async def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
            if name == DECISION_EVENT:
                self.decisions.append(dict(data))

    return Collect()


@pytest.mark.parametrize("fault", ["500", "429", "malformed"])
async def test_langchain_return_local_reports_the_error(
    server: FaultServer, slm: ScriptedLocalModel, fault: str
) -> None:
    server.default = fault
    llm, collector = chat_model(server, slm, "return_local"), decision_collector()
    message = await llm.ainvoke("down?", config={"callbacks": [collector]})
    assert message.content == LOCAL_TEXT
    metadata = message.response_metadata["confroute"]
    assert metadata["escalated"] and metadata["error"] and "openai/primary" in metadata["error"]
    assert [d["id"] for d in collector.decisions] == [metadata["id"]]


async def test_langchain_mid_stream_drop_raises_after_partial_text(
    server: FaultServer, slm: ScriptedLocalModel
) -> None:
    server.default = "drop"
    llm = chat_model(server, slm, "return_local")
    pieces: list[str] = []
    with pytest.raises(EscalationError):
        async for chunk in llm.astream("a long answer please"):
            pieces.append(str(chunk.content))
    partial = "".join(pieces)
    assert partial and echo("primary", "a long answer please").startswith(partial)


@pytest.mark.parametrize("streamed", [False, True])
async def test_langchain_reports_failed_escalations(
    server: FaultServer, slm: ScriptedLocalModel, streamed: bool
) -> None:
    server.default = "500"
    llm, collector = chat_model(server, slm, "raise"), decision_collector()
    config: Any = {"callbacks": [collector]}
    with pytest.raises(EscalationError):
        if streamed:
            [c async for c in llm.astream("down?", config=config)]
        else:
            await llm.ainvoke("down?", config=config)
    assert len(collector.decisions) == 1 and collector.decisions[0]["error"]


# -- LlamaIndex ------------------------------------------------------------------------------


def llamaindex_events() -> tuple[Any, list[Any]]:
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler

    from llamaindex_confroute import RoutingDecisionEvent

    events: list[Any] = []

    class Collect(BaseEventHandler):
        def handle(self, event: Any, **kwargs: Any) -> None:
            if isinstance(event, RoutingDecisionEvent):
                events.append(event.decision)

    handler = Collect()
    get_dispatcher().add_event_handler(handler)
    return handler, events


def remove_handler(handler: Any) -> None:
    from llama_index.core.instrumentation import get_dispatcher

    get_dispatcher().event_handlers.remove(handler)


@pytest.mark.parametrize("policy", ["return_local", "raise"])
@pytest.mark.parametrize("streamed", [False, True])
async def test_llamaindex_reports_every_failed_escalation_once(
    server: FaultServer, slm: ScriptedLocalModel, policy: str, streamed: bool
) -> None:
    from llamaindex_confroute import ConfRouteLLM

    server.default = "500"
    llm = ConfRouteLLM(
        slm,
        "openai/primary",
        api_base=server.base_url,
        api_key="sk-test",
        threshold=0.8,
        max_retries=0,
        on_escalation_error=policy,
    )
    handler, events = llamaindex_events()
    try:
        try:
            if streamed:
                text = ""
                async for partial in await llm.astream_complete("down?"):
                    text = partial.text
            else:
                text = (await llm.acomplete("down?")).text
        except EscalationError as error:
            assert policy == "raise" and error.provider == "openai/primary"
        else:
            assert policy == "return_local" and text == LOCAL_TEXT
    finally:
        remove_handler(handler)
    [decision] = events
    assert decision.escalated and decision.error and "InternalServerError" in decision.error


async def test_llamaindex_mid_stream_drop_raises_after_partial_text(
    server: FaultServer, slm: ScriptedLocalModel
) -> None:
    from llamaindex_confroute import ConfRouteLLM

    server.default = "drop"
    llm = ConfRouteLLM(
        slm,
        "openai/primary",
        api_base=server.base_url,
        api_key="sk-test",
        threshold=0.8,
        max_retries=0,
    )
    handler, events = llamaindex_events()
    text = ""
    try:
        with pytest.raises(EscalationError):
            async for partial in await llm.astream_complete("a long answer please"):
                text = partial.text
    finally:
        remove_handler(handler)
    assert text and echo("primary", "a long answer please").startswith(text)
    [decision] = events
    assert decision.error and decision.attempts == 1
