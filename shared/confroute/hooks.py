"""The router's hook points: what adapters, serving and users may plug into a routing call.

Three kinds, each a plain callable or a small Protocol, passed to
:class:`~confroute.router.ConfRouter` (``hooks=``, ``observers=``, ``tracers=``) or added to a
copy with :meth:`~confroute.router.ConfRouter.with_hooks`:

- :data:`DecisionHook`: receives every :class:`~confroute.decision.RoutingDecision` (kept,
  escalated, failed). The LangChain adapter turns it into a callback event, the LlamaIndex
  adapter into an instrumentation event.
- :data:`ScoreObserver`: sees each scored local answer before the decision is made and may
  replace the policy's :class:`~confroute.policies.Verdict` (early escalation escalates an
  answer it stopped; a conversation-aware policy could keep a conversation on one model).
- :class:`Tracer`: opens a span around local generation and one around each escalation call
  (LlamaIndex spans, OpenTelemetry, timing).

A hook that raises is logged and ignored (the answer is returned regardless), except a tracer's
``__enter__``, which is the tracer's own contract to keep.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from confroute.decision import DecisionReason, RoutingDecision
from confroute.generation import Generation
from confroute.messages import Message

if TYPE_CHECKING:
    from confroute.policies import Verdict
    from confroute.tools import ParsedToolCalls

__all__ = [
    "DecisionHook",
    "EscalationCall",
    "ScoreObserver",
    "ScoredAnswer",
    "Tracer",
    "spans",
]

DecisionHook = Callable[[RoutingDecision], None]
"""Called once with every routing decision (adapters turn it into framework callbacks)."""

EscalationCall = Literal["complete", "acomplete", "stream", "astream"]
"""Which escalation call a :meth:`Tracer.escalation` span wraps."""


@dataclass(frozen=True)
class ScoredAnswer:
    """A local answer (or its absence) with the policy's verdict on it, before the decision.

    Attributes:
        messages: The conversation as the user sent it.
        generation: The local answer; None when the prompt did not fit the local model.
        confidence: The primary estimator's confidence (None when it could not be computed).
        verdict: The policy's verdict (or an observer's replacement).
        reason: Why it is kept or escalated (``verdict.reason``, or ``local_only`` when it
            would escalate but no strong model is configured).
        local_latency_s: Time spent generating and scoring the local answer.
        parsed: The local answer's tool calls, when tools were offered.
        confidences: Every chosen estimator's confidence, by name.
        local_error: Why the local backend gave no answer (its server failed), else None.
        decided_by: Name of the estimator whose confidence is :attr:`confidence` (the tool
            estimator for a tool-call answer; "" when nothing was scored).
    """

    messages: list[Message]
    generation: Generation | None
    confidence: float | None
    verdict: Verdict
    reason: DecisionReason
    local_latency_s: float
    parsed: ParsedToolCalls | None = None
    confidences: dict[str, float | None] = field(default_factory=dict)
    local_error: str | None = None
    decided_by: str = ""

    @property
    def escalate(self) -> bool:
        """Whether the verdict is to escalate."""
        return self.verdict.escalate

    @property
    def threshold(self) -> float:
        """The threshold the verdict compared the confidence with."""
        return self.verdict.threshold

    @property
    def estimator(self) -> str:
        """Name of the estimator that decided: :attr:`decided_by`, else the primary one.

        "" when nothing was scored (the prompt did not fit).
        """
        return self.decided_by or next(iter(self.confidences), "")


ScoreObserver = Callable[[ScoredAnswer], "Verdict | None"]
"""Sees each scored answer; returns a :class:`~confroute.policies.Verdict` to replace the
policy's, or None to keep it. Observers run in order, each seeing the previous one's verdict."""


@runtime_checkable
class Tracer(Protocol):
    """Spans around the two expensive steps of a routing call.

    Each method returns a context manager entered just before the work and exited after it;
    an exception from the work (or a stream abandoned by its reader, as ``GeneratorExit``)
    reaches the context manager's ``__exit__``.
    """

    def local_generation(self, conversations: int) -> AbstractContextManager[Any]:
        """Around one batched local generation of ``conversations`` prompts."""
        ...

    def escalation(self, model: str, call: EscalationCall) -> AbstractContextManager[Any]:
        """Around one escalation call to ``model`` (retries and fallbacks included)."""
        ...


@contextmanager
def spans(
    tracers: Sequence[Tracer], open_span: Callable[[Tracer], AbstractContextManager[Any]]
) -> Iterator[None]:
    """Enter ``open_span(tracer)`` for every tracer, innermost last; exit them in reverse."""
    with ExitStack() as stack:
        for tracer in tracers:
            stack.enter_context(open_span(tracer))
        yield
