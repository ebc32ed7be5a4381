"""``ConfRouteLLM``: confroute as a LlamaIndex ``FunctionCallingLLM``.

Query engines, chat engines and agents call it like any LLM; each call is answered by the local
model, or escalated to the strong model when the local answer is unsure, and the decision rides
along in ``response.message.additional_kwargs["confroute"]``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Generator, Sequence
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
    MessageRole,
)
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr, SecretStr
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection

from confroute.backend import LocalBackend
from confroute.errors import ConfigurationError, InvalidRequestError
from confroute.estimators import Estimator
from confroute.models import DEFAULT_LLM, DEFAULT_SLM
from confroute.policies import RoutingPolicy
from confroute.router import ConfRouter, PromptInput, RoutedResponse
from confroute.settings import LOCAL_PROVIDER
from llamaindex_confroute.convert import (
    router_fields,
    to_openai_messages,
    to_openai_tools,
    tool_selections,
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

DEFAULT_STRONG_MODEL = f"{LOCAL_PROVIDER}/{DEFAULT_LLM}"
"""The bundled 1.5B model, served in process through LiteLLM (no server, no key)."""

_CALL_OPTIONS = ("max_tokens", "temperature", "stop", "tools")
T = TypeVar("T")

_ROUTER_FIELDS = frozenset(
    {"threshold", "api_base", "api_key", "timeout", "max_retries", "fallbacks"}
    | {"on_escalation_error", "max_tokens", "temperature", "device"}
    | {"escalation_rate", "calibration_profile"}
)


class ConfRouteLLM(FunctionCallingLLM):
    """A LlamaIndex LLM that answers locally and escalates to a strong model when unsure.

    Example:
        >>> from llama_index.core import Settings
        >>> Settings.llm = ConfRouteLLM(threshold=0.8, max_tokens=128)  # doctest: +SKIP
        >>> response = Settings.llm.complete("What is 17*23?")  # doctest: +SKIP
        >>> response.additional_kwargs["confroute"]["escalated"]  # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    local_model: str = Field(
        default=DEFAULT_SLM, description="Local model: bundled name, directory, .gguf or hub id."
    )
    strong_model: str | None = Field(
        default=DEFAULT_STRONG_MODEL,
        description="LiteLLM model string of the strong model; None routes locally only.",
    )
    estimator: str = Field(default="perplexity", description="Uncertainty estimator name.")
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
    api_base: str | None = Field(default=None, description="Base URL of the strong model.")
    api_key: SecretStr | None = Field(
        default=None, exclude=True, description="Key of the strong model; never serialised."
    )
    timeout: float = Field(default=120.0, gt=0, description="Seconds per escalation call.")
    max_retries: int = Field(default=2, ge=0, description="Retries per strong model.")
    fallbacks: list[str] = Field(
        default_factory=list, description="Models tried in order when the strong model fails."
    )
    on_escalation_error: Literal["return_local", "raise"] = Field(
        default="return_local",
        description="On a failed escalation, answer with the local answer or raise.",
    )
    max_tokens: int = Field(default=256, gt=0, description="Answer token cap, both models.")
    temperature: float = Field(default=0.0, ge=0, description="Sampling temperature (0 greedy).")
    device: str = Field(default="auto", description="Device of a local model loaded by name.")

    _router: ConfRouter = PrivateAttr()

    def __init__(
        self,
        local_model: str | os.PathLike[str] | LocalBackend = DEFAULT_SLM,
        strong_model: str | None = DEFAULT_STRONG_MODEL,
        *,
        estimator: str | Estimator = "perplexity",
        policy: RoutingPolicy | None = None,
        router: ConfRouter | None = None,
        **fields: Any,
    ) -> None:
        """Build the LLM from router options, or around a ready :class:`ConfRouter`.

        Args:
            local_model: A :class:`~confroute.backend.LocalBackend` (a
                :class:`~confroute.local.LocalModel`), or what to load (bundled name,
                directory, ``.gguf`` file or hub id).
            strong_model: LiteLLM model string of the strong model, or None for local only.
            estimator: Name of an uncertainty estimator, or an instance.
            policy: A routing policy (instead of ``threshold``), e.g. a target escalation rate.
            router: A ready router; give it alone (its options come from it).
            **fields: The other fields (``threshold``, ``api_key``, ``max_tokens``, ...) and
                LlamaIndex's LLM options (``system_prompt``, ``callback_manager``, ...).
                Unknown names are rejected.

        Raises:
            ConfigurationError: Router options were given together with ``router``, or
                ``threshold`` together with ``policy``.
        """
        if router is not None:
            given = sorted(_ROUTER_FIELDS & fields.keys())
            if (
                given
                or policy is not None
                or local_model != DEFAULT_SLM
                or strong_model != DEFAULT_STRONG_MODEL
                or estimator != "perplexity"
            ):
                raise ConfigurationError(
                    "Give either router=... or the router's options (local_model, "
                    f"strong_model, estimator, policy, {', '.join(sorted(_ROUTER_FIELDS))}), "
                    f"not both; got router and {given or 'model/estimator/policy options'}."
                )
            super().__init__(**router_fields(router), **fields)
        else:
            super().__init__(
                local_model=local_model.name
                if isinstance(local_model, LocalBackend)
                else os.fspath(local_model),
                strong_model=strong_model,
                estimator=estimator if isinstance(estimator, str) else estimator.name,
                **fields,
            )
            router = ConfRouter(
                local_model=local_model,
                strong_model=strong_model,
                estimator=estimator,
                threshold=self.threshold,
                policy=policy,
                escalation_rate=self.escalation_rate,
                profile=self.calibration_profile,
                api_base=self.api_base,
                api_key=self.api_key,
                timeout=self.timeout,
                max_retries=self.max_retries,
                fallbacks=self.fallbacks,
                on_escalation_error=self.on_escalation_error,
                max_new_tokens=self.max_tokens,
                temperature=self.temperature,
                device=self.device,
            )
        self._router = instrument(router)

    @classmethod
    def class_name(cls) -> str:
        """Name of the class in LlamaIndex serialisation."""
        return "ConfRouteLLM"

    @property
    def router(self) -> ConfRouter:
        """The (instrumented) router that answers every call."""
        return self._router

    @property
    def metadata(self) -> LLMMetadata:
        """Context window of the local model; a chat and function-calling model."""
        local = self._router.local.name
        strong = self._router.escalation.model if self._router.escalation else None
        return LLMMetadata(
            context_window=self._router.local.context_window,
            num_output=self.max_tokens,
            is_chat_model=True,
            is_function_calling_model=True,
            model_name=f"{local}->{strong}" if strong else local,
        )

    # -- requests and responses ------------------------------------------------------------

    def _options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(kwargs) - set(_CALL_OPTIONS))
        if unknown:
            raise InvalidRequestError(
                f"Unknown option(s) {unknown} for ConfRouteLLM; per call it accepts "
                f"{list(_CALL_OPTIONS)}. Set other options when building the LLM."
            )
        tools = kwargs.get("tools") or None
        if tools is not None:
            tools = [t if isinstance(t, dict) else to_openai_tools([t])[0] for t in tools]
        temperature = kwargs.get("temperature")
        return {
            "max_new_tokens": kwargs.get("max_tokens") or self.max_tokens,
            "temperature": self.temperature if temperature is None else temperature,
            "stop": kwargs.get("stop"),
            "tools": tools,
        }

    def _route(self, prompt: PromptInput, options: dict[str, Any]) -> RoutedResponse:
        return self._router.route(prompt, **options)

    async def _aroute(self, prompt: PromptInput, options: dict[str, Any]) -> RoutedResponse:
        return await self._router.aroute(prompt, **options)

    def _stream(
        self, prompt: PromptInput, options: dict[str, Any], assembler: StreamAssembler[T]
    ) -> Generator[T, None, None]:
        for chunk in self._router.stream(prompt, **options):
            yield from assembler.feed(chunk)

    async def _astream(
        self, prompt: PromptInput, options: dict[str, Any], assembler: StreamAssembler[T]
    ) -> AsyncGenerator[T, None]:
        async for chunk in self._router.astream(prompt, **options):
            for response in assembler.feed(chunk):
                yield response

    # -- chat ------------------------------------------------------------------------------

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Answer a conversation (tools in ``tools=``), escalating when unsure."""
        return chat_response(self._route(to_openai_messages(messages), self._options(kwargs)))

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Async form of :meth:`chat` (local work in a worker thread, escalation awaited)."""
        options = self._options(kwargs)
        return chat_response(await self._aroute(to_openai_messages(messages), options))

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
        return completion_response(self._route(prompt, self._options(kwargs)))

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        """Async form of :meth:`complete`."""
        return completion_response(await self._aroute(prompt, self._options(kwargs)))

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
        messages = list(chat_history or [])
        if user_msg is not None:
            messages.append(
                ChatMessage(role=MessageRole.USER, content=user_msg)
                if isinstance(user_msg, str)
                else user_msg
            )
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
