"""Responses: a routed answer as LlamaIndex chat / completion responses, whole or streamed."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    LogProb,
    MessageRole,
    TextBlock,
    ToolCallBlock,
)

from confroute.decision import RoutingDecision
from confroute.errors import InvalidRequestError
from confroute.response import RoutedChunk, RoutedResponse
from llamaindex_confroute.convert import tool_arguments

__all__ = [
    "DECISION_KEY",
    "StreamAssembler",
    "chat_partial",
    "chat_response",
    "completion_partial",
    "completion_response",
    "first_tool_call_only",
    "response_message",
    "routing_decision",
    "to_logprobs",
    "usage",
]

DECISION_KEY = "confroute"
"""Key of the routing decision (a JSON-ready dict) in ``message.additional_kwargs``."""

T = TypeVar("T")


def to_logprobs(openai_logprobs: Mapping[str, Any] | None) -> list[list[LogProb]] | None:
    """OpenAI-shaped log-probabilities as LlamaIndex's ``List[List[LogProb]]``.

    One list per answer token: the chosen token first, then the other top-k alternatives.
    """
    if not openai_logprobs or not openai_logprobs.get("content"):
        return None
    result = []
    for item in openai_logprobs["content"]:
        chosen = LogProb(
            token=item["token"], logprob=item["logprob"], bytes=list(item.get("bytes") or [])
        )
        others = [
            LogProb(token=alt["token"], logprob=alt["logprob"], bytes=list(alt.get("bytes") or []))
            for alt in item.get("top_logprobs") or []
            if alt["token"] != item["token"]
        ]
        result.append([chosen, *others])
    return result


def usage(response: RoutedResponse) -> dict[str, int]:
    """Token counts of the model that answered, under the keys LlamaIndex's counters read."""
    return response.usage


def response_message(response: RoutedResponse) -> ChatMessage:
    """The assistant message of a routed answer, with tool calls and the decision attached."""
    blocks: list[Any] = [TextBlock(text=response.text)]
    extra: dict[str, Any] = {DECISION_KEY: response.decision.model_dump(mode="json")}
    if response.tool_calls:
        extra["tool_calls"] = [dict(call) for call in response.tool_calls]
        for call in response.tool_calls:
            function = call.get("function", {})
            blocks.append(
                ToolCallBlock(
                    tool_call_id=call.get("id"),
                    tool_name=function.get("name", ""),
                    tool_kwargs=tool_arguments(function.get("arguments")),
                )
            )
    return ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks, additional_kwargs=extra)


def chat_response(routed: RoutedResponse, delta: str | None = None) -> ChatResponse:
    """A whole chat response (or the last streamed chunk, with ``delta``)."""
    counts = routed.usage
    return ChatResponse(
        message=response_message(routed),
        raw={"model": routed.decision.answered_by, "usage": counts},
        delta=delta,
        logprobs=to_logprobs(routed.logprobs),
        additional_kwargs=counts,
    )


def completion_response(routed: RoutedResponse, delta: str | None = None) -> CompletionResponse:
    """A whole completion response; the decision sits in ``additional_kwargs``."""
    counts = routed.usage
    return CompletionResponse(
        text=routed.text,
        raw={"model": routed.decision.answered_by, "usage": counts},
        delta=delta,
        logprobs=to_logprobs(routed.logprobs),
        additional_kwargs={**counts, DECISION_KEY: routed.decision.model_dump(mode="json")},
    )


def chat_partial(text: str, delta: str) -> ChatResponse:
    """A streamed chat chunk before the last: text so far and the new piece."""
    return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=delta)


def completion_partial(text: str, delta: str) -> CompletionResponse:
    """A streamed completion chunk before the last."""
    return CompletionResponse(text=text, delta=delta)


class StreamAssembler(Generic[T]):
    """Turn routed chunks into cumulative responses; the last one carries the decision.

    Each text piece is held back one step so that the final piece and the decision arrive in
    the same response (no empty trailing chunk).
    """

    def __init__(
        self,
        partial: Callable[[str, str], T],
        final: Callable[[RoutedResponse, str], T],
    ) -> None:
        """Build chunks with ``partial(text so far, delta)`` and ``final(response, delta)``."""
        self.partial, self.final = partial, final
        self.text, self.pending = "", ""

    def feed(self, chunk: RoutedChunk) -> Iterator[T]:
        """The responses that ``chunk`` completes (none, one, or the final one)."""
        if chunk.response is not None:
            routed = chunk.response
            text = routed.text
            delta = text[len(self.text) :] if text.startswith(self.text) else self.pending
            yield self.final(routed, delta)
            return
        if not chunk.text:
            return
        if self.pending:
            self.text += self.pending
            yield self.partial(self.text, self.pending)
        self.pending = chunk.text


def routing_decision(response: ChatResponse | CompletionResponse) -> RoutingDecision:
    """The :class:`RoutingDecision` carried by a (final) response of ``ConfRouteLLM``.

    Raises:
        InvalidRequestError: The response carries no decision (a streamed chunk before the
            last, or a response of another LLM).
    """
    extra = (
        response.message.additional_kwargs
        if isinstance(response, ChatResponse)
        else response.additional_kwargs
    )
    if DECISION_KEY not in extra:
        raise InvalidRequestError(
            "This response carries no routing decision; read it from a ConfRouteLLM response "
            "(for streams, from the last chunk)."
        )
    return RoutingDecision.model_validate(extra[DECISION_KEY])


def first_tool_call_only(response: ChatResponse) -> ChatResponse:
    """Drop every tool call of ``response`` but the first (when parallel calls are not wanted)."""
    calls = response.message.additional_kwargs.get("tool_calls") or []
    if len(calls) <= 1:
        return response
    response.message.additional_kwargs["tool_calls"] = calls[:1]
    first = next(b for b in response.message.blocks if isinstance(b, ToolCallBlock))
    response.message.blocks = [
        b for b in response.message.blocks if not isinstance(b, ToolCallBlock) or b is first
    ]
    return response
