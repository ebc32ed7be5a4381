"""``ConfRouteLLM``: confroute as a LlamaIndex ``FunctionCallingLLM``.

Query engines, chat engines and agents call it like any LLM; each call is answered by the local
model, or escalated to the strong model when the local answer is unsure, and the decision rides
along in ``response.message.additional_kwargs["confroute"]``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncGenerator, Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.bridge.pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_serializer,
)
from llama_index.core.constants import DEFAULT_CONTEXT_WINDOW
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection

from confroute.assembly import check_choices
from confroute.backend import LocalBackend
from confroute.errors import ConfigurationError, InvalidRequestError
from confroute.estimators import Estimator
from confroute.policies import RoutingPolicy
from confroute.redaction import SecretURL
from confroute.router import ConfRouter, PromptInput
from confroute.settings import BackendName, RouterSettings, settings_from
from llamaindex_confroute.convert import (
    call_options,
    from_environment,
    router_fields,
    setting,
    to_openai_messages,
    to_openai_tools,
    tool_selections,
    with_user_message,
)
from llamaindex_confroute.events import instrument
from llamaindex_confroute.responses import (
    StreamAssembler,
    chat_partial,
    chat_response,
    completion_partial,
    completion_response,
    first_tool_call_only,
)

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

__all__ = ["DEFAULT_STRONG_MODEL", "ConfRouteLLM"]

DEFAULT_STRONG_MODEL: str = setting("strong_model")
"""The bundled 1.5B model, served in process through LiteLLM (no server, no key)."""

_DEFAULT_LOCAL_MODEL: str = setting("local_model")
_DEFAULT_ESTIMATOR: str = setting("estimator")
_DEFAULTS = (_DEFAULT_LOCAL_MODEL, DEFAULT_STRONG_MODEL, _DEFAULT_ESTIMATOR, None)
"""The defaults of local_model, strong_model, estimator and policy."""
T = TypeVar("T")

_MODEL_FIELDS = frozenset({"local_model", "strong_model", "estimator"})
"""Fields that are also arguments of the constructor (they may hold objects)."""


class ConfRouteLLM(FunctionCallingLLM):
    """A LlamaIndex LLM that answers locally and escalates to a strong model when unsure.

    The models load on the first call (or the first read of :attr:`router`).

    Example:
        >>> from llama_index.core import Settings
        >>> Settings.llm = ConfRouteLLM(threshold=0.8, max_tokens=128)  # doctest: +SKIP
        >>> response = Settings.llm.complete("What is 17*23?")  # doctest: +SKIP
        >>> response.additional_kwargs["confroute"]["escalated"]  # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    local_model: str = Field(
        default=setting("local_model"),
        description="Local model: bundled name, directory, .gguf or hub id.",
    )
    local_backend: BackendName = Field(
        default=setting("local_backend"),
        description="Engine of local_model: auto (see docs/backends.md), transformers, "
        "llama.cpp or server.",
    )
    local_api_base: SecretURL | None = Field(
        default_factory=from_environment("slm_api_base"),
        description="Base URL of the SLM's server (env CONFROUTE_SLM_API_BASE).",
    )
    local_api_key: SecretStr | None = Field(
        default_factory=from_environment("slm_api_key"),
        exclude=True,
        description="Key of the SLM's server (env CONFROUTE_SLM_API_KEY); never serialised.",
    )
    strong_model: str | list[str] | None = Field(
        default=DEFAULT_STRONG_MODEL,
        description="LiteLLM model string of the strong model, a list of cascade tiers "
        "(confroute.cascade), or None to route locally only.",
    )
    estimator: str = Field(default=setting("estimator"), description="Uncertainty estimator name.")
    tool_estimator: str | None = Field(
        default=setting("tool_estimator"),
        description="Estimator that decides an answer which is a tool call (None: estimator).",
    )
    tool_threshold: float = Field(
        default=setting("tool_threshold"),
        description="Escalate a tool call whose tool_estimator confidence is below it.",
    )
    threshold: float | None = Field(
        default=None, description="Escalate when confidence is below it (router default if None)."
    )
    escalation_rate: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Target share of escalated requests; the threshold comes from the "
        "calibration profile (the one shipped for a bundled model and estimator by default).",
    )
    calibration_profile: str | None = Field(
        default=None,
        description="Path of the calibration profile for escalation_rate (None: shipped one).",
    )
    api_base: SecretURL | None = Field(
        default_factory=from_environment("api_base"),
        description="Base URL of the strong model (env CONFROUTE_API_BASE); its userinfo is "
        "a secret, serialised masked.",
    )
    api_key: SecretStr | None = Field(
        default_factory=from_environment("api_key"),
        exclude=True,
        description="Key of the strong model (env CONFROUTE_API_KEY); never serialised.",
    )
    timeout: float = Field(
        default=setting("timeout"), gt=0, description="Seconds per escalation call."
    )
    max_retries: int = Field(
        default=setting("max_retries"), ge=0, description="Retries per strong model."
    )
    fallbacks: list[str] = Field(
        default_factory=list, description="Models tried in order when the strong model fails."
    )
    on_escalation_error: Literal["return_local", "raise"] = Field(
        default=setting("on_escalation_error"),
        description="On a failed escalation, answer with the local answer or raise.",
    )
    max_tokens: int = Field(
        default=setting("max_new_tokens"), gt=0, description="Answer token cap, both models."
    )
    temperature: float = Field(
        default=setting("temperature"), ge=0, description="Sampling temperature (0 greedy)."
    )
    device: str = Field(
        default=setting("device"), description="Device of a local model loaded by name."
    )

    _router: ConfRouter | None = PrivateAttr(default=None)
    _router_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _build: Callable[[], ConfRouter] = PrivateAttr()

    def __init__(
        self,
        local_model: str | os.PathLike[str] | LocalBackend = _DEFAULT_LOCAL_MODEL,
        strong_model: str | Sequence[str] | None = DEFAULT_STRONG_MODEL,
        *,
        estimator: str | Estimator = _DEFAULT_ESTIMATOR,
        policy: RoutingPolicy | None = None,
        router: ConfRouter | None = None,
        **fields: Any,
    ) -> None:
        """Build the LLM from router options, or around a ready :class:`ConfRouter`.

        A model given by name loads on the first call; a loaded backend (or a
        ready router) is used at once.

        Args:
            local_model: A :class:`~confroute.backend.LocalBackend` (a
                :class:`~confroute.local.LocalModel`), or what to load (bundled name,
                directory, ``.gguf`` file or hub id).
            strong_model: LiteLLM model string of the strong model, a list of cascade tiers
                (bundled names, ``.gguf`` files, prefixed strings, a LiteLLM string last;
                see :mod:`confroute.cascade`), or None for local only.
            estimator: Name of an uncertainty estimator, or an instance.
            policy: A routing policy (instead of ``threshold``), e.g. a target escalation rate.
            router: A ready router; give it alone (its options come from it).
            **fields: The other fields (``threshold``, ``api_key``, ``max_tokens``, ...) and
                LlamaIndex's LLM options (``system_prompt``, ``callback_manager``, ...).
                Unknown names are rejected.

        Raises:
            ConfigurationError: Router options were given together with ``router``, a setting
                is out of its bounds, or ``threshold``, ``escalation_rate`` and ``policy``
                contradict each other.
        """
        if router is not None:
            given = sorted(ROUTER_FIELDS & fields.keys())
            if given or (local_model, strong_model, estimator, policy) != _DEFAULTS:
                raise ConfigurationError(
                    "Give either router=... or the router's options (local_model, "
                    f"strong_model, estimator, policy, {', '.join(sorted(ROUTER_FIELDS))}), "
                    f"not both; got router and {given or 'model/estimator/policy options'}."
                )
            super().__init__(**router_fields(router), **fields)
            ready = instrument(router)
            self._router, self._build = ready, lambda: ready
            return
        super().__init__(
            local_model=local_model.name
            if isinstance(local_model, LocalBackend)
            else os.fspath(local_model),
            strong_model=strong_model
            if strong_model is None or isinstance(strong_model, str)
            else list(strong_model),
            estimator=estimator if isinstance(estimator, str) else estimator.name,
            **fields,
        )
        settings = self._settings()
        profile = self.calibration_profile
        check_choices(settings, policy, profile, ())  # contradictions fail now, not at first call

        def build() -> ConfRouter:
            return instrument(
                ConfRouter(
                    local_model,
                    strong_model
                    if strong_model is None or isinstance(strong_model, str)
                    else list(strong_model),
                    settings=settings,
                    estimator=estimator,
                    policy=policy,
                    profile=profile,
                )
            )

        self._build = build
        if isinstance(local_model, LocalBackend):
            self._router = build()  # nothing to load: settings errors surface now

    @field_serializer("api_base", "local_api_base")
    def _masked_api_base(self, api_base: SecretURL | None) -> str | None:
        """The base URL as serialised: its userinfo masked (``http://***@host/v1``)."""
        return None if api_base is None else str(api_base)

    def _settings(self) -> RouterSettings:
        """The :class:`RouterSettings` the fields hold (validated now, before any loading)."""
        values: dict[str, Any] = {
            name: getattr(self, name) for name in SETTINGS_FIELDS if name not in _MODEL_FIELDS
        }
        values["max_new_tokens"] = self.max_tokens
        return settings_from(None, **values)

    @classmethod
    def class_name(cls) -> str:
        """Name of the class in LlamaIndex serialisation."""
        return "ConfRouteLLM"

    @property
    def router(self) -> ConfRouter:
        """The (instrumented) router that answers every call; built on first use."""
        router = self._router
        if router is None:
            with self._router_lock:
                router = self._router
                if router is None:
                    router = self._router = self._build()
        return router

    @property
    def metadata(self) -> LLMMetadata:
        """A chat and function-calling model; the context window is the local model's.

        Reading it loads nothing: until a model given by name is loaded (the first call),
        the context window is LlamaIndex's default.
        """
        router = self._router
        if router is None:
            local, strong = self.local_model, self.strong_model
            context_window = DEFAULT_CONTEXT_WINDOW
        else:
            local = router.local.name
            strong = router.escalation.model if router.escalation else None
            context_window = router.local.context_window
        return LLMMetadata(
            context_window=context_window,
            num_output=self.max_tokens,
            is_chat_model=True,
            is_function_calling_model=True,
            model_name=f"{local}->{strong}" if strong else local,
        )

    # -- requests and responses ------------------------------------------------------------

    def _options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return call_options(kwargs, max_tokens=self.max_tokens, temperature=self.temperature)

    def _stream(
        self, prompt: PromptInput, options: dict[str, Any], assembler: StreamAssembler[T]
    ) -> Generator[T, None, None]:
        for chunk in self.router.stream(prompt, **options):
            yield from assembler.feed(chunk)

    async def _astream(
        self, prompt: PromptInput, options: dict[str, Any], assembler: StreamAssembler[T]
    ) -> AsyncGenerator[T, None]:
        async for chunk in self.router.astream(prompt, **options):
            for response in assembler.feed(chunk):
                yield response

    # -- chat ------------------------------------------------------------------------------

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Answer a conversation (tools in ``tools=``), escalating when unsure."""
        options = self._options(kwargs)
        return chat_response(self.router.route(to_openai_messages(messages), **options))

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Async form of :meth:`chat` (local work in a worker thread, escalation awaited)."""
        options = self._options(kwargs)
        return chat_response(await self.router.aroute(to_openai_messages(messages), **options))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Stream an answer; the last chunk carries the decision, log-probs and tool calls."""
        options, conversation = self._options(kwargs), to_openai_messages(messages)
        assembler = StreamAssembler(chat_partial, chat_response)
        return self._stream(conversation, options, assembler)

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        """Async form of :meth:`stream_chat`."""
        options, conversation = self._options(kwargs), to_openai_messages(messages)
        assembler = StreamAssembler(chat_partial, chat_response)
        return self._astream(conversation, options, assembler)

    # -- completion ------------------------------------------------------------------------

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Answer a prompt as one user message (the local model's chat template applies)."""
        return completion_response(self.router.route(prompt, **self._options(kwargs)))

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        """Async form of :meth:`complete`."""
        return completion_response(await self.router.aroute(prompt, **self._options(kwargs)))

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        """Stream a completion; the last chunk carries the decision."""
        options = self._options(kwargs)
        assembler = StreamAssembler(completion_partial, completion_response)
        return self._stream(prompt, options, assembler)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        """Async form of :meth:`stream_complete`."""
        options = self._options(kwargs)
        assembler = StreamAssembler(completion_partial, completion_response)
        return self._astream(prompt, options, assembler)

    # -- tools -----------------------------------------------------------------------------

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        tool_choice: str | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The ``chat`` arguments that offer ``tools`` to both models.

        A well-formed, confident local tool call is kept; a malformed or unsure one, or one
        that repeats a call a tool has already answered in the conversation, escalates.
        ``tool_choice="none"`` offers no tools; other choices and ``tool_required`` cannot be
        enforced on the local model and only offer the tools.
        """
        messages = with_user_message(chat_history, user_msg)
        offered = [] if tool_choice == "none" else to_openai_tools(tools)
        return {"messages": messages, "tools": offered or None, **kwargs}

    def _validate_chat_with_tools_response(
        self,
        response: ChatResponse,
        tools: Sequence[BaseTool],
        allow_parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        """Keep only the first tool call unless parallel calls are allowed."""
        return response if allow_parallel_tool_calls else first_tool_call_only(response)

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """The tool calls of a response as LlamaIndex ``ToolSelection`` objects.

        Raises:
            InvalidRequestError: There is no tool call and ``error_on_no_tool_call`` is True,
                or an unknown option was passed.
        """
        if kwargs:
            raise InvalidRequestError(
                f"Unknown option(s) {sorted(kwargs)} for get_tool_calls_from_response."
            )
        selections = tool_selections(response.message)
        if not selections and error_on_no_tool_call:
            raise InvalidRequestError(
                "Expected at least one tool call, but the answer has none; pass "
                "error_on_no_tool_call=False to accept plain answers."
            )
        return selections


SETTINGS_FIELDS = frozenset(RouterSettings.model_fields) & frozenset(ConfRouteLLM.model_fields)
"""The fields of :class:`ConfRouteLLM` that are router settings, under the same name."""

ROUTER_FIELDS = (SETTINGS_FIELDS - _MODEL_FIELDS) | {"max_tokens", "calibration_profile"}
"""Fields that configure the router; they conflict with a ready ``router``."""
