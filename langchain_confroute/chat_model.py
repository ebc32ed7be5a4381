"""``ChatConfRoute``: a LangChain chat model that answers locally and escalates when unsure."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, model_validator
from typing_extensions import Self

from confroute.backend import LocalBackend
from confroute.errors import EscalationError
from confroute.escalation import Escalation
from confroute.estimators import Estimator
from confroute.policies import RoutingPolicy
from confroute.redaction import SecretURL
from confroute.router import ConfRouter
from confroute.settings import BackendName
from langchain_confroute.calls import (
    RoutedRequest,
    answers_for_batch,
    aroute_batch,
    batch_requests,
    build_request,
    in_config_thread,
    in_thread,
    route_batch,
)
from langchain_confroute.engine import (
    build_router,
    check_engine_settings,
    from_environment,
    identifying_params,
    setting,
    tracing_params,
)
from langchain_confroute.events import adispatch_decision, claim_failure, dispatch_decision
from langchain_confroute.messages import PROVIDER, to_chat_result
from langchain_confroute.plan import CallPlan
from langchain_confroute.streaming import (
    RunManager,
    adispatch_failure_for_config,
    adispatch_for_config,
    areplay,
    awhole_with_tools,
    dispatch_failure_for_config,
    dispatch_for_config,
    replay,
    running,
    whole_with_tools,
)
from langchain_confroute.tools import (
    ToolInput,
    check_tool_choice,
    to_openai_tools,
)

__all__ = ["ChatConfRoute"]

logger = logging.getLogger(__name__)


class ChatConfRoute(BaseChatModel):
    """Chat model that answers with a small local model and escalates when it is unsure.

    A drop-in LangChain chat model: the local model (bundled, a directory, a hub id or a
    :class:`~confroute.local.LocalModel`) answers; its confidence is scored; a low-confidence
    answer is replaced by the strong model's (any LiteLLM model string). Every answer carries the
    routing decision under ``response_metadata["confroute"]`` and the same decision is sent to
    callback handlers as the custom event ``confroute_decision``.

    Defaults run offline: the bundled Qwen2.5-Coder 0.5B answers, the bundled 1.5B (in
    process) takes escalations. Models load on the first call.

    Example:
        >>> from langchain_confroute import ChatConfRoute
        >>> llm = ChatConfRoute(max_tokens=64)  # was: ChatOpenAI(model="gpt-4o-mini")
        >>> message = llm.invoke("What is 17*23?")  # doctest: +SKIP
        >>> message.response_metadata["confroute"]["escalated"]  # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    local_model: str | Path | LocalBackend = setting("local_model")
    """The local model: a bundled name, a directory, a ``.gguf`` file, a hub id or a loaded
    :class:`~confroute.backend.LocalBackend` such as a
    :class:`~confroute.local.LocalModel` (shared, not copied)."""
    local_backend: BackendName = setting("local_backend")
    """The engine of a local model given by name: ``"auto"`` (see docs/backends.md),
    ``"transformers"``, ``"llama.cpp"`` or ``"server"``."""
    local_api_base: SecretURL | None = Field(default_factory=from_environment("slm_api_base"))
    """Base URL of the SLM's server (``local_backend="server"``; env
    ``CONFROUTE_SLM_API_BASE``)."""
    local_api_key: SecretStr | None = Field(default_factory=from_environment("slm_api_key"))
    """Key of the SLM's server (env ``CONFROUTE_SLM_API_KEY``); never logged or reported."""
    strong_model: str | Escalation | list[Any] | None = setting("strong_model")
    """The escalation target: a LiteLLM model string (``"openai/gpt-4o-mini"``), an
    :class:`~confroute.escalation.Escalation`, a list of cascade tiers (see
    :mod:`confroute.cascade`), or None to stay local (would-be escalations are reported with
    reason ``local_only``). The default is the bundled 1.5B, in process."""
    router: ConfRouter | None = Field(default=None, exclude=True)
    """A ready :class:`~confroute.router.ConfRouter`; when given, the engine fields above and
    below must be left unset (configure the router instead)."""
    estimator: str | Estimator = setting("estimator")
    """The uncertainty estimator, by name or instance."""
    tool_estimator: str | None = setting("tool_estimator")
    """The estimator that decides an answer which is a tool call (None: ``estimator`` does)."""
    tool_threshold: float = setting("tool_threshold")
    """Escalate a tool call whose ``tool_estimator`` confidence is below this."""
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    """Escalate when confidence is below this (default: the engine's, 0.8 on perplexity)."""
    escalation_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    """Target share of escalated requests; the threshold is a quantile of the calibration
    profile (the one shipped for a bundled model and estimator when none is given)."""
    calibration_profile: Any = None
    """Calibration profile (or its path) that turns ``escalation_rate`` into a threshold
    (default: the shipped profile of the model and estimator)."""
    policy: RoutingPolicy | None = None
    """A routing policy object (any ``decide(confidence) -> Verdict``); excludes ``threshold``."""
    api_base: SecretURL | None = Field(default_factory=from_environment("api_base"))
    """Base URL of the strong model's OpenAI-compatible server (env ``CONFROUTE_API_BASE``); a
    key in its userinfo is a secret, masked in every repr, dump and error."""
    api_key: SecretStr | None = Field(default_factory=from_environment("api_key"))
    """Key of the strong model (env ``CONFROUTE_API_KEY``; otherwise LiteLLM reads the
    provider's own variable, such as ``OPENAI_API_KEY``). Never logged or reported."""
    timeout: float = Field(default=setting("timeout"), gt=0)
    """Seconds per escalation call."""
    max_retries: int = Field(default=setting("max_retries"), ge=0)
    """Retries per strong model, with back-off."""
    fallbacks: list[str] = Field(default_factory=list)
    """LiteLLM models tried in order when ``strong_model`` fails."""
    on_escalation_error: Literal["return_local", "raise"] = setting("on_escalation_error")
    """When escalation fails: answer with the local answer (the decision records the error), or
    raise :class:`~confroute.errors.EscalationError`."""
    temperature: float = Field(default=setting("temperature"), ge=0.0)
    """Sampling temperature of both models (0 = greedy)."""
    max_tokens: int | None = Field(default=None, ge=1)
    """Answer length cap for both models (default: the router's ``max_new_tokens``)."""
    stop: list[str] | None = None
    """Stop sequences; they are not part of the answer."""
    device: str = setting("device")
    """Device of a local model loaded by name: ``"auto"``, ``"cpu"``, ``"cuda"``..."""
    streaming: bool = False
    """Stream internally on ``invoke`` (so callbacks receive tokens)."""

    _engine: ConfRouter | None = PrivateAttr(default=None)
    _engine_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @model_validator(mode="after")
    def _check_engine_settings(self) -> Self:
        check_engine_settings(self)
        return self

    def get_router(self) -> ConfRouter:
        """The routing engine (built from the fields, loading the models, on first use)."""
        if self.router is not None:
            return self.router
        with self._engine_lock:
            if self._engine is None:
                self._engine = build_router(self)
            return self._engine

    # -- LangChain metadata ----------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return PROVIDER

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return identifying_params(self)

    @property
    def lc_secrets(self) -> dict[str, str]:
        """Where LangChain finds the key when loading a serialised model."""
        return {"api_key": "CONFROUTE_API_KEY"}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return tracing_params(self, stop, kwargs)

    # -- requests --------------------------------------------------------------------------

    def _request(
        self, messages: Sequence[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> RoutedRequest:
        return build_request(
            messages,
            stop=stop if stop is not None else self.stop,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            kwargs=kwargs,
        )

    # -- generation: the four methods drive one CallPlan ------------------------------------

    def _plan(
        self,
        messages: Sequence[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
        run_manager: RunManager | None,
    ) -> CallPlan:
        plan = CallPlan.for_call(self, self._request(messages, stop, kwargs), run_manager)
        # the run's metadata holds LangGraph's thread_id (a stream's run is the reporter's)
        metadata = plan.reporter.metadata if plan.reporter is not None else None
        return replace(plan, request=in_thread(plan.request, metadata))

    def _generate_with_cache(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # A streamed invoke calls _stream without the run manager; expose it for the event.
        with running(self, run_manager):
            return super()._generate_with_cache(
                messages, stop=stop, run_manager=run_manager, **kwargs
            )

    async def _agenerate_with_cache(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        with running(self, run_manager):
            return await super()._agenerate_with_cache(
                messages, stop=stop, run_manager=run_manager, **kwargs
            )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        plan = self._plan(messages, stop, kwargs, run_manager)
        reporter = plan.reporter_as(CallbackManagerForLLMRun)
        try:
            response = plan.ready or self.get_router().route(plan.messages, **plan.options)
        except EscalationError as error:
            dispatch_decision(reporter, claim_failure(error, reporter))
            raise
        dispatch_decision(reporter, response.decision)
        return to_chat_result(response)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        plan = self._plan(messages, stop, kwargs, run_manager)
        reporter = plan.reporter_as(AsyncCallbackManagerForLLMRun)
        try:
            response = plan.ready or await self.get_router().aroute(plan.messages, **plan.options)
        except EscalationError as error:
            await adispatch_decision(reporter, claim_failure(error, reporter))
            raise
        await adispatch_decision(reporter, response.decision)
        return to_chat_result(response)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        plan = self._plan(messages, stop, kwargs, run_manager)
        reporter = plan.reporter_as(CallbackManagerForLLMRun)
        try:
            if plan.streams_whole:
                whole = plan.ready or self.get_router().route(plan.messages, **plan.options)
                pieces = replay(whole)
            else:
                pieces = self.get_router().stream(plan.messages, **plan.options)
            for piece in whole_with_tools(pieces, plan.tools):
                decision, chunk = plan.step(piece)
                dispatch_decision(reporter, decision)
                if chunk is not None:
                    if run_manager is not None:
                        run_manager.on_llm_new_token(piece.text, chunk=chunk)
                    yield chunk
        except EscalationError as error:
            dispatch_decision(reporter, claim_failure(error, reporter))
            raise

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        plan = self._plan(messages, stop, kwargs, run_manager)
        reporter = plan.reporter_as(AsyncCallbackManagerForLLMRun)
        try:
            if plan.streams_whole:
                whole = plan.ready or await self.get_router().aroute(plan.messages, **plan.options)
                pieces = areplay(whole)
            else:
                pieces = self.get_router().astream(plan.messages, **plan.options)
            async for piece in awhole_with_tools(pieces, plan.tools):
                decision, chunk = plan.step(piece)
                await adispatch_decision(reporter, decision)
                if chunk is not None:
                    if run_manager is not None:
                        await run_manager.on_llm_new_token(piece.text, chunk=chunk)
                    yield chunk
        except EscalationError as error:
            await adispatch_decision(reporter, claim_failure(error, reporter))
            raise

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        """Stream the answer; the local one once scored, an escalated one token by token."""
        config = ensure_config(config)
        try:
            for chunk in super().stream(
                input, config, stop=stop, **in_config_thread(config, kwargs)
            ):
                dispatch_for_config(self, config, chunk)
                yield chunk
        except EscalationError as error:
            dispatch_failure_for_config(self, config, error)
            raise

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        """Async form of :meth:`stream`."""
        config = ensure_config(config)
        try:
            async for chunk in super().astream(
                input, config, stop=stop, **in_config_thread(config, kwargs)
            ):
                await adispatch_for_config(self, config, chunk)
                yield chunk
        except EscalationError as error:
            await adispatch_failure_for_config(self, config, error)
            raise

    # -- batching: one batched local generation for the whole batch ------------------------

    def _batch_requests(
        self, inputs: Sequence[LanguageModelInput], kwargs: dict[str, Any]
    ) -> list[RoutedRequest] | None:
        call = dict(kwargs)
        stop = call.pop("stop", None)
        return batch_requests(
            inputs, lambda item: self._request(self._convert_input(item).to_messages(), stop, call)
        )

    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage]:
        """Answer many inputs: the local model runs them as one batched generation.

        Callbacks, tracing and the decision events are per input, as with ``invoke``.
        """
        requests = self._batch_requests(inputs, kwargs)
        with answers_for_batch(self, requests, route_batch(self.get_router(), requests)):
            return super().batch(inputs, config, return_exceptions=return_exceptions, **kwargs)

    async def abatch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage]:
        """Async form of :meth:`batch` (one batched local generation, escalations concurrent)."""
        requests = self._batch_requests(inputs, kwargs)
        responses = await aroute_batch(self.get_router(), requests)
        with answers_for_batch(self, requests, responses):
            return await super().abatch(
                inputs, config, return_exceptions=return_exceptions, **kwargs
            )

    # -- tools -----------------------------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[ToolInput],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer tools to both models.

        Args:
            tools: LangChain tools, functions, pydantic classes or OpenAI/JSON schemas.
            tool_choice: ``"auto"`` (default), ``"none"``, ``"any"``/``"required"``/``True``
                (a call is asked for), or a tool's name (only that tool is offered and a call
                to it is asked for).
            **kwargs: Other per-call options (``temperature``, ``max_tokens``, ``stop``).
        """
        formatted = to_openai_tools(tools)
        choice = check_tool_choice(tool_choice, formatted)
        return super().bind(tools=formatted, tool_choice=choice, **kwargs)
