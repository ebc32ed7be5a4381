"""The OpenAI chat-completions wire format: parse a request, shape a response or a stream chunk.

Pure functions (no HTTP) so that the server stays small and the format is tested on its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confroute.conversation import check_conversation_id
from confroute.decision import RoutingDecision
from confroute.errors import ConfigurationError, InvalidRequestError
from confroute.response import RoutedResponse

__all__ = [
    "ChatRequest",
    "completion_body",
    "decision_headers",
    "error_body",
    "parse_chat_request",
    "stream_chunk",
]

CONVERSATION_HEADER = "X-Conversation-Id"
"""The request header that names a conversation (it wins over the body's ``user`` field)."""

_IGNORED = frozenset({"seed", "metadata", "store", "parallel_tool_calls", "service_tier"})
"""Fields that are accepted and do not change the answer."""

_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "stream",
        "stream_options",
        "tools",
        "tool_choice",
        "logprobs",
        "top_logprobs",
        "n",
        "presence_penalty",
        "frequency_penalty",
        "response_format",
        "user",
    }
    | _IGNORED
)


@dataclass(frozen=True)
class ChatRequest:
    """A validated ``/v1/chat/completions`` request.

    Attributes:
        model: The model name the client asked for.
        messages: The conversation (OpenAI-shaped dicts).
        max_tokens: Answer length cap, or None for the router's default.
        temperature: Sampling temperature, or None for the router's default.
        stop: Stop sequences.
        stream: Whether to answer with server-sent events.
        include_usage: Whether a streamed answer ends with a usage chunk.
        tools: OpenAI tool definitions offered to the model.
        logprobs: Whether to return log-probabilities.
        top_logprobs: Alternatives per token to return (None: none, as OpenAI does).
        conversation_id: The conversation (the :data:`CONVERSATION_HEADER` header, else the
            ``user`` field), for a conversation-aware policy; None: derived from the messages.
    """

    model: str
    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    temperature: float | None = None
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False
    tools: list[dict[str, Any]] | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    ignored: tuple[str, ...] = field(default=())
    conversation_id: str | None = None


def _fail(message: str, param: str | None = None) -> InvalidRequestError:
    error = InvalidRequestError(message)
    error.param = param  # type: ignore[attr-defined]
    return error


def _number(body: Mapping[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(f"'{name}' must be a number, got {value!r}.", name)
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(f"'{name}' must be a finite number, got {value!r}.", name)
    if kind is int and int(value) != value:
        raise _fail(f"'{name}' must be an integer, got {value!r}.", name)
    return kind(value)


def _check_tool_calls(calls: Any, where: str) -> None:
    if not isinstance(calls, list):
        raise _fail(f"'{where}' must be a list of tool calls, got {type(calls).__name__}.", where)
    for index, call in enumerate(calls):
        at = f"{where}[{index}]"
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping):
            raise _fail(
                f"'{at}' must be {{'id': ..., 'type': 'function', 'function': {{'name': ..., "
                "'arguments': '<JSON>'}}.",
                at,
            )
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise _fail(f"'{at}.function.name' must be a non-empty string.", f"{at}.function.name")
        arguments = function.get("arguments")
        if arguments is not None and not isinstance(arguments, (str, Mapping)):
            raise _fail(
                f"'{at}.function.arguments' must be a JSON string.", f"{at}.function.arguments"
            )
        if call.get("id") is not None and not isinstance(call["id"], str):
            raise _fail(f"'{at}.id' must be a string.", f"{at}.id")


def _check_messages(messages: list[Any]) -> None:
    """The shape of each message, with the field to fix (the router checks roles and text)."""
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, Mapping):
            raise _fail(f"'{where}' must be an object with 'role' and 'content'.", where)
        if not isinstance(message.get("role"), str):
            raise _fail(f"'{where}.role' must be a string such as 'user'.", f"{where}.role")
        content = message.get("content")
        parts = content if isinstance(content, list) else []
        if content is not None and not isinstance(content, (str, list)):
            raise _fail(
                f"'{where}.content' must be a string or a list of text parts.", f"{where}.content"
            )
        for number, part in enumerate(parts):
            at = f"{where}.content[{number}]"
            if isinstance(part, str):
                continue
            if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
                raise _fail(f"'{at}' must be a {{'type': 'text', 'text': ...}} part.", at)
            if part["type"] == "text" and not isinstance(part.get("text"), str):
                raise _fail(f"'{at}.text' must be a string.", f"{at}.text")
        if message.get("tool_calls") is not None:
            _check_tool_calls(message["tool_calls"], f"{where}.tool_calls")
        for key in ("tool_call_id", "name"):
            if message.get(key) is not None and not isinstance(message[key], str):
                raise _fail(f"'{where}.{key}' must be a string.", f"{where}.{key}")


def _conversation_id(header: str | None, user: Any) -> str | None:
    """The request's conversation key: the header, else the ``user`` field, checked."""
    where = "user" if header is None else CONVERSATION_HEADER
    try:
        return check_conversation_id(header if header is not None else user)
    except ConfigurationError as error:
        raise _fail(str(error), where) from None


def parse_chat_request(body: Any, conversation_header: str | None = None) -> ChatRequest:
    """Check a request body and return what the router needs.

    Args:
        body: The decoded JSON body.
        conversation_header: The :data:`CONVERSATION_HEADER` value sent, if any.

    Raises:
        InvalidRequestError: A field is unknown, malformed, or asks for something this server
            cannot do (``n`` > 1, ``top_p`` < 1, penalties, JSON mode, a forced tool choice);
            the error's ``param`` names the field.
    """
    if not isinstance(body, Mapping):
        raise _fail("The request body must be a JSON object.")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise _fail(
            f"Unsupported field(s) {unknown}; this server accepts {sorted(_FIELDS)}.", unknown[0]
        )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _fail("'model' is required: use the id listed by GET /v1/models.", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _fail("'messages' must be a non-empty list of chat messages.", "messages")
    _check_messages(messages)
    if body.get("n") not in (None, 1):
        raise _fail("Only n=1 is supported: send one request per answer.", "n")
    if _number(body, "top_p", float) not in (None, 1.0):
        raise _fail("Only top_p=1 is supported; set 'temperature' instead.", "top_p")
    for penalty in ("presence_penalty", "frequency_penalty"):
        if _number(body, penalty, float) not in (None, 0.0):
            raise _fail(f"'{penalty}' is not supported; leave it out or set 0.", penalty)
    response_format = body.get("response_format")
    if response_format is not None and (
        not isinstance(response_format, Mapping) or response_format.get("type") != "text"
    ):
        raise _fail("Only response_format {'type': 'text'} is supported.", "response_format")
    max_tokens = _number(body, "max_completion_tokens", int)
    if max_tokens is None:
        max_tokens = _number(body, "max_tokens", int)
    if max_tokens is not None and max_tokens < 1:
        raise _fail(f"'max_tokens' must be >= 1, got {max_tokens}.", "max_tokens")
    temperature = _number(body, "temperature", float)
    if temperature is not None and not 0 <= temperature <= 2:
        raise _fail(f"'temperature' must be in [0, 2], got {temperature}.", "temperature")
    stop_field = body.get("stop")
    if stop_field is None:
        stop: tuple[str, ...] = ()
    elif isinstance(stop_field, str):
        stop = (stop_field,)
    elif isinstance(stop_field, list) and all(isinstance(s, str) for s in stop_field):
        stop = tuple(stop_field)
    else:
        raise _fail("'stop' must be a string or a list of strings.", "stop")
    tools = body.get("tools")
    if tools is not None and not (
        isinstance(tools, list) and all(isinstance(t, Mapping) for t in tools)
    ):
        raise _fail("'tools' must be a list of OpenAI tool objects.", "tools")
    tool_choice = body.get("tool_choice")
    if tool_choice not in (None, "auto", "none"):
        raise _fail("Only tool_choice 'auto' or 'none' is supported.", "tool_choice")
    if tool_choice == "none":
        tools = None
    top_logprobs = _number(body, "top_logprobs", int)
    if top_logprobs is not None and not 0 <= top_logprobs <= 20:
        raise _fail(f"'top_logprobs' must be in [0, 20], got {top_logprobs}.", "top_logprobs")
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, Mapping):
        raise _fail("'stream_options' must be an object.", "stream_options")
    return ChatRequest(
        model=model,
        messages=[dict(m) if isinstance(m, Mapping) else m for m in messages],
        max_tokens=max_tokens,
        temperature=temperature,
        stop=stop,
        stream=bool(body.get("stream", False)),
        include_usage=bool(stream_options.get("include_usage", False)),
        tools=[dict(t) for t in tools] if tools else None,
        logprobs=bool(body.get("logprobs", False)) or top_logprobs is not None,
        top_logprobs=top_logprobs,
        ignored=tuple(sorted(set(body) & _IGNORED)),
        conversation_id=_conversation_id(conversation_header, body.get("user")),
    )


def decision_headers(decision: RoutingDecision) -> dict[str, str]:
    """The ``x-confroute-*`` response headers of a decision."""
    confidence = "none" if decision.confidence is None else f"{decision.confidence:.6f}"
    return {
        "x-confroute-escalated": "true" if decision.escalated else "false",
        "x-confroute-confidence": confidence,
        "x-confroute-threshold": f"{decision.threshold:.6f}",
        "x-confroute-reason": decision.reason,
        "x-confroute-answered-by": decision.answered_by,
        "x-confroute-decision-id": decision.id,
        "x-confroute-estimator": decision.estimator,
    }


def _trimmed_logprobs(response: RoutedResponse, request: ChatRequest) -> dict[str, Any] | None:
    if not request.logprobs:
        return None
    logprobs = response.logprobs
    if logprobs is None:
        return None
    keep = request.top_logprobs or 0  # as OpenAI: no alternatives unless top_logprobs is sent
    content = [
        {**entry, "top_logprobs": list(entry.get("top_logprobs") or [])[:keep]}
        for entry in logprobs.get("content") or []
    ]
    return {**logprobs, "content": content}


def completion_body(response: RoutedResponse, request: ChatRequest) -> dict[str, Any]:
    """The ``chat.completion`` object, with the decision under the extra ``confroute`` key."""
    decision = response.decision
    message: dict[str, Any] = {"role": "assistant", "content": response.text}
    if response.tool_calls:
        message["tool_calls"] = response.tool_calls
        message["content"] = response.text or None
    return {
        "id": f"chatcmpl-{decision.id}",
        "object": "chat.completion",
        "created": int(decision.created_at.timestamp()),
        "model": request.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": response.finish_reason,
                "logprobs": _trimmed_logprobs(response, request),
            }
        ],
        "usage": response.usage,
        "confroute": decision.model_dump(mode="json"),
    }


def stream_chunk(
    chunk_id: str,
    request: ChatRequest,
    *,
    delta: dict[str, Any] | None = None,
    response: RoutedResponse | None = None,
    usage_only: RoutedResponse | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``.

    A text chunk carries ``delta``; the final chunk (``response``) carries the finish reason,
    the tool calls, the log-probabilities and the decision (``confroute``); ``usage_only``
    makes the usage chunk sent when ``stream_options.include_usage`` is set.
    """
    base: dict[str, Any] = {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": request.model,
    }
    if usage_only is not None:
        return {**base, "choices": [], "usage": usage_only.usage}
    if response is None:
        return {
            **base,
            "choices": [{"index": 0, "delta": delta or {}, "finish_reason": None}],
        }
    final_delta: dict[str, Any] = {}
    if response.tool_calls:
        final_delta["tool_calls"] = [
            {"index": i, **call} for i, call in enumerate(response.tool_calls)
        ]
    return {
        **base,
        "choices": [
            {
                "index": 0,
                "delta": final_delta,
                "finish_reason": response.finish_reason,
                "logprobs": _trimmed_logprobs(response, request),
            }
        ],
        "confroute": response.decision.model_dump(mode="json"),
    }


def error_body(
    message: str, kind: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """An OpenAI-shaped error object."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
