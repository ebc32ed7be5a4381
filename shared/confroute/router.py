"""The routing engine: answer locally, score the answer, escalate when unsure.

Both framework adapters call :class:`ConfRouter`; it has sync, async, batch and streaming paths,
and reports every decision (escalated, kept, or failed) to its hooks.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import SecretStr

from confroute import estimators as estimator_registry
from confroute.answer_format import detect_format
from confroute.calibration import (
    CalibrationProfile,
    check_rate,
    default_profile_path,
    shipped_profiles,
)
from confroute.decision import DecisionReason, RoutingDecision
from confroute.errors import ConfigurationError, ContextOverflowError, EscalationError
from confroute.escalation import LOCAL_PROVIDER, Escalation, EscalationResult, Redactor
from confroute.estimators import (
    PROBE_LAYER,
    EstimationContext,
    Estimator,
    Requirement,
    shared_confidence,
)
from confroute.generation import Generation
from confroute.local import GenerationConfig, LocalModel
from confroute.messages import Message, as_messages
from confroute.models import DEFAULT_LLM, DEFAULT_SLM
from confroute.policies import (
    FixedThreshold,
    RoutingPolicy,
    StreamingQuantile,
    TargetEscalationRate,
    Verdict,
)
from confroute.response import RoutedChunk, RoutedResponse
from confroute.tools import ParsedToolCalls, parse_tool_calls, repeated_tool_calls

__all__ = ["DEFAULT_THRESHOLD", "ConfRouter", "DecisionHook", "RoutedChunk", "RoutedResponse"]

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.8
"""Default fixed threshold on the default estimator (perplexity confidence)."""

DecisionHook = Callable[[RoutingDecision], None]
"""Called once with every routing decision (adapters turn it into framework callbacks)."""

PromptInput = str | Sequence[Mapping[str, Any]]
"""A plain question, or a conversation of OpenAI-shaped messages."""


@dataclass
class _Scored:
    """A local answer (or its absence) with the policy's verdict on it."""

    messages: list[Message]
    generation: Generation | None
    confidence: float | None
    verdict: Verdict
    reason: DecisionReason
    local_latency_s: float
    parsed: ParsedToolCalls | None = None
    confidences: dict[str, float | None] = field(default_factory=dict)


def _stop_sequences(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    """Stop sequences as a tuple; a single string is one sequence, not its characters."""
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if not all(isinstance(s, str) for s in stop):
        raise ConfigurationError(f"stop must be a string or a list of strings, got {stop!r}.")
    return tuple(stop)


def _check_tools(tools: Sequence[Mapping[str, Any]] | None) -> None:
    if tools is None:
        return
    if isinstance(tools, (str, bytes)) or not all(isinstance(t, Mapping) for t in tools):
        raise ConfigurationError(
            "tools must be a list of OpenAI tool dicts ({'type': 'function', 'function': "
            f"{{...}}}}); got {tools!r}."
        )


def _check_escalation_settings(
    timeout: float, max_retries: int, hooks: Sequence[DecisionHook]
) -> None:
    """Check settings even when no escalation is built from them (local-only mode)."""
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not timeout > 0
        or math.isinf(timeout)
    ):
        raise ConfigurationError(
            f"timeout must be a finite number of seconds > 0, got {timeout!r}."
        )
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ConfigurationError(f"max_retries must be an integer >= 0, got {max_retries!r}.")
    for hook in hooks:
        if not callable(hook):
            raise ConfigurationError(f"Every hook must be callable; got {hook!r}.")


class ConfRouter:
    """Answer with a local model; escalate to a strong model through LiteLLM when unsure.

    Example:
        >>> router = ConfRouter()  # doctest: +SKIP  (bundled 0.5B -> bundled 1.5B, offline)
        >>> response = router.route("What is 17*23?")  # doctest: +SKIP
        >>> response.decision.escalated, response.text  # doctest: +SKIP
    """

    def __init__(
        self,
        local_model: str | os.PathLike[str] | LocalModel = DEFAULT_SLM,
        strong_model: str | Escalation | None = f"{LOCAL_PROVIDER}/{DEFAULT_LLM}",
        *,
        estimator: str | Estimator = "perplexity",
        extra_estimators: Sequence[str | Estimator] = (),
        threshold: float | None = None,
        policy: RoutingPolicy | None = None,
        escalation_rate: float | None = None,
        profile: CalibrationProfile | str | os.PathLike[str] | None = None,
        strict_profile: bool = True,
        per_format_thresholds: bool = True,
        adapt_to_traffic: bool = True,
        api_base: str | None = None,
        api_key: str | SecretStr | None = None,
        timeout: float = 120.0,
        max_retries: int = 2,
        fallbacks: Sequence[str] = (),
        on_escalation_error: Literal["return_local", "raise"] = "return_local",
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        hooks: Sequence[DecisionHook] = (),
        device: str = "auto",
        redact: Redactor | None = None,
    ) -> None:
        """Build a router.

        Args:
            local_model: A :class:`LocalModel`, or what to load (bundled name, directory,
                ``.gguf`` file or hub id).
            strong_model: A LiteLLM model string, an :class:`Escalation`, or None for
                local-only routing (would-be escalations are reported with reason
                ``local_only``). The default is the bundled 1.5B model, in process.
            estimator: Name of an uncertainty estimator, or an instance; its confidence
                drives the routing decision.
            extra_estimators: More estimators computed on the same generation, reported in
                :attr:`RoutedResponse.confidences` (single-pass ones cost nothing extra;
                follow-up and sampling ones cost their own work once).
            threshold: Escalate when confidence is below it (default
                :data:`DEFAULT_THRESHOLD`). Give either ``threshold`` or ``policy``.
            policy: A routing policy (for example :class:`confroute.calibrated.OnlineBudget`).
            escalation_rate: Escalate this share of requests; the threshold is the
                ``profile``'s confidence quantile (the paper's calibration transfer).
            profile: A :class:`CalibrationProfile` (or its JSON path) for ``escalation_rate``
                (default: the profile shipped for a bundled model and the estimator, built
                from the kit datasets; see ``docs/calibration.md``).
            strict_profile: Refuse a profile made for another model or estimator (False
                downgrades that to a warning).
            per_format_thresholds: With ``escalation_rate``, give each recognised answer
                format (option letter, yes/no, number) the threshold of its own calibration
                items, when the profile records formats (see
                :func:`confroute.answer_format.detect_format`).
            adapt_to_traffic: With ``escalation_rate``, start from the profile's threshold and
                follow the quantile of the live confidences
                (:class:`~confroute.calibrated.StreamingQuantile`), which holds the rate when
                your data's confidence scale differs from the calibration set's. False keeps
                the profile's fixed threshold (:class:`~confroute.calibrated.
                TargetEscalationRate`), as in the paper.
            api_base: Base URL for the strong model (OpenAI-compatible servers).
            api_key: Key for the strong model; kept secret.
            timeout: Seconds per escalation call.
            max_retries: Retries per strong model.
            fallbacks: Models tried in order when ``strong_model`` fails.
            on_escalation_error: ``"return_local"`` answers with the local answer (the
                decision records the error); ``"raise"`` raises :class:`EscalationError`.
            max_new_tokens: Default answer length cap of the local model.
            temperature: Default temperature (0 = greedy) for both models.
            hooks: Callables that receive every :class:`RoutingDecision`.
            device: Device for a local model loaded by name.
            redact: Called on the messages before any escalation (for example to mask
                personal data); what it returns is what the strong model sees.
        """
        chosen_policies = [
            n
            for n, v in (
                ("threshold", threshold),
                ("policy", policy),
                ("escalation_rate", escalation_rate),
            )
            if v is not None
        ]
        if len(chosen_policies) > 1:
            raise ConfigurationError(
                f"Give one of threshold, policy or escalation_rate; got {chosen_policies}."
            )
        if profile is not None and escalation_rate is None:
            raise ConfigurationError(
                "profile is only used with escalation_rate; pass escalation_rate=... too, or "
                "use the profile in a policy (for example RiskControlledThreshold(profile, ...))."
            )
        _check_escalation_settings(timeout, max_retries, hooks)
        if isinstance(strong_model, Escalation) and redact is not None:
            raise ConfigurationError("Pass redact= to the Escalation you built, not to ConfRouter.")
        if on_escalation_error not in ("return_local", "raise"):
            raise ConfigurationError(
                "on_escalation_error must be 'return_local' or 'raise', got "
                f"{on_escalation_error!r}."
            )
        self.estimator = estimator_registry.get(estimator)
        self.extra_estimators = [estimator_registry.get(e) for e in extra_estimators]
        names = [e.name for e in self.estimators]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"Each estimator may be chosen once; got {names}.")
        prompt_changers = [e for e in self.estimators if Requirement.PROMPT in e.requires]
        if len(prompt_changers) > 1:
            raise ConfigurationError(
                "Only one estimator may change the answer prompt; got "
                f"{[e.name for e in prompt_changers]}."
            )
        self._prompt_estimator = prompt_changers[0] if prompt_changers else None
        if escalation_rate is None:
            self.policy: RoutingPolicy = policy or FixedThreshold(
                DEFAULT_THRESHOLD if threshold is None else threshold
            )
        else:
            check_rate(escalation_rate)
        needs = frozenset().union(*(e.requires for e in self.estimators))
        hidden_layers = {
            getattr(e, "hidden_layer", PROBE_LAYER)
            for e in self.estimators
            if Requirement.HIDDEN_STATE in e.requires
        }
        if len(hidden_layers) > 1:
            raise ConfigurationError(
                f"The chosen estimators read different hidden layers {sorted(hidden_layers)}; "
                "choose estimators that read the same one."
            )
        self.defaults = GenerationConfig(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            hidden_layer=next(iter(hidden_layers)) if hidden_layers else None,
            keep_cache=Requirement.FOLLOW_UP in needs,
        )
        if isinstance(strong_model, Escalation) or strong_model is None:
            self.escalation = strong_model
        else:
            self.escalation = Escalation(
                strong_model,
                api_base=api_base,
                api_key=api_key,
                timeout=timeout,
                max_retries=max_retries,
                fallbacks=fallbacks,
                redact=redact,
            )
        self.on_escalation_error = on_escalation_error
        self.hooks: list[DecisionHook] = list(hooks)
        self.local = (
            local_model
            if isinstance(local_model, LocalModel)
            else LocalModel(local_model, device=device)
        )
        for chosen in self.estimators:
            chosen.prepare(self.local)
        if escalation_rate is not None:
            self.policy = self._rate_policy(
                escalation_rate, profile, strict_profile, per_format_thresholds, adapt_to_traffic
            )

    def _rate_policy(
        self,
        escalation_rate: float,
        profile: CalibrationProfile | str | os.PathLike[str] | None,
        strict: bool,
        per_format: bool,
        adaptive: bool,
    ) -> TargetEscalationRate | StreamingQuantile:
        """The target-rate policy from ``profile`` or the shipped default profile."""
        if profile is None:
            profile = default_profile_path(self.local.name, self.estimator.name)
            if profile is None:
                shipped = ", ".join(shipped_profiles()) or "none"
                raise ConfigurationError(
                    f"escalation_rate needs a calibration profile, and none ships for model "
                    f"{self.local.name!r} with estimator {self.estimator.name!r} (shipped: "
                    f"{shipped}). Pass profile=PATH (build one with `confroute calibrate`), or "
                    "use threshold=."
                )
        loaded = (
            profile if isinstance(profile, CalibrationProfile) else CalibrationProfile.load(profile)
        )
        loaded.check_compatible(
            self.local.fingerprint,
            self.estimator.name,
            model_name=self.local.name,
            strict=strict,
        )
        if adaptive:
            return StreamingQuantile(escalation_rate, loaded, per_format=per_format)
        return TargetEscalationRate(loaded, escalation_rate, per_format=per_format)

    @property
    def estimators(self) -> list[Estimator]:
        """The primary estimator followed by the extra ones."""
        return [self.estimator, *self.extra_estimators]

    def __repr__(self) -> str:
        """Models, estimator and policy; never a key."""
        return (
            f"ConfRouter(local={self.local.name!r}, strong={self.escalation!r}, "
            f"estimator={self.estimator.name!r}, policy={self.policy!r})"
        )

    # -- shared steps ----------------------------------------------------------------------

    def _config(
        self, max_new_tokens: int | None, temperature: float | None, stop: Sequence[str] | None
    ) -> GenerationConfig:
        return replace(
            self.defaults,
            max_new_tokens=max_new_tokens or self.defaults.max_new_tokens,
            temperature=self.defaults.temperature if temperature is None else temperature,
            stop=_stop_sequences(stop),
        )

    def _score(
        self,
        messages: list[Message],
        generation: Generation | None,
        local_latency_s: float,
        tools: Sequence[Mapping[str, Any]] | None,
        *,
        answered: list[Message] | None = None,
        config: GenerationConfig | None = None,
    ) -> _Scored:
        started = time.perf_counter()
        if generation is None:
            verdict = Verdict(True, self.policy.decide(None).threshold, "context_overflow")
            return _Scored(messages, None, None, verdict, "context_overflow", local_latency_s)
        context = EstimationContext(
            messages=answered if answered is not None else messages,
            local_model=self.local,
            config=config,
            tools=tools,
        )
        try:
            confidences = {
                e.name: shared_confidence(e, generation, context) for e in self.estimators
            }
        finally:
            generation.extras.pop("prefix", None)  # free the key/value cache
        confidence = confidences[self.estimator.name]
        if self._prompt_estimator is not None:
            generation = replace(
                generation, text=self._prompt_estimator.clean_answer(generation.text)
            )
        if getattr(self.policy, "per_format", False):
            answer_format = detect_format(messages).key
            verdict = self.policy.decide(confidence, answer_format=answer_format)  # type: ignore[call-arg]
        else:
            verdict = self.policy.decide(confidence)
        reason: DecisionReason = verdict.reason  # type: ignore[assignment]
        parsed = parse_tool_calls(generation.text, tools) if tools else None
        if parsed is not None and parsed.malformed:
            logger.debug("Local tool call is malformed: %s", parsed.malformed)
            verdict = Verdict(True, verdict.threshold, "malformed_tool_call")
            reason = "malformed_tool_call"
        elif parsed is not None and repeated_tool_calls(parsed.calls, messages):
            # a call the conversation already made and a tool answered: the local model
            # echoes it instead of answering from the result (an agent would loop)
            logger.debug("Local answer repeats an answered tool call; escalating.")
            verdict = Verdict(True, verdict.threshold, "repeated_tool_call")
            reason = "repeated_tool_call"
        if verdict.escalate and self.escalation is None:
            reason = "local_only"
        elapsed = local_latency_s + time.perf_counter() - started
        return _Scored(
            messages, generation, confidence, verdict, reason, elapsed, parsed, confidences
        )

    def _decision(
        self,
        scored: _Scored,
        *,
        remote: EscalationResult | None = None,
        error: EscalationError | None = None,
    ) -> RoutingDecision:
        generation = scored.generation
        escalate = scored.verdict.escalate and self.escalation is not None
        answered_by = remote.model if remote is not None else self.local.name
        return RoutingDecision(
            estimator=self.estimator.name,
            confidence=scored.confidence,
            threshold=scored.verdict.threshold,
            escalated=escalate,
            reason=scored.reason,
            local_model=self.local.name,
            remote_model=(remote.model if remote else error.provider if error else None),
            answered_by=answered_by,
            local_latency_s=scored.local_latency_s,
            remote_latency_s=remote.latency_s if remote else None,
            local_prompt_tokens=generation.prompt_tokens if generation else 0,
            local_completion_tokens=generation.completion_tokens if generation else 0,
            remote_prompt_tokens=remote.prompt_tokens if remote else None,
            remote_completion_tokens=remote.completion_tokens if remote else None,
            cost_usd=remote.cost_usd if remote else None,
            attempts=remote.attempts if remote else error.attempts if error else 0,
            error=str(error) if error else None,
            confidences=dict(scored.confidences),
        )

    def _emit(self, decision: RoutingDecision) -> None:
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

    def _finish(
        self,
        scored: _Scored,
        remote: EscalationResult | None = None,
        error: EscalationError | None = None,
    ) -> RoutedResponse:
        decision = self._decision(scored, remote=remote, error=error)
        self._emit(decision)
        if error is not None and (self.on_escalation_error == "raise" or scored.generation is None):
            error.decision = decision
            raise error
        if scored.generation is None and remote is None:
            raise ContextOverflowError(
                f"The prompt does not fit {self.local.name}'s context window of "
                f"{self.local.context_window} tokens and no strong model is configured. Shorten "
                "the prompt, lower max_new_tokens, or configure a strong model.",
                prompt_tokens=-1,
                context_window=self.local.context_window,
            )
        confidences = dict(scored.confidences)
        if remote is not None:
            return RoutedResponse(
                remote.text,
                decision,
                scored.generation,
                remote,
                list(remote.tool_calls),
                confidences,
            )
        if scored.parsed is not None and not scored.parsed.malformed:
            return RoutedResponse(
                scored.parsed.content,
                decision,
                scored.generation,
                None,
                scored.parsed.calls,
                confidences,
            )
        text = scored.generation.text if scored.generation is not None else ""
        return RoutedResponse(text, decision, scored.generation, confidences=confidences)

    def _escalation_for(self, scored: _Scored) -> Escalation | None:
        """The escalation to run for this answer, or None to keep it local."""
        return self.escalation if scored.verdict.escalate else None

    def _generate(
        self,
        conversations: list[list[Message]],
        config: GenerationConfig,
        tools: Sequence[Mapping[str, Any]] | None,
    ) -> tuple[list[Generation | None], float]:
        """Generate for every conversation that fits the context window, in one batch."""
        started = time.perf_counter()
        prompts: list[list[int] | None] = []
        for conversation in conversations:
            ids = self.local.encode(self.local.render(conversation, tools))
            fits = len(ids) + config.max_new_tokens <= self.local.context_window
            prompts.append(ids if fits else None)
        fitting = [p for p in prompts if p is not None]
        generated = iter(self.local.generate_from_ids(fitting, config) if fitting else [])
        results = [next(generated) if p is not None else None for p in prompts]
        return results, time.perf_counter() - started

    def _escalate_kwargs(
        self,
        config: GenerationConfig,
        max_tokens: int | None,
        tools: Sequence[Mapping[str, Any]] | None,
    ) -> dict[str, Any]:
        return {
            "temperature": config.temperature,
            "max_tokens": max_tokens or config.max_new_tokens,
            "stop": list(config.stop) or None,
            "tools": tools,
        }

    # -- public API ------------------------------------------------------------------------

    def route(
        self,
        prompt: PromptInput,
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        stop: Sequence[str] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> RoutedResponse:
        """Answer one prompt or conversation, escalating when the local answer is unsure.

        Raises:
            InvalidRequestError: The messages cannot be answered as given.
            EscalationError: Escalation failed and ``on_escalation_error="raise"`` (or there
                is no local answer to fall back on).
        """
        return self.route_batch(
            [prompt],
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            stop=stop,
            tools=tools,
        )[0]

    def route_batch(
        self,
        prompts: Sequence[PromptInput],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        stop: Sequence[str] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        max_concurrency: int = 8,
    ) -> list[RoutedResponse]:
        """Answer many prompts: one batched local generation, escalations in parallel."""
        conversations = [as_messages(p) for p in prompts]
        config = self._config(max_new_tokens, temperature, stop)
        scored = self._generate_and_score(conversations, config, tools)
        kwargs = self._escalate_kwargs(config, max_new_tokens, tools)

        def finish(item: _Scored) -> RoutedResponse:
            escalation = self._escalation_for(item)
            if escalation is None:
                return self._finish(item)
            try:
                remote = escalation.complete(item.messages, **kwargs)
            except EscalationError as error:
                return self._finish(item, error=error)
            return self._finish(item, remote=remote)

        if sum(self._escalation_for(s) is not None for s in scored) <= 1:
            return [finish(s) for s in scored]
        with ThreadPoolExecutor(max_workers=max_concurrency) as pool:
            return list(pool.map(finish, scored))

    async def aroute(
        self,
        prompt: PromptInput,
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        stop: Sequence[str] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> RoutedResponse:
        """Async form of :meth:`route`: local work in a worker thread, escalation awaited."""
        [response] = await self.aroute_batch(
            [prompt],
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            stop=stop,
            tools=tools,
        )
        return response

    async def aroute_batch(
        self,
        prompts: Sequence[PromptInput],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        stop: Sequence[str] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[RoutedResponse]:
        """Async form of :meth:`route_batch`; escalations run concurrently."""
        conversations = [as_messages(p) for p in prompts]
        config = self._config(max_new_tokens, temperature, stop)
        scored = await asyncio.to_thread(self._generate_and_score, conversations, config, tools)
        kwargs = self._escalate_kwargs(config, max_new_tokens, tools)

        async def finish(item: _Scored) -> RoutedResponse:
            escalation = self._escalation_for(item)
            if escalation is None:
                return self._finish(item)
            try:
                remote = await escalation.acomplete(item.messages, **kwargs)
            except EscalationError as error:
                return self._finish(item, error=error)
            return self._finish(item, remote=remote)

        return list(await asyncio.gather(*(finish(s) for s in scored)))

    def _generate_and_score(
        self,
        conversations: list[list[Message]],
        config: GenerationConfig,
        tools: Sequence[Mapping[str, Any]] | None,
    ) -> list[_Scored]:
        _check_tools(tools)
        answered = conversations
        if self._prompt_estimator is not None:
            answered = [self._prompt_estimator.transform_messages(c) for c in conversations]
        generations, latency = self._generate(answered, config, tools)
        per_item = latency / max(len(conversations), 1)
        return [
            self._score(c, g, per_item, tools, answered=a, config=config)
            for c, a, g in zip(conversations, answered, generations, strict=True)
        ]

    def stream(
        self,
        prompt: PromptInput,
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        stop: Sequence[str] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> Iterator[RoutedChunk]:
        """Stream an answer.

        The local answer is held back until its confidence is known, then released in one
        piece; an escalated answer streams the strong model's tokens as they arrive. The last
        chunk carries the :class:`RoutedResponse` (with the decision).
        """
        config = self._config(max_new_tokens, temperature, stop)
        [scored] = self._generate_and_score([as_messages(prompt)], config, tools)
        escalation = self._escalation_for(scored)
        if escalation is None:
            response = self._finish(scored)
            yield RoutedChunk(text=response.text)
            yield RoutedChunk(response=response)
            return
        kwargs = self._escalate_kwargs(config, max_new_tokens, tools)
        streamed = False
        try:
            for delta in escalation.stream(scored.messages, **kwargs):
                if delta.result is not None:
                    yield RoutedChunk(response=self._finish(scored, remote=delta.result))
                    return
                streamed = True
                yield RoutedChunk(text=delta.text)
        except EscalationError as error:
            if streamed:
                error.decision = self._decision(scored, error=error)
                self._emit(error.decision)
                raise
            response = self._finish(scored, error=error)
            yield RoutedChunk(text=response.text)
            yield RoutedChunk(response=response)

    async def astream(
        self,
        prompt: PromptInput,
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        stop: Sequence[str] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> AsyncIterator[RoutedChunk]:
        """Async form of :meth:`stream`."""
        config = self._config(max_new_tokens, temperature, stop)
        [scored] = await asyncio.to_thread(
            self._generate_and_score, [as_messages(prompt)], config, tools
        )
        escalation = self._escalation_for(scored)
        if escalation is None:
            response = self._finish(scored)
            yield RoutedChunk(text=response.text)
            yield RoutedChunk(response=response)
            return
        kwargs = self._escalate_kwargs(config, max_new_tokens, tools)
        streamed = False
        try:
            async for delta in escalation.astream(scored.messages, **kwargs):
                if delta.result is not None:
                    yield RoutedChunk(response=self._finish(scored, remote=delta.result))
                    return
                streamed = True
                yield RoutedChunk(text=delta.text)
        except EscalationError as error:
            if streamed:
                error.decision = self._decision(scored, error=error)
                self._emit(error.decision)
                raise
            response = self._finish(scored, error=error)
            yield RoutedChunk(text=response.text)
            yield RoutedChunk(response=response)
