"""The second half of a routing call: the decision record, the hooks, and the returned answer.

:class:`Outcome` turns a scored answer plus what the strong model did (an answer, an error, or
nothing) into the :class:`~confroute.decision.RoutingDecision` and the
:class:`~confroute.response.RoutedResponse`. :class:`StreamPlan` holds the decisions of one
streamed request, so that the router's sync and async stream loops only feed it what arrives.
:class:`BatchFinish` answers each item of a batch on its own: a failing item becomes its
exception, never the batch's. Only its ``run_all`` / ``arun_all`` drivers touch a thread pool
or the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from confroute.decision import RoutingDecision, TierAttempt
from confroute.errors import ContextOverflowError, EscalationError, LocalBackendError
from confroute.hooks import DecisionHook, ScoredAnswer, Tracer, spans
from confroute.response import RoutedChunk, RoutedResponse
from confroute.target import EscalationResult, EscalationTarget, StreamDelta

__all__ = [
    "BatchFinish",
    "ItemResult",
    "Outcome",
    "StreamPlan",
    "settle",
]

logger = logging.getLogger(__name__)

ItemResult = RoutedResponse | Exception
"""One item of a batch: its answer, or the exception it failed with."""


ABANDONED_STREAM = "The stream was closed by its reader before the strong model's answer ended."
"""The error recorded in the decision of a streamed escalation nobody read to its end."""


@dataclass(frozen=True)
class Outcome:
    """Builds and reports decisions for one router.

    Attributes:
        estimator: Name of the primary estimator (reported when nothing was scored).
        local_model: Name of the local model.
        context_window: The local model's context window (for the overflow error).
        hooks: Decision hooks, called once per decision.
        raise_on_error: ``on_escalation_error="raise"``.
        can_escalate: Whether a strong model is configured.
        local_backend: The engine of the local model (its ``capabilities.backend``).
    """

    estimator: str
    local_model: str
    context_window: int
    hooks: Sequence[DecisionHook]
    raise_on_error: bool
    can_escalate: bool
    local_backend: str = "transformers"

    def decision(
        self,
        answer: ScoredAnswer,
        *,
        remote: EscalationResult | None = None,
        error: EscalationError | None = None,
    ) -> RoutingDecision:
        """The decision record of ``answer`` (never a secret: errors are already redacted)."""
        generation = answer.generation
        return RoutingDecision(
            estimator=answer.estimator or self.estimator,
            confidence=answer.confidence,
            threshold=answer.verdict.threshold,
            escalated=answer.verdict.escalate and self.can_escalate,
            reason=answer.reason,
            local_model=self.local_model,
            local_backend=self.local_backend,
            remote_model=(remote.model if remote else error.provider if error else None),
            answered_by=remote.model if remote is not None else self.local_model,
            local_latency_s=answer.local_latency_s,
            remote_latency_s=remote.latency_s if remote else None,
            local_prompt_tokens=generation.prompt_tokens if generation else 0,
            local_completion_tokens=generation.completion_tokens if generation else 0,
            remote_prompt_tokens=remote.prompt_tokens if remote else None,
            remote_completion_tokens=remote.completion_tokens if remote else None,
            cost_usd=remote.cost_usd if remote else None,
            attempts=remote.attempts if remote else error.attempts if error else 0,
            error=str(error) if error else answer.local_error,
            confidences=dict(answer.confidences),
            tiers=self.tiers(answer, remote.tiers if remote else error.tiers if error else []),
        )

    def tiers(self, answer: ScoredAnswer, later: Sequence[TierAttempt]) -> list[TierAttempt]:
        """The local tier followed by a cascade's ``later`` tiers (none: a two-tier route)."""
        if not later:
            return []
        generation = answer.generation
        first = TierAttempt(
            model=self.local_model,
            backend=self.local_backend,
            confidence=answer.confidence,
            threshold=answer.verdict.threshold,
            escalated=True,
            reason=answer.reason,
            latency_s=answer.local_latency_s,
            prompt_tokens=generation.prompt_tokens if generation else None,
            completion_tokens=generation.completion_tokens if generation else None,
            error=answer.local_error,
        )
        return [first, *later]

    def emit(self, decision: RoutingDecision) -> None:
        """Log the decision at DEBUG and call every hook (a hook that raises is logged)."""
        logger.debug(
            "routing decision %s: escalated=%s reason=%s confidence=%s threshold=%.3f",
            decision.id,
            decision.escalated,
            decision.reason,
            decision.confidence,
            decision.threshold,
        )
        for hook in self.hooks:
            try:
                hook(decision)
            except Exception:
                logger.exception("A decision hook raised; the answer is returned regardless.")

    def failed(self, answer: ScoredAnswer, error: EscalationError) -> EscalationError:
        """Report a failure that cannot fall back on the local answer; return the error to raise."""
        error.decision = self.decision(answer, error=error)
        self.emit(error.decision)
        return error

    def finish(
        self,
        answer: ScoredAnswer,
        remote: EscalationResult | None = None,
        error: EscalationError | None = None,
    ) -> RoutedResponse:
        """Report the decision and build the response.

        Raises:
            EscalationError: Escalation failed and the router raises on errors, or there is no
                local answer to fall back on.
            ContextOverflowError: The prompt did not fit and no strong model is configured.
        """
        decision = self.decision(answer, remote=remote, error=error)
        self.emit(decision)
        if error is not None and (self.raise_on_error or answer.generation is None):
            error.decision = decision
            raise error
        if answer.generation is None and remote is None and answer.local_error is not None:
            raise LocalBackendError(
                f"The local model {self.local_model} failed ({answer.local_error}) and no "
                "strong model is configured to answer instead.",
                model=self.local_model,
                attempts=0,
                errors=[answer.local_error],
            )
        if answer.generation is None and remote is None:
            raise ContextOverflowError(
                f"The prompt does not fit {self.local_model}'s context window of "
                f"{self.context_window} tokens and no strong model is configured. Shorten "
                "the prompt, lower max_new_tokens, or configure a strong model.",
                prompt_tokens=-1,
                context_window=self.context_window,
            )
        confidences = dict(answer.confidences)
        if remote is not None:
            return RoutedResponse(
                remote.text,
                decision,
                answer.generation,
                remote,
                list(remote.tool_calls),
                confidences,
            )
        if answer.parsed is not None and not answer.parsed.malformed:
            return RoutedResponse(
                answer.parsed.content,
                decision,
                answer.generation,
                None,
                answer.parsed.calls,
                confidences,
            )
        text = answer.generation.text if answer.generation is not None else ""
        return RoutedResponse(text, decision, answer.generation, confidences=confidences)


class StreamPlan:
    """The decisions of one streamed request; the sync and async loops only feed it.

    Exactly one decision is reported whatever happens: the kept local answer, the strong
    model's finished stream, a failure (before any text: the local answer is returned; after:
    the error is raised), or a reader that stops early (:meth:`close`).
    """

    def __init__(
        self, outcome: Outcome, answer: ScoredAnswer, escalation: EscalationTarget | None
    ) -> None:
        """Plan the stream of ``answer``, escalated to ``escalation`` when it is unsure."""
        self.outcome, self.answer = outcome, answer
        self.target = escalation if answer.verdict.escalate else None
        self.model = self.target.model if self.target is not None else ""
        self.streamed = False
        self.reported = False

    def kept(self, error: EscalationError | None = None) -> list[RoutedChunk]:
        """The local answer in one piece, then the chunk carrying the response.

        With ``error`` (a failed escalation) the decision records it; the router's
        ``on_escalation_error="raise"`` raises it instead.
        """
        self.reported = True
        response = self.outcome.finish(self.answer, error=error)
        return [RoutedChunk(text=response.text), RoutedChunk(response=response)]

    def take(self, delta: StreamDelta) -> RoutedChunk:
        """The chunk for one delta of the strong model's stream (the last carries the response)."""
        if delta.result is not None:
            self.reported = True
            return RoutedChunk(response=self.outcome.finish(self.answer, remote=delta.result))
        self.streamed = True
        return RoutedChunk(text=delta.text)

    def failed(self, error: EscalationError) -> list[RoutedChunk]:
        """The local answer when nothing was streamed yet.

        Raises:
            EscalationError: Text was already streamed (it cannot be taken back), or the router
                raises on errors.
        """
        self.reported = True
        if self.streamed:
            raise self.outcome.failed(self.answer, error)
        return self.kept(error)

    def run(self, options: Mapping[str, Any], tracers: Sequence[Tracer]) -> Iterator[RoutedChunk]:
        """The chunks of the stream: the kept answer, or the strong model's as it arrives.

        A reader that closes the iterator early still gets the decision reported.
        """
        target = self.target
        if target is None:
            yield from self.kept()
            return
        chunks: list[RoutedChunk] = []
        try:
            with spans(tracers, lambda t: t.escalation(target.model, "stream")):
                for delta in target.stream(self.answer.messages, **options):
                    yield (chunk := self.take(delta))
                    if chunk.response is not None:
                        return
        except EscalationError as error:
            chunks = self.failed(error)
        finally:
            self.close()
        yield from chunks

    async def arun(
        self, options: Mapping[str, Any], tracers: Sequence[Tracer]
    ) -> AsyncGenerator[RoutedChunk, None]:
        """Async form of :meth:`run` (an async generator: close it to report early)."""
        target = self.target
        if target is None:
            for chunk in self.kept():
                yield chunk
            return
        chunks: list[RoutedChunk] = []
        try:
            with spans(tracers, lambda t: t.escalation(target.model, "astream")):
                async for delta in target.astream(self.answer.messages, **options):
                    yield (chunk := self.take(delta))
                    if chunk.response is not None:
                        return
        except EscalationError as error:
            chunks = self.failed(error)
        finally:
            self.close()
        for chunk in chunks:
            yield chunk

    def close(self) -> None:
        """Report the decision of a stream its reader abandoned (idempotent)."""
        if self.reported:
            return
        self.reported = True
        error = EscalationError(ABANDONED_STREAM, provider=self.model, attempts=1, errors=[])
        self.outcome.failed(self.answer, error)


def settle(results: Sequence[ItemResult], return_exceptions: bool) -> list[ItemResult]:
    """The results of a finished batch, or its first failing item's exception raised.

    Every item was answered and reported before this is called, so raising loses no decision.
    """
    if not return_exceptions:
        for result in results:
            if isinstance(result, Exception):
                raise result
    return list(results)


@dataclass(frozen=True)
class BatchFinish:
    """The second half of a batch: each scored answer escalated (or kept) on its own.

    Attributes:
        outcome: Builds and reports the decisions.
        escalation: The strong model an unsure answer goes to (None: local only).
        tracers: Open a span around each escalation.
        options: The escalation options of the call (``max_tokens``, ``tools``, ...).
    """

    outcome: Outcome
    escalation: EscalationTarget | None
    tracers: Sequence[Tracer]
    options: Mapping[str, Any]

    def target(self, answer: ScoredAnswer) -> EscalationTarget | None:
        """The strong model to ask for this answer, or None to keep it local."""
        return self.escalation if answer.verdict.escalate else None

    def one(self, answer: ScoredAnswer) -> ItemResult:
        """Finish one item; its exception is returned, not raised."""
        target = self.target(answer)
        try:
            if target is None:
                return self.outcome.finish(answer)
            try:
                with spans(self.tracers, lambda t: t.escalation(target.model, "complete")):
                    remote = target.complete(answer.messages, **self.options)
            except EscalationError as error:
                return self.outcome.finish(answer, error=error)
            return self.outcome.finish(answer, remote=remote)
        except Exception as error:  # the item's failure, handed back in its place
            return error

    async def aone(self, answer: ScoredAnswer) -> ItemResult:
        """Async form of :meth:`one`."""
        target = self.target(answer)
        try:
            if target is None:
                return self.outcome.finish(answer)
            try:
                with spans(self.tracers, lambda t: t.escalation(target.model, "acomplete")):
                    remote = await target.acomplete(answer.messages, **self.options)
            except EscalationError as error:
                return self.outcome.finish(answer, error=error)
            return self.outcome.finish(answer, remote=remote)
        except Exception as error:  # the item's failure, handed back in its place
            return error

    def run_all(self, answers: Sequence[ScoredAnswer], max_concurrency: int) -> list[ItemResult]:
        """Finish every item, escalations in parallel threads (one escalation: in this one)."""
        if sum(self.target(answer) is not None for answer in answers) <= 1:
            return [self.one(answer) for answer in answers]
        with ThreadPoolExecutor(max_workers=max_concurrency) as pool:
            return list(pool.map(self.one, answers))

    async def arun_all(self, answers: Sequence[ScoredAnswer]) -> list[ItemResult]:
        """Finish every item, escalations concurrently; returns when all have finished."""
        return list(await asyncio.gather(*(self.aone(answer) for answer in answers)))
