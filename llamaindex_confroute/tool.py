"""A LlamaIndex tool that has confroute answer a question: :func:`confroute_tool`.

An agent (``FunctionAgent``, ``ReActAgent``, ...) calls it with ``question`` and optionally
``context``; the :class:`~llama_index.core.tools.ToolOutput` it returns holds the answer as its
content and the routing decision (:class:`confroute.agent.ToolDecision` as a dict) as its
``raw_output``, which the agent's ``ToolCallResult`` event carries.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.tools import AsyncBaseTool, ToolMetadata, ToolOutput
from pydantic import ValidationError

from confroute.agent import AskArguments, ToolDecision, aask, as_json, ask, check_mode
from confroute.errors import InvalidRequestError
from confroute.router import ConfRouter

__all__ = ["ConfRouteQueryTool", "confroute_tool"]

DESCRIPTION = (
    "Answer a question with a small local model that escalates to a stronger model when it is "
    "unsure. Arguments: question (required) and context (optional text the answer must rest "
    "on). Returns the answer."
)
LOCAL_DESCRIPTION = (
    "Answer a question with a small local model only, and report how confident it is. "
    "Arguments: question (required) and context (optional text the answer must rest on)."
)


class ConfRouteQueryTool(AsyncBaseTool):
    """The tool :func:`confroute_tool` returns: sync ``call`` and async ``acall``.

    It is an ``AsyncBaseTool`` rather than a ``FunctionTool`` because a ``FunctionTool``'s
    content is ``str(raw_output)``; here the content is the answer and the raw output the
    decision.
    """

    def __init__(
        self,
        router: ConfRouter,
        *,
        name: str = "confroute",
        description: str | None = None,
        mode: str = "route",
        max_tokens: int | None = None,
    ) -> None:
        self.router = router
        self.mode = check_mode(mode)
        self.max_tokens = max_tokens
        chosen = description or (LOCAL_DESCRIPTION if self.mode == "local" else DESCRIPTION)
        self._metadata = ToolMetadata(description=chosen, name=name, fn_schema=AskArguments)

    @property
    def metadata(self) -> ToolMetadata:
        """Name, description and the argument schema (``question``, ``context``)."""
        return self._metadata

    def _arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> AskArguments:
        """The call's arguments: keywords, or the question as the one positional argument.

        Raises:
            InvalidRequestError: The question is missing or blank, or an argument is unknown.
        """
        if len(args) == 1 and "question" not in kwargs:
            kwargs = {"question": args[0], **kwargs}
        elif args:
            raise InvalidRequestError(
                f"{self.metadata.get_name()} takes question= and context=; got {len(args)} "
                "positional arguments."
            )
        unknown = sorted(set(kwargs) - set(AskArguments.model_fields))
        if unknown:
            raise InvalidRequestError(
                f"{self.metadata.get_name()} takes question= and context=, not {unknown}."
            )
        try:
            return AskArguments.model_validate(kwargs)
        except ValidationError as error:
            problems = "; ".join(str(e["msg"]) for e in error.errors())
            raise InvalidRequestError(
                f"{self.metadata.get_name()}: {problems} (question is the question to answer)."
            ) from None

    def _output(self, arguments: AskArguments, text: str, decision: ToolDecision) -> ToolOutput:
        return ToolOutput(
            tool_name=self.metadata.get_name(),
            content=text,
            raw_input=arguments.model_dump(),
            raw_output=as_json(decision),
        )

    def call(self, *args: Any, **kwargs: Any) -> ToolOutput:
        """Answer ``question`` (resting on ``context``); content is the answer.

        Raises:
            InvalidRequestError: The question is missing or blank.
            EscalationError: Escalation failed and the router raises on that.
        """
        arguments = self._arguments(args, kwargs)
        text, decision = ask(
            self.router,
            arguments.question,
            arguments.context,
            mode=self.mode,
            max_new_tokens=self.max_tokens,
        )
        return self._output(arguments, text, decision)

    async def acall(self, *args: Any, **kwargs: Any) -> ToolOutput:
        """Async form of :meth:`call` (the local model runs in a worker thread)."""
        arguments = self._arguments(args, kwargs)
        text, decision = await aask(
            self.router,
            arguments.question,
            arguments.context,
            mode=self.mode,
            max_new_tokens=self.max_tokens,
        )
        return self._output(arguments, text, decision)


def confroute_tool(
    router: ConfRouter,
    *,
    name: str = "confroute",
    description: str | None = None,
    mode: str = "route",
    max_tokens: int | None = None,
) -> ConfRouteQueryTool:
    """A LlamaIndex tool answering ``question`` (with optional ``context``) through ``router``.

    Args:
        router: The router that answers (for example ``ConfRouteLLM(...).router``).
        name: The tool's name, as the agent sees it.
        description: What the agent is told the tool does (default: one for the mode).
        mode: ``"route"`` (answer, escalating when unsure) or ``"local"`` (the local model
            only; the decision's ``confidence`` and ``would_escalate`` let the agent decide).
        max_tokens: Answer length cap (default: the router's ``max_new_tokens``).

    Returns:
        A tool whose ``ToolOutput`` content is the answer and ``raw_output`` the decision dict
        (``confidence``, ``escalated``, ``would_escalate``, ``answered_by``, ``cost``, ...).

    Raises:
        ConfigurationError: ``mode`` is neither ``"route"`` nor ``"local"``.

    Example:
        >>> from llamaindex_confroute import ConfRouteLLM, confroute_tool
        >>> tool = confroute_tool(ConfRouteLLM().router)  # doctest: +SKIP
        >>> output = tool.call(question="What is 17*23?")  # doctest: +SKIP
        >>> output.content, output.raw_output["escalated"]  # doctest: +SKIP
    """
    return ConfRouteQueryTool(
        router, name=name, description=description, mode=mode, max_tokens=max_tokens
    )
