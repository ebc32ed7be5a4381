"""Routing decisions as LlamaIndex instrumentation: one event per decision, spans around the work.

Every decision the adapter's router makes is dispatched as a :class:`RoutingDecisionEvent`
through the instrumentation dispatcher, so any ``BaseEventHandler`` added to the root dispatcher
sees it. Local generation and escalation run inside spans, so span handlers can time them apart.
"""

from __future__ import annotations

import copy
import inspect
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.dispatcher import (  # type: ignore[attr-defined]
    active_instrument_tags,
)
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.span import active_span_id

from confroute.decision import RoutingDecision
from confroute.escalation import Escalation, EscalationResult, StreamDelta
from confroute.generation import Generation
from confroute.local import GenerationConfig
from confroute.messages import Message
from confroute.router import ConfRouter

__all__ = ["InstrumentedEscalation", "RoutingDecisionEvent", "instrument"]

dispatcher = get_dispatcher(__name__)


class RoutingDecisionEvent(BaseEvent):
    """Dispatched once for every routing decision made by a :class:`ConfRouteLLM`.

    Example:
        >>> from llama_index.core.instrumentation import get_dispatcher
        >>> from llama_index.core.instrumentation.event_handlers import BaseEventHandler
        >>> class CountEscalations(BaseEventHandler):
        ...     escalations: int = 0
        ...     def handle(self, event, **kwargs):
        ...         if isinstance(event, RoutingDecisionEvent) and event.escalated:
        ...             self.escalations += 1
        >>> get_dispatcher().add_event_handler(CountEscalations())  # doctest: +SKIP
    """

    decision: RoutingDecision
    """The full decision: confidence, threshold, reason, models, latencies, tokens, cost."""

    @classmethod
    def class_name(cls) -> str:
        """Name of the event class."""
        return "RoutingDecisionEvent"

    @property
    def escalated(self) -> bool:
        """Whether the request was sent to the strong model."""
        return self.decision.escalated

    @property
    def confidence(self) -> float | None:
        """Confidence of the local answer (None when it could not be computed)."""
        return self.decision.confidence

    @property
    def reason(self) -> str:
        """Why the request was escalated or kept local."""
        return self.decision.reason


def dispatch_decision(decision: RoutingDecision) -> None:
    """Router hook: dispatch one :class:`RoutingDecisionEvent` in the current span."""
    dispatcher.event(RoutingDecisionEvent(decision=decision))


class _StreamSpan:
    """A span for a streamed escalation, whose body runs after the call that made it returned.

    It ends when the delta carrying the result arrives (the router stops reading there), or is
    dropped when the stream fails or is abandoned before.
    """

    def __init__(self, name: str, instance: object, bound_args: inspect.BoundArguments) -> None:
        self.id_ = f"{name}-{uuid.uuid4()}"
        self.instance, self.bound_args = instance, bound_args
        self.open = True
        dispatcher.span_enter(
            id_=self.id_,
            bound_args=bound_args,
            instance=instance,
            parent_id=active_span_id.get(),
            tags=active_instrument_tags.get(),
        )

    def see(self, delta: StreamDelta) -> StreamDelta:
        if delta.result is not None and self.open:
            self.open = False
            dispatcher.span_exit(
                id_=self.id_, bound_args=self.bound_args, instance=self.instance, result=None
            )
        return delta

    def drop(self, error: BaseException) -> None:
        if self.open:
            self.open = False
            dispatcher.span_drop(
                id_=self.id_, bound_args=self.bound_args, instance=self.instance, err=error
            )


class InstrumentedEscalation(Escalation):
    """An :class:`Escalation` whose calls to the strong model each run inside a span."""

    def __init__(self, inner: Escalation) -> None:
        """Wrap ``inner``; every setting (model, key, retries) stays the inner one's."""
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        """Read settings (``model``, ``fallbacks``, ...) from the wrapped escalation."""
        return getattr(self.__dict__["inner"], name)

    def __repr__(self) -> str:
        """The wrapped escalation's repr (never a key)."""
        return repr(self.inner)

    @dispatcher.span
    def complete(self, messages: Sequence[Mapping[str, Any]], **kwargs: Any) -> EscalationResult:
        """Ask the strong model (see :meth:`Escalation.complete`)."""
        return self.inner.complete(messages, **kwargs)

    @dispatcher.span
    async def acomplete(
        self, messages: Sequence[Mapping[str, Any]], **kwargs: Any
    ) -> EscalationResult:
        """Async form of :meth:`complete`."""
        return await self.inner.acomplete(messages, **kwargs)

    def stream(self, messages: Sequence[Mapping[str, Any]], **kwargs: Any) -> Iterator[StreamDelta]:
        """Stream from the strong model; the span lasts until the stream ends."""
        span = _StreamSpan(
            "InstrumentedEscalation.stream", self, inspect.signature(self.stream).bind(messages)
        )
        try:
            for delta in self.inner.stream(messages, **kwargs):
                yield span.see(delta)
        except BaseException as error:
            span.drop(error)
            raise

    async def astream(
        self, messages: Sequence[Mapping[str, Any]], **kwargs: Any
    ) -> AsyncIterator[StreamDelta]:
        """Async form of :meth:`stream`."""
        span = _StreamSpan(
            "InstrumentedEscalation.astream", self, inspect.signature(self.astream).bind(messages)
        )
        try:
            async for delta in self.inner.astream(messages, **kwargs):
                yield span.see(delta)
        except BaseException as error:
            span.drop(error)
            raise


class InstrumentedRouter(ConfRouter):
    """A :class:`ConfRouter` whose local generation runs inside a span.

    Built by :func:`instrument`; not meant to be constructed directly.
    """

    def _generate(
        self,
        conversations: list[list[Message]],
        config: GenerationConfig,
        tools: Sequence[Mapping[str, Any]] | None,
    ) -> tuple[list[Generation | None], float]:
        return self.local_generation(conversations, config, tools)

    @dispatcher.span
    def local_generation(
        self,
        conversations: list[list[Message]],
        config: GenerationConfig,
        tools: Sequence[Mapping[str, Any]] | None,
    ) -> tuple[list[Generation | None], float]:
        """Generate with the local model (one batch) inside a span."""
        return super()._generate(conversations, config, tools)


_classes: dict[type[ConfRouter], type[ConfRouter]] = {}


def _instrumented_class(cls: type[ConfRouter]) -> type[ConfRouter]:
    """``cls`` with :class:`InstrumentedRouter`'s spans in front (made once per class)."""
    if issubclass(cls, InstrumentedRouter):
        return cls
    if cls not in _classes:
        _classes[cls] = type(f"Instrumented{cls.__name__}", (InstrumentedRouter, cls), {})
    return _classes[cls]


def instrument(router: ConfRouter) -> ConfRouter:
    """A copy of ``router`` that reports to LlamaIndex instrumentation.

    The copy shares the router's local model, estimator, policy and escalation settings; it
    adds spans around local generation and escalation and a hook that dispatches a
    :class:`RoutingDecisionEvent` per decision. The hooks the router has now are kept; the
    original router is not changed.
    """
    instrumented = copy.copy(router)
    instrumented.__class__ = _instrumented_class(type(router))
    if router.escalation is not None and not isinstance(router.escalation, InstrumentedEscalation):
        instrumented.escalation = InstrumentedEscalation(router.escalation)
    instrumented.hooks = [h for h in router.hooks if h is not dispatch_decision]
    instrumented.hooks.append(dispatch_decision)
    return instrumented
