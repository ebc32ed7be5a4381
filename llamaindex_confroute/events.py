"""Routing decisions as LlamaIndex instrumentation: one event per decision, spans around the work.

Every decision the adapter's router makes is dispatched as a :class:`RoutingDecisionEvent`
through the instrumentation dispatcher, so any ``BaseEventHandler`` added to the root dispatcher
sees it. Local generation and escalation run inside spans, so span handlers can time them apart.
"""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.dispatcher import (  # type: ignore[attr-defined]
    active_instrument_tags,
)
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.span import (  # type: ignore[attr-defined]
    SpanDropEvent,
)
from llama_index.core.instrumentation.span import active_span_id

from confroute.decision import RoutingDecision
from confroute.hooks import EscalationCall
from confroute.router import ConfRouter

__all__ = [
    "InstrumentationTracer",
    "RoutingDecisionEvent",
    "dispatch_decision",
    "instrument",
    "tracer",
]

logger = logging.getLogger(__name__)

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


class InstrumentationTracer:
    """A :class:`~confroute.hooks.Tracer` that opens a LlamaIndex dispatcher span per step.

    Local generation runs in a span named ``InstrumentedConfRouter.local_generation`` and each
    escalation call in one named ``InstrumentedEscalation.<call>`` (``complete``,
    ``acomplete``, ``stream``, ``astream``; a streamed one lasts until the stream ends). Each
    span is a child of the span active when it opens (the ``ConfRouteLLM.chat`` span, say) and
    is the active span while it is open, so events dispatched inside it belong to it.
    """

    def local_generation(self, conversations: int) -> AbstractContextManager[None]:
        """A span around one batched local generation of ``conversations`` prompts."""
        return self._span("InstrumentedConfRouter.local_generation", conversations=conversations)

    def escalation(self, model: str, call: EscalationCall) -> AbstractContextManager[None]:
        """A span around one escalation call to ``model``."""
        return self._span(f"InstrumentedEscalation.{call}", model=model)

    @contextmanager
    def _span(self, name: str, **arguments: Any) -> Iterator[None]:
        id_ = f"{name}-{uuid.uuid4()}"
        bound_args = inspect.Signature(
            [inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY) for key in arguments]
        ).bind(**arguments)
        dispatcher.span_enter(
            id_=id_,
            bound_args=bound_args,
            instance=self,
            parent_id=active_span_id.get(),
            tags=active_instrument_tags.get(),
        )
        token = active_span_id.set(id_)
        try:
            yield
        except BaseException as error:
            # A failure, or a stream abandoned by its reader (GeneratorExit).
            dispatcher.event(SpanDropEvent(span_id=id_, err_str=str(error)))
            dispatcher.span_drop(id_=id_, bound_args=bound_args, instance=self, err=error)
            raise
        else:
            dispatcher.span_exit(id_=id_, bound_args=bound_args, instance=self, result=None)
        finally:
            try:
                active_span_id.reset(token)
            except ValueError:
                # A stream closed from another context (by the garbage collector, say).
                logger.debug("Span %s ended in another context; active span not reset.", id_)


tracer = InstrumentationTracer()
"""The tracer :func:`instrument` adds (it holds no state; one serves every router)."""


def instrument(router: ConfRouter) -> ConfRouter:
    """A copy of ``router`` that reports to LlamaIndex instrumentation.

    The copy (:meth:`ConfRouter.with_hooks`) shares the router's local model, estimator, policy
    and escalation; it adds :data:`tracer`'s spans around local generation and escalation and
    :func:`dispatch_decision`, which dispatches a :class:`RoutingDecisionEvent` per decision.
    The hooks the router has now are kept (an instrumented router gets neither twice); the
    original router is not changed.
    """
    return router.with_hooks(hooks=[dispatch_decision], tracers=[tracer])
