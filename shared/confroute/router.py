"""The routing engine: answer locally, score the answer, escalate when unsure.

Both framework adapters call :class:`ConfRouter`; it has sync, async, batch and streaming paths,
and reports every decision (escalated, kept, or failed) to its hooks. The work is split in two
plain objects that know nothing of threads or event loops: :class:`~confroute.scoring.Pipeline`
(generate, score, verdict) and :class:`~confroute.outcome.Outcome` (decision, hooks, response);
each public method here only drives them, synchronously or asynchronously.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import aclosing
from typing import Any, Literal, cast, overload

from typing_extensions import Unpack

from confroute import estimators as estimator_registry
from confroute.assembly import (
    check_choices,
    check_policy,
    escalation_target,
    generation_defaults,
    local_backend,
    router_settings,
    sticky_policy,
    threshold_policy,
    tool_call_routing,
)
from confroute.backend import LocalBackend
from confroute.calibration import CalibrationProfile
from confroute.call_options import CallOptions, PromptInput, Tools
from confroute.cascade import TierInput, build_cascade
from confroute.conversation import check_conversation_id
from confroute.errors import ConfigurationError
from confroute.escalation import Redactor
from confroute.estimators import Estimator
from confroute.generation import GenerationConfig
from confroute.hooks import DecisionHook, ScoredAnswer, ScoreObserver, Tracer
from confroute.messages import Message, as_messages
from confroute.outcome import BatchFinish, ItemResult, Outcome, StreamPlan, settle
from confroute.policies import RoutingPolicy
from confroute.response import RoutedChunk, RoutedResponse
from confroute.scoring import Pipeline, call_config, escalation_options
from confroute.settings import DEFAULT_THRESHOLD, RouterSettings
from confroute.target import EscalationTarget

__all__ = [
    "DEFAULT_THRESHOLD",
    "CallOptions",
    "ConfRouter",
    "DecisionHook",
    "PromptInput",
    "RoutedChunk",
    "RoutedResponse",
]

_FROM_SETTINGS: Any = object()
"""Marks ``strong_model`` as not given: it comes from the settings."""


class ConfRouter:
    """Answer with a local model; escalate to a strong model through LiteLLM when unsure.

    Example:
        >>> router = ConfRouter()  # doctest: +SKIP  (bundled 0.5B -> bundled 1.5B, offline)
        >>> response = router.route("What is 17*23?")  # doctest: +SKIP
        >>> response.decision.escalated, response.text  # doctest: +SKIP
    """

    def __init__(
        self,
        local_model: str | os.PathLike[str] | LocalBackend | None = None,
        strong_model: str | EscalationTarget | Sequence[TierInput] | None = _FROM_SETTINGS,
        *,
        settings: RouterSettings | None = None,
        estimator: str | Estimator | None = None,
        extra_estimators: Sequence[str | Estimator] = (),
        policy: RoutingPolicy | None = None,
        profile: CalibrationProfile | str | os.PathLike[str] | None = None,
        hooks: Sequence[DecisionHook] = (),
        observers: Sequence[ScoreObserver] = (),
        tracers: Sequence[Tracer] = (),
        redact: Redactor | None = None,
        **changes: Any,
    ) -> None:
        """Build a router.

        Args:
            local_model: A :class:`~confroute.backend.LocalBackend` (a :class:`LocalModel`,
                a :class:`~confroute.llamacpp.LlamaCppModel`, a
                :class:`~confroute.server_backend.ServerModel`), or what to load: a bundled
                name, directory, ``.gguf`` file, hub id or LiteLLM string of a server; the
                engine follows :mod:`confroute.backend_choice` (``local_backend=`` says it).
                Default ``settings.local_model``.
            strong_model: A LiteLLM model string, an
                :class:`~confroute.target.EscalationTarget` (an :class:`Escalation`), or None
                for local-only routing (would-be escalations are reported with reason
                ``local_only``). Default ``settings.strong_model``, the bundled 1.5B in process.
                A list is a cascade of tiers after the local model (:mod:`confroute.cascade`):
                each scored tier (a local or log-prob backend, or a
                :class:`~confroute.cascade.Tier`) answers or hands on under its own policy; a
                hosted last tier answers.
            settings: The :class:`~confroute.settings.RouterSettings` to start from.
            estimator: Name of an uncertainty estimator, or an instance; its confidence drives
                the decision (default ``settings.estimator``).
            extra_estimators: More estimators computed on the same generation, reported in
                :attr:`RoutedResponse.confidences`.
            policy: A routing policy (for example :class:`~confroute.policies.OnlineBudget`);
                excludes ``threshold`` and ``escalation_rate``.
            profile: A :class:`CalibrationProfile` (or its JSON path) for ``escalation_rate``
                (default: the profile shipped for a bundled model and the estimator).
            hooks: Callables that receive every :class:`~confroute.decision.RoutingDecision`.
            observers: :data:`~confroute.hooks.ScoreObserver` callables that see each scored
                answer and may replace its verdict.
            tracers: :class:`~confroute.hooks.Tracer` objects that open spans around local
                generation and escalation.
            redact: Called on the messages before any escalation (for example to mask personal
                data); what it returns is what the strong model sees.
            **changes: Any :class:`~confroute.settings.RouterSettings` field (``threshold=``,
                ``escalation_rate=``, ``api_key=``, ``timeout=``, ``max_new_tokens=``, ...),
                applied on top of ``settings``.

        Raises:
            TypeError: A keyword that is no setting (a typo such as ``treshold=``).
            ConfigurationError: A setting is out of its bounds, settings contradict each other,
                or the local backend cannot serve an estimator's requirements.
        """
        self.settings, strong_model = router_settings(
            settings, strong_model, changes, from_settings=strong_model is _FROM_SETTINGS
        )
        check_choices(self.settings, policy, profile, (*hooks, *observers))
        tiers = strong_model if isinstance(strong_model, (list, tuple)) else None
        plain = strong_model is None or isinstance(strong_model, (str, list, tuple))
        if not plain and redact is not None:
            raise ConfigurationError("Pass redact= to the Escalation you built, not to ConfRouter.")
        self.estimator = estimator_registry.get(estimator or self.settings.estimator)
        self.extra_estimators = [estimator_registry.get(e) for e in extra_estimators]
        self.tool_routing = tool_call_routing(self.settings, self.estimators)
        self.defaults = generation_defaults(self.settings, self.computed_estimators)
        single = None if tiers is not None else cast("str | EscalationTarget | None", strong_model)
        self.escalation = escalation_target(self.settings, single, redact)
        self.hooks: list[DecisionHook] = list(hooks)
        self.observers: list[ScoreObserver] = list(observers)
        self.tracers: list[Tracer] = list(tracers)
        self.local = local_backend(self.settings, local_model, self.computed_estimators)
        if tiers is not None:
            self.escalation = build_cascade(
                self.settings, tiers, redact, local_model=self.local.name
            )
        self.policy = sticky_policy(
            self.settings,
            check_policy(
                policy or threshold_policy(self.settings, self.local, self.estimator, profile)
            ),
        )
        for chosen_estimator in self.computed_estimators:
            chosen_estimator.prepare(self.local)

    def with_hooks(
        self,
        *,
        hooks: Sequence[DecisionHook] = (),
        observers: Sequence[ScoreObserver] = (),
        tracers: Sequence[Tracer] = (),
    ) -> ConfRouter:
        """A copy that also calls these hooks; it shares the models, estimators and policy.

        The original router is not changed. A hook it already has is not added twice.
        """
        copy = object.__new__(ConfRouter)
        copy.__dict__.update(self.__dict__)
        copy.hooks = [*self.hooks, *(h for h in hooks if h not in self.hooks)]
        copy.observers = [*self.observers, *(o for o in observers if o not in self.observers)]
        copy.tracers = [*self.tracers, *(t for t in tracers if t not in self.tracers)]
        return copy

    @property
    def on_escalation_error(self) -> str:
        """``"return_local"`` or ``"raise"`` (from :attr:`settings`)."""
        return self.settings.on_escalation_error

    @property
    def estimators(self) -> list[Estimator]:
        """The primary estimator followed by the extra ones."""
        return [self.estimator, *self.extra_estimators]

    @property
    def computed_estimators(self) -> list[Estimator]:
        """:attr:`estimators` and the tool estimator (which decides tool-call answers)."""
        tool = self.tool_routing.estimator if self.tool_routing is not None else None
        return [*self.estimators, *(() if tool is None or tool in self.estimators else (tool,))]

    def __repr__(self) -> str:
        """Models, estimator and policy; never a key."""
        return (
            f"ConfRouter(local={self.local.name!r}, strong={self.escalation!r}, "
            f"estimator={self.estimator.name!r}, policy={self.policy!r})"
        )

    # -- the two halves of a call ----------------------------------------------------------

    def generation_config(
        self,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        stop: str | Sequence[str] | None = None,
    ) -> GenerationConfig:
        """The local generation settings of one call: :attr:`defaults` with these overrides."""
        return call_config(self.defaults, max_new_tokens, temperature, stop)

    def _pipeline(self, options: CallOptions | None = None) -> Pipeline:
        """The call's pipeline; without ``options`` (``score``) it is no conversation's turn."""
        return Pipeline(
            self.local,
            self.estimators,
            self.policy,
            tuple(self.observers),
            tuple(self.tracers),
            can_escalate=self.escalation is not None,
            tool_routing=self.tool_routing,
            conversation_id=check_conversation_id((options or {}).get("conversation_id")),
            follows_conversations=options is not None,
        )

    def _outcome(self) -> Outcome:
        return Outcome(
            self.estimator.name,
            self.local.name,
            self.local.context_window,
            tuple(self.hooks),
            raise_on_error=self.settings.on_escalation_error == "raise",
            can_escalate=self.escalation is not None,
            local_backend=self.local.capabilities.backend,
        )

    def _request(
        self, prompts: Sequence[PromptInput], options: CallOptions
    ) -> tuple[list[list[Message]], GenerationConfig, dict[str, Any], Tools]:
        """Conversations, local settings, escalation options and tools of one call."""
        config = self.generation_config(
            options.get("max_new_tokens"), options.get("temperature"), options.get("stop")
        )
        tools = options.get("tools")
        return [as_messages(p) for p in prompts], config, escalation_options(config, tools), tools

    # -- public API: every method takes the keyword options of CallOptions ------------------

    def route(self, prompt: PromptInput, **options: Unpack[CallOptions]) -> RoutedResponse:
        """Answer one prompt or conversation, escalating when the local answer is unsure.

        Raises:
            InvalidRequestError: The messages cannot be answered as given.
            EscalationError: Escalation failed and ``on_escalation_error="raise"`` (or there
                is no local answer to fall back on).
        """
        [response] = self.route_batch([prompt], **options)
        return response

    @overload
    def route_batch(
        self,
        prompts: Sequence[PromptInput],
        *,
        max_concurrency: int = ...,
        return_exceptions: Literal[False] = ...,
        **options: Unpack[CallOptions],
    ) -> list[RoutedResponse]: ...

    @overload
    def route_batch(
        self,
        prompts: Sequence[PromptInput],
        *,
        max_concurrency: int = ...,
        return_exceptions: Literal[True],
        **options: Unpack[CallOptions],
    ) -> list[ItemResult]: ...

    def route_batch(
        self,
        prompts: Sequence[PromptInput],
        *,
        max_concurrency: int = 8,
        return_exceptions: bool = False,
        **options: Unpack[CallOptions],
    ) -> list[RoutedResponse] | list[ItemResult]:
        """Answer many prompts: one batched local generation, escalations in parallel.

        Each item fails or succeeds on its own: with ``return_exceptions=True`` a failing item's
        exception takes its place in the list (as in LangChain's ``batch``); otherwise the
        first one is raised, but only once every item was answered and reported to the hooks.

        Raises:
            InvalidRequestError: A prompt cannot be answered as given (nothing was generated).
            EscalationError: An item failed and ``return_exceptions`` is False.
        """
        conversations, config, escalation, tools = self._request(prompts, options)
        answers = self._pipeline(options).run(conversations, config, tools)
        finish = BatchFinish(self._outcome(), self.escalation, tuple(self.tracers), escalation)
        return settle(finish.run_all(answers, max_concurrency), return_exceptions)

    async def aroute(self, prompt: PromptInput, **options: Unpack[CallOptions]) -> RoutedResponse:
        """Async form of :meth:`route`: the local answer and the escalation awaited.

        The local generation uses the backend's async path (a server backend's concurrent
        calls reach the server together, so it can batch them); the scoring runs in a worker
        thread.
        """
        [response] = await self.aroute_batch([prompt], **options)
        return response

    @overload
    async def aroute_batch(
        self,
        prompts: Sequence[PromptInput],
        *,
        return_exceptions: Literal[False] = ...,
        **options: Unpack[CallOptions],
    ) -> list[RoutedResponse]: ...

    @overload
    async def aroute_batch(
        self,
        prompts: Sequence[PromptInput],
        *,
        return_exceptions: Literal[True],
        **options: Unpack[CallOptions],
    ) -> list[ItemResult]: ...

    async def aroute_batch(
        self,
        prompts: Sequence[PromptInput],
        *,
        return_exceptions: bool = False,
        **options: Unpack[CallOptions],
    ) -> list[RoutedResponse] | list[ItemResult]:
        """Async form of :meth:`route_batch`; escalations run concurrently."""
        conversations, config, escalation, tools = self._request(prompts, options)
        answers = await self._pipeline(options).arun(conversations, config, tools)
        finish = BatchFinish(self._outcome(), self.escalation, tuple(self.tracers), escalation)
        return settle(await finish.arun_all(answers), return_exceptions)

    def stream(self, prompt: PromptInput, **options: Unpack[CallOptions]) -> Iterator[RoutedChunk]:
        """Stream an answer.

        The local answer is held back until its confidence is known, then released in one
        piece; an escalated answer streams the strong model's tokens as they arrive. The last
        chunk carries the :class:`RoutedResponse` (with the decision). A stream closed before
        its end still reports its decision (with an error saying so).
        """
        conversations, config, escalation, tools = self._request([prompt], options)
        [answer] = self._pipeline(options).run(conversations, config, tools)
        plan = StreamPlan(self._outcome(), answer, self.escalation)
        yield from plan.run(escalation, self.tracers)

    async def astream(
        self, prompt: PromptInput, **options: Unpack[CallOptions]
    ) -> AsyncIterator[RoutedChunk]:
        """Async form of :meth:`stream`."""
        conversations, config, escalation, tools = self._request([prompt], options)
        [answer] = await self._pipeline(options).arun(conversations, config, tools)
        plan = StreamPlan(self._outcome(), answer, self.escalation)
        async with aclosing(plan.arun(escalation, self.tracers)) as chunks:
            async for chunk in chunks:
                yield chunk

    def score(
        self, prompt: PromptInput, answer: str, *, tools: Sequence[Mapping[str, Any]] | None = None
    ) -> ScoredAnswer:
        """The confidence the local model assigns to a given ``answer``; nothing is generated.

        Teacher-forced (:mod:`confroute.forced`): every estimator reads the answer as if the
        local model had written it, and the policy gives its verdict (an adaptive policy
        counts the answer as one request). No hook is called and nothing escalates.

        Raises:
            ConfigurationError: The backend cannot score a given answer, the estimator writes
                its own answer prompt (``verbalized_1s``), or the answer is empty.
        """
        return self._pipeline().score_given(as_messages(prompt), answer, self.defaults, tools)

    async def ascore(
        self, prompt: PromptInput, answer: str, *, tools: Sequence[Mapping[str, Any]] | None = None
    ) -> ScoredAnswer:
        """Async form of :meth:`score` (in a worker thread)."""
        return await asyncio.to_thread(self.score, prompt, answer, tools=tools)
