"""The first half of a routing call: generate locally, score the answers, reach a verdict.

:class:`Pipeline` holds what this needs (the local backend, the estimators, the policy, the
observers and tracers) and nothing else; the router builds one per call from its current
settings, so a router copied by :meth:`~confroute.router.ConfRouter.with_hooks` shares every
piece but its hooks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from confroute.answer_format import detect_format
from confroute.backend import AsyncTokenGeneration, LocalBackend, prompt_fits
from confroute.call_options import call_config, check_tools, escalation_options, stop_sequences
from confroute.conversation import Turn, turn_of
from confroute.decision import DecisionReason
from confroute.errors import LocalBackendError
from confroute.estimators import (
    EstimationContext,
    Estimator,
    Requirement,
    shared_confidence,
)
from confroute.estimators.follow_up import afollow_ups
from confroute.forced import answer_scorer
from confroute.generation import Generation, GenerationConfig
from confroute.hooks import ScoredAnswer, ScoreObserver, Tracer, spans
from confroute.messages import Message
from confroute.policies import RoutingPolicy, Verdict, forced_verdict, turn_verdict
from confroute.tool_routing import ToolCallRouting
from confroute.tools import parse_tool_calls, repeated_tool_calls

__all__ = ["Pipeline", "call_config", "check_tools", "escalation_options", "stop_sequences"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pipeline:
    """Local generation, scoring and the verdict for a batch of conversations.

    Attributes:
        local: The local backend.
        estimators: The primary estimator (whose confidence the policy reads) first, then the
            extra ones.
        policy: The routing policy.
        observers: Score observers, in order (see :data:`confroute.hooks.ScoreObserver`).
        tracers: Tracers whose ``local_generation`` span wraps the batched generation.
        can_escalate: Whether a strong model is configured (otherwise a would-be escalation is
            reported as ``local_only``).
        tool_routing: The tool estimator and its threshold, which decide an answer that is a
            well-formed tool call (None: the primary estimator decides every answer).
        conversation_id: The call's conversation key (``None``: derived from each
            conversation's messages, see :mod:`confroute.conversation`).
        follows_conversations: Whether turns are told to a conversation-aware policy (False
            for :meth:`~confroute.router.ConfRouter.score`, which is no turn).
    """

    local: LocalBackend
    estimators: Sequence[Estimator]
    policy: RoutingPolicy
    observers: Sequence[ScoreObserver] = ()
    tracers: Sequence[Tracer] = ()
    can_escalate: bool = True
    tool_routing: ToolCallRouting | None = None
    conversation_id: str | None = None
    follows_conversations: bool = True

    @property
    def prompt_estimator(self) -> Estimator | None:
        """The one estimator that changes the answer prompt, if any."""
        return next((e for e in self.estimators if Requirement.PROMPT in e.requires), None)

    def run(
        self,
        conversations: list[list[Message]],
        config: GenerationConfig,
        tools: Sequence[Mapping[str, Any]] | None,
    ) -> list[ScoredAnswer]:
        """Generate for every conversation in one batch and score each answer."""
        answered = self._answer_prompts(conversations, tools)
        try:
            generations, latency = self.generate(answered, config, tools)
        except LocalBackendError as error:
            return self._all_failed(conversations, error)
        return self._score_all(conversations, answered, generations, latency, tools, config)

    async def arun(
        self,
        conversations: list[list[Message]],
        config: GenerationConfig,
        tools: Sequence[Mapping[str, Any]] | None,
    ) -> list[ScoredAnswer]:
        """Async form of :meth:`run`: the generation awaited, the scoring in a worker thread.

        The generation goes through the backend's own async path (:meth:`agenerate`), so
        concurrent calls reach a server that batches them (vLLM, ``llama-server --parallel``)
        or the micro-batcher all at once, instead of waiting for one of the event loop's few
        default worker threads (``min(32, cpus + 4)``: 6 on a 2-core machine, which held a
        16-slot llama-server to 0.44-0.71 of its throughput). So are a server's follow-up
        calls (p_true, verbalized 2-step: :func:`afollow_ups`); the rest runs in a thread.
        """
        answered = self._answer_prompts(conversations, tools)
        try:
            generations, latency = await self.agenerate(answered, config, tools)
        except LocalBackendError as error:
            return self._all_failed(conversations, error)
        contexts = [self._context(a, config, tools) for a in answered]
        await afollow_ups(self.estimators, self.local, zip(generations, contexts, strict=True))
        return await asyncio.to_thread(
            self._score_all, conversations, answered, generations, latency, tools, config, contexts
        )

    def _context(
        self, messages: list[Message], config: GenerationConfig | None, tools: Any
    ) -> EstimationContext:
        return EstimationContext(messages, local_model=self.local, config=config, tools=tools)

    def _answer_prompts(
        self, conversations: list[list[Message]], tools: Sequence[Mapping[str, Any]] | None
    ) -> list[list[Message]]:
        """The conversations as the local model answers them (an estimator may change them)."""
        check_tools(tools)
        changer = self.prompt_estimator
        if changer is None:
            return conversations
        return [changer.transform_messages(c) for c in conversations]

    def _all_failed(
        self, conversations: list[list[Message]], error: LocalBackendError
    ) -> list[ScoredAnswer]:
        """Every item decided and reported when the SLM's server is down or failing.

        Each is escalated when a strong model is configured, never silently lost.
        """
        logger.warning("The local backend failed: %s", error)
        return [self.failed(c, str(error)) for c in conversations]

    def _score_all(
        self,
        conversations: list[list[Message]],
        answered: list[list[Message]],
        generations: list[Generation | None],
        latency: float,
        tools: Sequence[Mapping[str, Any]] | None,
        config: GenerationConfig,
        contexts: Sequence[EstimationContext | None] | None = None,
    ) -> list[ScoredAnswer]:
        """Score each generation (None: the prompt did not fit), the batch's latency shared."""
        per_item = latency / max(len(conversations), 1)
        return [
            self.score(c, g, per_item, tools, answered=a, config=config, context=x)
            for c, a, g, x in zip(
                conversations,
                answered,
                generations,
                contexts or [None] * len(answered),
                strict=True,
            )
        ]

    def failed(self, messages: list[Message], error: str) -> ScoredAnswer:
        """The verdict on a conversation the local backend could not answer: escalate."""
        verdict = self._forced(messages, "local_failed")
        return self._observed(
            ScoredAnswer(messages, None, None, verdict, "local_failed", 0.0, local_error=error)
        )

    def generate(
        self,
        conversations: list[list[Message]],
        config: GenerationConfig,
        tools: Sequence[Mapping[str, Any]] | None,
    ) -> tuple[list[Generation | None], float]:
        """Generate for every conversation that fits the context window, in one batch."""
        started = time.perf_counter()
        with spans(self.tracers, lambda tracer: tracer.local_generation(len(conversations))):
            if self.local.capabilities.tokenizer:
                results = self._generate_ids(conversations, config, tools)
            else:
                results = self._generate_messages(conversations, config, tools)
        return results, time.perf_counter() - started

    async def agenerate(
        self,
        conversations: list[list[Message]],
        config: GenerationConfig,
        tools: Sequence[Mapping[str, Any]] | None,
    ) -> tuple[list[Generation | None], float]:
        """Async form of :meth:`generate`, through the backend's async methods.

        A backend reached by messages is awaited through its ``agenerate``, and one with a
        tokenizer through ``agenerate_from_ids`` where it has one
        (:class:`~confroute.backend.AsyncTokenGeneration`: the micro-batcher), so concurrent
        calls wait together for the server or the batch, not each for a worker thread. Any
        other backend (an in-process model that answers one batch at a time, which gains
        nothing from more threads) runs :meth:`generate` in a worker thread; the prompt
        tokenisation and token counts run in one too, off the event loop.
        """
        local = self.local
        if local.capabilities.tokenizer and not isinstance(local, AsyncTokenGeneration):
            return await asyncio.to_thread(self.generate, conversations, config, tools)
        started = time.perf_counter()
        with spans(self.tracers, lambda tracer: tracer.local_generation(len(conversations))):
            if isinstance(local, AsyncTokenGeneration) and local.capabilities.tokenizer:
                prompts = await asyncio.to_thread(self._fitting_ids, conversations, config, tools)
                fitting = [p for p in prompts if p is not None]
                done = await local.agenerate_from_ids(fitting, config) if fitting else []
                results = _in_place([p is not None for p in prompts], done)
            else:
                fits = await asyncio.to_thread(self._fits_by_messages, conversations, config)
                kept = [c for c, ok in zip(conversations, fits, strict=True) if ok]
                done = await local.agenerate(kept, config, tools=tools) if kept else []
                results = _in_place(fits, done)
        return results, time.perf_counter() - started

    def _fitting_ids(
        self,
        conversations: list[list[Message]],
        config: GenerationConfig,
        tools: Sequence[Mapping[str, Any]] | None,
    ) -> list[list[int] | None]:
        """Each conversation's exact prompt ids, None where prompt and answer do not fit."""
        prompts: list[list[int] | None] = []
        for conversation in conversations:
            ids = self.local.encode(self.local.render(conversation, tools))
            fits = prompt_fits(len(ids), config.max_new_tokens, self.local.context_window)
            prompts.append(ids if fits else None)
        return prompts

    def _fits_by_messages(
        self, conversations: list[list[Message]], config: GenerationConfig
    ) -> list[bool]:
        """Whether each conversation fits, by the backend's own token count (no tokenizer)."""
        window = self.local.context_window
        return [
            prompt_fits(self.local.count_tokens(c), config.max_new_tokens, window)
            for c in conversations
        ]

    def _generate_ids(
        self,
        conversations: list[list[Message]],
        config: GenerationConfig,
        tools: Sequence[Mapping[str, Any]] | None,
    ) -> list[Generation | None]:
        """A backend with a tokenizer: the fit check on the exact prompt ids, one batch."""
        prompts = self._fitting_ids(conversations, config, tools)
        fitting = [p for p in prompts if p is not None]
        done = self.local.generate_from_ids(fitting, config) if fitting else []
        return _in_place([p is not None for p in prompts], done)

    def _generate_messages(
        self,
        conversations: list[list[Message]],
        config: GenerationConfig,
        tools: Sequence[Mapping[str, Any]] | None,
    ) -> list[Generation | None]:
        """A backend reached by messages (no tokenizer): the backend's own token count."""
        fits = self._fits_by_messages(conversations, config)
        kept = [c for c, ok in zip(conversations, fits, strict=True) if ok]
        done = self.local.generate(kept, config, tools=tools) if kept else []
        return _in_place(fits, done)

    def score(
        self,
        messages: list[Message],
        generation: Generation | None,
        local_latency_s: float,
        tools: Sequence[Mapping[str, Any]] | None,
        *,
        answered: list[Message] | None = None,
        config: GenerationConfig | None = None,
        context: EstimationContext | None = None,
    ) -> ScoredAnswer:
        """Score one answer and reach the verdict (policy, tool-call checks, observers).

        ``context`` is the estimators' context when the async path made it (and awaited the
        follow-ups into it); by default a new one.
        """
        started = time.perf_counter()
        if generation is None:
            verdict = self._forced(messages, "context_overflow")
            overflow = ScoredAnswer(messages, None, None, verdict, "context_overflow", 0.0)
            return self._observed(replace(overflow, local_latency_s=local_latency_s))
        if context is None:
            context = self._context(answered if answered is not None else messages, config, tools)
        try:
            confidences = {
                e.name: self._confidence(e, generation, context) for e in self.estimators
            }
        finally:
            generation.extras.pop("prefix", None)  # free the key/value cache
        decided_by = self.estimators[0].name
        confidence = confidences[decided_by]
        changer = self.prompt_estimator
        if changer is not None:
            generation = replace(generation, text=changer.clean_answer(generation.text))
        parsed = parse_tool_calls(generation.text, tools) if tools else None
        if parsed is not None and parsed.malformed:
            logger.debug("Local tool call is malformed: %s", parsed.malformed)
            verdict = self._forced(messages, "malformed_tool_call")
        elif parsed is not None and repeated_tool_calls(parsed.calls, messages):
            # a call the conversation already made and a tool answered: the local model
            # echoes it instead of answering from the result (an agent would loop)
            logger.debug("Local answer repeats an answered tool call; escalating.")
            verdict = self._forced(messages, "repeated_tool_call")
        elif parsed is not None and parsed.calls and self.tool_routing is not None:
            tool = self.tool_routing.estimator  # a call: its own estimator and threshold
            if tool.name not in confidences:
                confidences[tool.name] = self._confidence(tool, generation, context)
            confidence, decided_by = confidences[tool.name], tool.name
            verdict = turn_verdict(
                self.policy,
                self.turn(messages),
                confidence,
                detect_format(messages).key,
                decide=self.tool_routing.decider(self.policy),
            )
        else:
            verdict = turn_verdict(
                self.policy, self.turn(messages), confidence, detect_format(messages).key
            )
        elapsed = local_latency_s + time.perf_counter() - started
        answer = ScoredAnswer(messages, generation, confidence, verdict, verdict.reason, elapsed)
        answer = replace(answer, parsed=parsed, confidences=confidences, decided_by=decided_by)
        return self._observed(answer)

    def score_given(
        self,
        messages: list[Message],
        answer: str,
        config: GenerationConfig,
        tools: Sequence[Mapping[str, Any]] | None,
    ) -> ScoredAnswer:
        """Score an answer the local model did not write (teacher-forced; nothing generated).

        Raises:
            ConfigurationError: The backend has no :class:`~confroute.forced.AnswerScoring`,
                an estimator writes its own answer prompt, or the answer is empty.
        """
        check_tools(tools)
        changer = self.prompt_estimator
        scorer = answer_scorer(self.local, answer, changer.name if changer else None)
        started = time.perf_counter()
        with spans(self.tracers, lambda tracer: tracer.local_generation(1)):
            prompt = self.local.encode(self.local.render(messages, tools))
            generation = scorer.score_answer(prompt, answer, config.hidden_layer)
        return self.score(messages, generation, time.perf_counter() - started, tools, config=config)

    def _forced(self, messages: list[Message], reason: DecisionReason) -> Verdict:
        """Escalate for ``reason`` whatever the confidence; a budget policy counts it."""
        verdict = forced_verdict(self.policy, detect_format(messages).key, self.turn(messages))
        return Verdict(True, verdict.threshold, reason)

    def turn(self, messages: list[Message]) -> Turn | None:
        """The request's place in its conversation (None when turns are not followed)."""
        return turn_of(messages, self.conversation_id) if self.follows_conversations else None

    @staticmethod
    def _confidence(
        estimator: Estimator, generation: Generation, context: EstimationContext
    ) -> float | None:
        """The estimator's confidence; None (the lowest) when its follow-up call failed."""
        try:
            return shared_confidence(estimator, generation, context)
        except LocalBackendError as error:
            logger.warning("%s could not be computed: %s", estimator.name, error)
            return None

    def _observed(self, answer: ScoredAnswer) -> ScoredAnswer:
        """``answer`` after every observer has seen it, with ``local_only`` where it applies.

        A prompt that did not fit keeps ``context_overflow`` (with no strong model the router
        raises :class:`~confroute.errors.ContextOverflowError` for it).
        """
        for observer in self.observers:
            try:
                replacement = observer(answer)
            except Exception:
                logger.exception("A score observer raised; its verdict is ignored.")
                continue
            if replacement is not None:
                answer = replace(answer, verdict=replacement, reason=replacement.reason)
        reason: DecisionReason = answer.reason
        if answer.verdict.escalate and not self.can_escalate and answer.generation is not None:
            reason = "local_only"
        return replace(answer, reason=reason) if reason != answer.reason else answer


def _in_place(asked: Sequence[bool], done: Sequence[Generation]) -> list[Generation | None]:
    """The answers ``done`` to the asked items, in order, at their places; None elsewhere."""
    answers = iter(done)
    return [next(answers) if item else None for item in asked]
