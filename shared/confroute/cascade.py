"""Cascades of more than two models: each scored tier answers, or hands the request on.

``ConfRouter(local, strong_model=[tier, ..., last])`` routes through an ordered list of tiers
after its local model. A *scored* tier is a local or log-prob backend (a bundled name, a
``.gguf`` file, a model directory, a string with an engine prefix such as ``server:`` or
``llama.cpp:``, a :class:`~confroute.backend.LocalBackend`, or a :class:`Tier` describing one):
its answer is scored by its own estimator and policy (defaults from the router's settings; the
shipped calibration profile applies where it matches, as for the router's local model) and it
escalates on to the next tier under that policy. A *hosted* tier (a LiteLLM model string or an
:class:`~confroute.target.EscalationTarget`) answers without a confidence, so it may only be
the last tier.

Rules (each refused with a :class:`~confroute.errors.ConfigurationError` saying what to do):

* the list is not empty and names no model twice (the router's local model included);
* only the last tier may be hosted;
* a scored tier's estimator must be one its engine can compute;
* a scored tier may be last: it then answers whatever its confidence, which is still measured
  and reported (its tier's ``reason`` is ``local_only``, as for a local-only router).

A middle tier that fails (its server is down, the prompt does not fit its context window) is
recorded with its error and the next tier is tried. When the last tier fails the escalation
fails (:class:`~confroute.errors.EscalationError`, carrying the tiers tried), and the router's
``on_escalation_error`` applies as for any strong model.

:class:`Cascade` is itself an :class:`~confroute.target.EscalationTarget`, so the router core
stays two-tier; each tier tried is recorded as a :class:`~confroute.decision.TierAttempt` in
the result, and the router's decision lists them (the local model first) in
:attr:`~confroute.decision.RoutingDecision.tiers`. Streaming: scored tiers are held back until
scored (as the router's local answer is) and a kept one is released in one piece; the hosted
last tier streams its tokens.

Example:
    >>> router = ConfRouter(  # doctest: +SKIP
    ...     "qwen2.5-coder-0.5b-instruct",
    ...     strong_model=["qwen2.5-coder-1.5b-instruct", "openai/gpt-4o-mini"],
    ... )
    >>> [t.model for t in router.route("What is 17*23?").decision.tiers]  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from confroute.assembly import escalation_target
from confroute.decision import TierAttempt
from confroute.errors import ConfigurationError, EscalationError
from confroute.escalation import Redactor
from confroute.hooks import ScoredAnswer
from confroute.settings import RouterSettings
from confroute.target import EscalationResult, EscalationTarget, StreamDelta
from confroute.tiers import HOSTED_BACKEND, ScoredTier, Tier, TierInput, entry_name, is_scored

__all__ = ["Cascade", "Tier", "TierInput", "build_cascade", "is_scored"]


def _kept(answer: ScoredAnswer, model: str, tiers: list[TierAttempt]) -> EscalationResult:
    """The result of a scored tier that kept the request."""
    generation = answer.generation
    assert generation is not None  # a kept answer was generated
    parsed = answer.parsed
    usable = parsed is not None and not parsed.malformed
    return EscalationResult(
        text=parsed.content if parsed is not None and usable else generation.text,
        model=model,
        tool_calls=list(parsed.calls) if parsed is not None and usable else [],
        prompt_tokens=generation.prompt_tokens,
        completion_tokens=generation.completion_tokens,
        cost_usd=0.0,
        latency_s=sum(t.latency_s for t in tiers),
        attempts=len(tiers),
        errors=[f"{t.model}: {t.error}" for t in tiers if t.error],
        tiers=tiers,
    )


def _hosted(remote: EscalationResult, tiers: list[TierAttempt]) -> EscalationResult:
    """The hosted last tier's result, with every tier's record and the totals."""
    attempt = TierAttempt(
        model=remote.model,
        backend=HOSTED_BACKEND,
        latency_s=remote.latency_s,
        cost_usd=remote.cost_usd,
        prompt_tokens=remote.prompt_tokens,
        completion_tokens=remote.completion_tokens,
    )
    done = [*tiers, attempt]
    earlier = [f"{t.model}: {t.error}" for t in tiers if t.error]
    return replace(
        remote,
        latency_s=sum(t.latency_s for t in done),
        attempts=remote.attempts + len(tiers),
        errors=[*earlier, *remote.errors],
        tiers=done,
    )


class Cascade:
    """An ordered list of tiers behind one :class:`~confroute.target.EscalationTarget`.

    Build it with :func:`build_cascade` (what ``ConfRouter(strong_model=[...])`` does).

    Attributes:
        model: The tiers' names joined by ``" -> "``.
        scored: The scored tiers, in order.
        last: The hosted last tier, or None when the last tier is scored.
    """

    def __init__(self, scored: Sequence[ScoredTier], last: EscalationTarget | None) -> None:
        """A cascade through ``scored`` then ``last``."""
        self.scored = list(scored)
        self.last = last
        names = [t.name for t in self.scored] + ([last.model] if last is not None else [])
        self.model = " -> ".join(names)

    def __repr__(self) -> str:
        """The tiers; never a key."""
        return f"Cascade({self.model!r})"

    @property
    def names(self) -> list[str]:
        """Every tier's model name, in order."""
        return self.model.split(" -> ")

    def _scored_pass(
        self, messages: Sequence[Mapping[str, Any]], options: Mapping[str, Any]
    ) -> tuple[list[TierAttempt], EscalationResult | None]:
        """Each scored tier in turn until one keeps the request (its result) or none does."""
        tiers: list[TierAttempt] = []
        for tier in self.scored:
            attempt, answer = tier.answer(messages, options)
            tiers.append(attempt)
            if answer is not None and not attempt.escalated:
                return tiers, _kept(answer, tier.name, tiers)
        return tiers, None

    def _no_answer(self, tiers: list[TierAttempt]) -> EscalationError:
        """The error when the last tier is scored and it failed too."""
        errors = [f"{t.model}: {t.error}" for t in tiers if t.error]
        error = EscalationError(
            f"Every tier of the cascade {self.model} failed: {'; '.join(errors)}",
            provider=tiers[-1].model,
            attempts=len(tiers),
            errors=errors,
        )
        error.tiers = tiers
        return error

    def _hosted_failed(self, error: EscalationError, tiers: list[TierAttempt]) -> EscalationError:
        """``error`` of the hosted last tier, carrying every tier's record."""
        assert self.last is not None
        failed = TierAttempt(
            model=self.last.model, backend=HOSTED_BACKEND, cost_usd=None, error=str(error)
        )
        error.tiers = [*tiers, failed]
        return error

    def complete(self, messages: Sequence[Mapping[str, Any]], **options: Any) -> EscalationResult:
        """Answer through the tiers (see the module docstring).

        Raises:
            EscalationError: The last tier failed (``tiers`` lists every tier tried).
        """
        tiers, kept = self._scored_pass(messages, options)
        if kept is not None:
            return kept
        if self.last is None:
            raise self._no_answer(tiers)
        try:
            return _hosted(self.last.complete(messages, **options), tiers)
        except EscalationError as error:
            raise self._hosted_failed(error, tiers) from None

    async def acomplete(
        self, messages: Sequence[Mapping[str, Any]], **options: Any
    ) -> EscalationResult:
        """Async form of :meth:`complete` (scored tiers in a worker thread)."""
        tiers, kept = await asyncio.to_thread(self._scored_pass, messages, options)
        if kept is not None:
            return kept
        if self.last is None:
            raise self._no_answer(tiers)
        try:
            return _hosted(await self.last.acomplete(messages, **options), tiers)
        except EscalationError as error:
            raise self._hosted_failed(error, tiers) from None

    def stream(
        self, messages: Sequence[Mapping[str, Any]], **options: Any
    ) -> Iterator[StreamDelta]:
        """A kept scored answer in one piece, or the hosted last tier's deltas as they arrive."""
        tiers, kept = self._scored_pass(messages, options)
        if kept is not None:
            yield from (StreamDelta(text=kept.text), StreamDelta(result=kept))
            return
        if self.last is None:
            raise self._no_answer(tiers)
        try:
            for delta in self.last.stream(messages, **options):
                yield (
                    delta
                    if delta.result is None
                    else StreamDelta(result=_hosted(delta.result, tiers))
                )
        except EscalationError as error:
            raise self._hosted_failed(error, tiers) from None

    async def astream(
        self, messages: Sequence[Mapping[str, Any]], **options: Any
    ) -> AsyncIterator[StreamDelta]:
        """Async form of :meth:`stream`."""
        tiers, kept = await asyncio.to_thread(self._scored_pass, messages, options)
        if kept is not None:
            yield StreamDelta(text=kept.text)
            yield StreamDelta(result=kept)
            return
        if self.last is None:
            raise self._no_answer(tiers)
        try:
            async for delta in self.last.astream(messages, **options):
                yield (
                    delta
                    if delta.result is None
                    else StreamDelta(result=_hosted(delta.result, tiers))
                )
        except EscalationError as error:
            raise self._hosted_failed(error, tiers) from None


def build_cascade(
    settings: RouterSettings,
    tiers: Sequence[TierInput],
    redact: Redactor | None = None,
    *,
    local_model: str = "",
) -> Cascade:
    """The cascade of ``tiers`` after the router's ``local_model`` (see the module rules).

    Scored tiers are loaded with the router's ``settings`` (a :class:`Tier` overrides the
    estimator and policy); a hosted last tier is built as the router builds a strong model
    (``api_key``, ``fallbacks``, ``redact``, ...).

    Raises:
        ConfigurationError: An empty list, a hosted tier before the last, a model named twice,
            or a tier's estimator that its engine cannot compute.
    """
    entries = list(tiers)
    if not entries:
        raise ConfigurationError(
            "strong_model=[] names no tier; give at least one model, or strong_model=None for "
            "local-only routing."
        )
    for position, entry in enumerate(entries[:-1]):
        if not is_scored(entry):
            raise ConfigurationError(
                f"Tier {position + 1} ({entry_name(entry)!r}) is hosted: it answers without a "
                "confidence, so nothing could escalate past it. Put it last, or score it as a "
                "log-prob backend with the 'server:' prefix."
            )
    names = [local_model, *(entry_name(e) for e in entries)] if local_model else []
    names = names or [entry_name(e) for e in entries]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigurationError(
            f"The cascade names {repeated} more than once (the local model counts as the first "
            "tier); each tier must be a different model."
        )
    last_entry = entries[-1]
    scored_entries = entries if is_scored(last_entry) else entries[:-1]
    scored = [
        ScoredTier(
            settings,
            entry if isinstance(entry, Tier) else Tier(entry),  # type: ignore[arg-type]
            last=position == len(entries) - 1,
        )
        for position, entry in enumerate(scored_entries)
    ]
    loaded = [local_model, *(t.name for t in scored)] if local_model else [t.name for t in scored]
    if len(set(loaded)) != len(loaded):
        raise ConfigurationError(
            f"The cascade loads the same model twice ({loaded}); each tier must be different."
        )
    hosted = None
    if not is_scored(last_entry):
        hosted = escalation_target(settings, last_entry, redact)  # type: ignore[arg-type]
    return Cascade(scored, hosted)
