"""``ConfRouteTool``: a LangChain tool an agent calls to have confroute answer a question.

An agent on a strong model hands it cheap sub-questions (the local model answers, and says how
sure it was); an agent on the small model uses it to "seek stronger" for one step. The tool
returns ``(content, artifact)``: the answer text for the model, and the routing decision
(:class:`confroute.agent.ToolDecision` as a dict) as the ``ToolMessage``'s artifact.
"""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForToolRun, CallbackManagerForToolRun
from langchain_core.tools import BaseTool, ToolException
from pydantic import BaseModel, ConfigDict, Field

from confroute.agent import AskArguments, ToolMode, aask, as_json, ask, check_mode
from confroute.errors import InvalidRequestError
from confroute.router import ConfRouter

__all__ = ["ConfRouteTool", "ToolInputError"]

DESCRIPTION = (
    "Answer a question with a small local model that escalates to a stronger model when it is "
    "unsure. Give the question, and optionally the context (text) the answer must rest on. "
    "Returns the answer; the routing decision (confidence, escalated, answered_by, cost) comes "
    "with it."
)
LOCAL_DESCRIPTION = (
    "Answer a question with a small local model only, and report how confident it is (a "
    "number in [0, 1]; would_escalate=true means it is unsure: check the answer or ask a "
    "stronger model). Give the question, and optionally the context (text) the answer must "
    "rest on."
)


class ToolInputError(InvalidRequestError, ToolException):
    """A tool call's arguments cannot be answered (a blank question).

    Both a :class:`~confroute.errors.InvalidRequestError` and a LangChain ``ToolException``:
    with ``handle_tool_error=True`` the agent gets the message back as the tool's result.
    """


class ConfRouteTool(BaseTool):
    """A LangChain tool that answers a question with a :class:`~confroute.router.ConfRouter`.

    ``mode="route"`` (default) answers and escalates when unsure; ``mode="local"`` answers with
    the local model only and reports its confidence, so the calling agent decides. The result
    is ``content_and_artifact``: the ``ToolMessage``'s content is the answer, its ``artifact``
    the decision dict (``confidence``, ``escalated``, ``would_escalate``, ``answered_by``,
    ``cost``, ``reason``, ``estimator``, ...). Secrets never appear in either.

    Example:
        >>> from langchain_confroute import ChatConfRoute, ConfRouteTool
        >>> tool = ConfRouteTool(router=ChatConfRoute().get_router())  # doctest: +SKIP
        >>> message = tool.invoke(  # doctest: +SKIP
        ...     {"type": "tool_call", "id": "1", "name": tool.name,
        ...      "args": {"question": "What is 17*23?"}})
        >>> message.content, message.artifact["escalated"]  # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    router: ConfRouter = Field(exclude=True)
    """The router that answers (for example ``ChatConfRoute(...).get_router()``)."""
    mode: ToolMode = "route"
    """``"route"``: escalate when unsure; ``"local"``: the local model only."""
    max_tokens: int | None = Field(default=None, ge=1)
    """Answer length cap (default: the router's ``max_new_tokens``)."""
    name: str = "confroute"
    description: str = ""
    args_schema: type[BaseModel] = AskArguments
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"

    def model_post_init(self, context: Any) -> None:
        """Check the mode and describe the tool for that mode when no description is given."""
        check_mode(self.mode)
        if not self.description:
            self.description = LOCAL_DESCRIPTION if self.mode == "local" else DESCRIPTION

    def _run(
        self,
        question: str,
        context: str | None = None,
        run_manager: CallbackManagerForToolRun | None = None,
    ) -> tuple[str, dict[str, Any]]:
        try:
            text, decision = ask(
                self.router, question, context, mode=self.mode, max_new_tokens=self.max_tokens
            )
        except InvalidRequestError as error:
            raise ToolInputError(str(error)) from error
        return text, as_json(decision)

    async def _arun(
        self,
        question: str,
        context: str | None = None,
        run_manager: AsyncCallbackManagerForToolRun | None = None,
    ) -> tuple[str, dict[str, Any]]:
        try:
            text, decision = await aask(
                self.router, question, context, mode=self.mode, max_new_tokens=self.max_tokens
            )
        except InvalidRequestError as error:
            raise ToolInputError(str(error)) from error
        return text, as_json(decision)
