"""RoutingDecisionEvent and spans through LlamaIndex's instrumentation dispatcher."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.span_handlers import SimpleSpanHandler

from confroute.errors import EscalationError
from llamaindex_confroute import ConfRouteLLM, RoutingDecisionEvent, routing_decision
from tests.fakes import ScriptedLocalModel, ScriptedProvider


class Recorder(BaseEventHandler):
    events: list[BaseEvent] = Field(default_factory=list)

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)

    @property
    def decisions(self) -> list[RoutingDecisionEvent]:
        return [e for e in self.events if isinstance(e, RoutingDecisionEvent)]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    root = get_dispatcher()
    handler = Recorder(events=[])
    root.add_event_handler(handler)
    yield handler
    root.event_handlers.remove(handler)


@pytest.fixture
def spans() -> Iterator[SimpleSpanHandler]:
    root = get_dispatcher()
    handler = SimpleSpanHandler()
    root.add_span_handler(handler)
    yield handler
    root.span_handlers.remove(handler)


@pytest.fixture
def llm(scripted_slm: ScriptedLocalModel, provider: ScriptedProvider) -> ConfRouteLLM:
    return ConfRouteLLM(scripted_slm, "scripted/strong", max_retries=0, max_tokens=16)


def _messages(question: str) -> list[ChatMessage]:
    return [ChatMessage(role=MessageRole.USER, content=question)]


def _sync_calls(llm: ConfRouteLLM) -> dict[str, Callable[[str], Any]]:
    return {
        "chat": lambda q: llm.chat(_messages(q)),
        "complete": lambda q: llm.complete(q),
        "stream_chat": lambda q: list(llm.stream_chat(_messages(q)))[-1],
        "stream_complete": lambda q: list(llm.stream_complete(q))[-1],
    }


def _async_calls(llm: ConfRouteLLM) -> dict[str, Callable[[str], Awaitable[Any]]]:
    async def astream_chat(q: str) -> Any:
        return [c async for c in await llm.astream_chat(_messages(q))][-1]

    async def astream_complete(q: str) -> Any:
        return [c async for c in await llm.astream_complete(q)][-1]

    return {
        "achat": lambda q: llm.achat(_messages(q)),
        "acomplete": lambda q: llm.acomplete(q),
        "astream_chat": astream_chat,
        "astream_complete": astream_complete,
    }


@pytest.mark.parametrize("question,escalated", [("sure?", False), ("unsure?", True)])
async def test_one_event_per_call_with_the_decision(
    llm: ConfRouteLLM, recorder: Recorder, question: str, escalated: bool
) -> None:
    responses: dict[str, Any] = {}
    for name, call in _sync_calls(llm).items():
        responses[name] = call(question)
    for name, acall in _async_calls(llm).items():
        responses[name] = await acall(question)
    events = recorder.decisions
    assert len(events) == len(responses) == 8
    for event, (name, response) in zip(events, responses.items(), strict=True):
        decision = routing_decision(response)
        assert event.decision.id == decision.id, name
        assert event.decision == decision, name
        assert event.escalated is escalated
        assert event.reason == ("low_confidence" if escalated else "confident")
        assert event.confidence == pytest.approx(decision.confidence)
        assert event.decision.local_model == "scripted-slm"
        assert event.decision.answered_by == ("scripted/strong" if escalated else "scripted-slm")
        assert event.class_name() == "RoutingDecisionEvent"
        assert event.model_dump()["decision"]["escalated"] is escalated


def test_event_sits_in_the_chat_span_between_start_and_end(
    llm: ConfRouteLLM, recorder: Recorder, spans: SimpleSpanHandler
) -> None:
    llm.chat(_messages("unsure?"))
    names = [type(e).__name__ for e in recorder.events]
    assert names == ["LLMChatStartEvent", "RoutingDecisionEvent", "LLMChatEndEvent"]
    [chat_span] = [s for s in spans.completed_spans if s.id_.startswith("ConfRouteLLM.chat-")]
    assert recorder.decisions[0].span_id == chat_span.id_


def test_local_generation_and_escalation_spans_nest_in_the_call(
    llm: ConfRouteLLM, spans: SimpleSpanHandler
) -> None:
    llm.chat(_messages("unsure?"))
    by_name = {s.id_.split("-")[0]: s for s in spans.completed_spans}
    chat = by_name["ConfRouteLLM.chat"]
    assert by_name["InstrumentedConfRouter.local_generation"].parent_id == chat.id_
    assert by_name["InstrumentedEscalation.complete"].parent_id == chat.id_
    assert spans.dropped_spans == []


async def test_async_and_streamed_escalations_have_spans(
    llm: ConfRouteLLM, spans: SimpleSpanHandler
) -> None:
    await llm.achat(_messages("unsure?"))
    list(llm.stream_chat(_messages("unsure?")))
    [c async for c in await llm.astream_chat(_messages("unsure?"))]
    names = [s.id_.split("-")[0] for s in spans.completed_spans]
    for expected in (
        "InstrumentedEscalation.acomplete",
        "InstrumentedEscalation.stream",
        "InstrumentedEscalation.astream",
    ):
        assert names.count(expected) == 1, names
    assert names.count("InstrumentedConfRouter.local_generation") == 3
    assert spans.dropped_spans == []


def test_confident_call_has_no_escalation_span(llm: ConfRouteLLM, spans: SimpleSpanHandler) -> None:
    llm.chat(_messages("sure?"))
    names = [s.id_.split("-")[0] for s in spans.completed_spans]
    assert "InstrumentedConfRouter.local_generation" in names
    assert not any(n.startswith("InstrumentedEscalation") for n in names)


def test_failed_escalation_is_reported_once_before_raising(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider, recorder: Recorder
) -> None:
    llm = ConfRouteLLM(scripted_slm, "scripted/strong", max_retries=0, on_escalation_error="raise")
    provider.answers = [RuntimeError("provider down")]
    with pytest.raises(EscalationError):
        llm.chat(_messages("unsure?"))
    [event] = recorder.decisions
    assert event.escalated is True
    assert event.decision.error is not None and "provider down" in event.decision.error
    assert event.decision.answered_by == "scripted-slm"


def test_router_without_the_adapter_dispatches_nothing(
    llm: ConfRouteLLM, scripted_slm: ScriptedLocalModel, recorder: Recorder
) -> None:
    from confroute.router import ConfRouter

    ConfRouter(scripted_slm, None).route("sure?")
    assert recorder.decisions == []
