"""One call, resolved for the router; and batches as one batched local generation.

LangChain's ``batch`` runs ``invoke`` per input (each with its own callbacks and trace). To keep
that and still run the local model once for the whole batch, ``ChatConfRoute.batch`` first
answers every input with one ``ConfRouter.route_batch`` call, then lets the per-input calls pick
their answer up from a context-local store instead of generating again. An input that failed in
the batch picks up its exception, so nothing is routed twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import BaseMessage

from confroute.errors import ConfRouteError, InvalidRequestError
from confroute.outcome import ItemResult
from confroute.router import ConfRouter
from confroute.scoring import stop_sequences
from langchain_confroute.messages import to_openai_messages
from langchain_confroute.tools import apply_tool_choice, check_tool_choice

__all__ = [
    "CALL_OPTIONS",
    "RoutedRequest",
    "answers_for_batch",
    "aroute_batch",
    "batch_requests",
    "build_request",
    "in_config_thread",
    "in_thread",
    "route_batch",
    "take_answer",
]

logger = logging.getLogger(__name__)

CALL_OPTIONS = frozenset(
    {
        "tools",
        "tool_choice",
        "temperature",
        "max_tokens",
        "stream",
        "ls_structured_output_format",
        "conversation_id",
    }
)
"""Per-call keyword arguments the chat model understands (besides ``stop``); others are refused."""
THREAD_KEY = "thread_id"
"""The run metadata key of a conversation: LangGraph copies ``configurable.thread_id`` there."""

_answers: ContextVar[dict[str, list[ItemResult]] | None] = ContextVar(
    "confroute_batch_answers", default=None
)


@dataclass(frozen=True)
class RoutedRequest:
    """One call, resolved: the conversation and the router's keyword arguments.

    Attributes:
        messages: The conversation in the OpenAI shape.
        options: ``max_new_tokens``, ``temperature``, ``stop``, ``tools`` and
            ``conversation_id`` for the router.
    """

    messages: list[dict[str, Any]]
    options: dict[str, Any]

    def key(self, owner: object) -> str:
        """Identifies the request of one model; equal requests share a key.

        The conversation id is not part of it: a batch is answered before each input's run
        (and its ``thread_id``) exists.
        """
        options = {k: v for k, v in self.options.items() if k != "conversation_id"}
        return f"{id(owner)}:" + json.dumps([self.messages, options], sort_keys=True, default=str)


def build_request(
    messages: Sequence[BaseMessage],
    *,
    stop: Sequence[str] | None,
    temperature: float,
    max_tokens: int | None,
    kwargs: dict[str, Any],
) -> RoutedRequest:
    """Resolve one call: convert the messages, apply ``tool_choice``, merge the options.

    Args:
        messages: The LangChain conversation.
        stop: Stop sequences of the call (or the model's).
        temperature: The model's temperature (a ``temperature`` call option wins).
        max_tokens: The model's cap (a ``max_tokens`` call option wins).
        kwargs: The call options.

    Raises:
        InvalidRequestError: An option is not one of :data:`CALL_OPTIONS`.
        ConfigurationError: ``tool_choice`` names no bound tool, or ``stop`` is not a list
            of non-empty strings.
    """
    unknown = sorted(set(kwargs) - CALL_OPTIONS)
    if unknown:
        raise InvalidRequestError(
            f"ChatConfRoute does not understand {', '.join(unknown)}; it accepts tools, "
            "tool_choice, temperature, max_tokens, stop and conversation_id."
        )
    tools = kwargs.get("tools") or None
    choice = check_tool_choice(kwargs.get("tool_choice"), tools or [])
    conversation, offered = apply_tool_choice(to_openai_messages(messages), tools, choice)
    options = {
        "max_new_tokens": kwargs.get("max_tokens", max_tokens),
        "temperature": kwargs.get("temperature", temperature),
        "stop": list(stop_sequences(stop)) or None,
        "tools": offered,
        "conversation_id": kwargs.get("conversation_id"),
    }
    return RoutedRequest(conversation, options)


def in_thread(request: RoutedRequest, metadata: Mapping[str, Any] | None) -> RoutedRequest:
    """``request`` keyed by the run's ``thread_id`` when no ``conversation_id`` was passed.

    LangGraph (and so ``langchain.agents.create_agent``) copies ``configurable.thread_id``
    into the metadata of each model call; outside a graph, pass
    ``config={"metadata": {"thread_id": ...}}`` or ``conversation_id=``.
    """
    thread = (metadata or {}).get(THREAD_KEY)
    if request.options.get("conversation_id") is not None or thread is None:
        return request
    return RoutedRequest(request.messages, {**request.options, "conversation_id": str(thread)})


def batch_requests(
    inputs: Sequence[Any], resolve: Callable[[Any], RoutedRequest]
) -> list[RoutedRequest] | None:
    """The requests of a batch of two or more inputs, when all of them resolve.

    Returns None for a single input, or when one input cannot be resolved: the batch then runs
    one call per input, so each input gets its own error.
    """
    if len(inputs) < 2:
        return None
    try:
        return [resolve(item) for item in inputs]
    except (ConfRouteError, ValueError) as error:
        logger.debug("Batch falls back to one call per input: %s", error)
        return None


def route_batch(
    router: ConfRouter, requests: list[RoutedRequest] | None
) -> list[ItemResult] | None:
    """Answer the requests with one batched local generation (None when that fails).

    Each item is its answer or the exception it failed with (an escalation under ``"raise"``).
    """
    if requests is None:
        return None
    try:
        responses = router.route_batch(
            [r.messages for r in requests], **requests[0].options, return_exceptions=True
        )
    except ConfRouteError as error:
        logger.debug("Batched routing failed, answering one by one: %s", error)
        return None
    return responses


async def aroute_batch(
    router: ConfRouter, requests: list[RoutedRequest] | None
) -> list[ItemResult] | None:
    """Async form of :func:`route_batch`."""
    if requests is None:
        return None
    try:
        responses = await router.aroute_batch(
            [r.messages for r in requests], **requests[0].options, return_exceptions=True
        )
    except ConfRouteError as error:
        logger.debug("Batched routing failed, answering one by one: %s", error)
        return None
    return responses


@contextmanager
def answers_for_batch(
    owner: object,
    requests: Sequence[RoutedRequest] | None,
    responses: Sequence[ItemResult] | None,
) -> Iterator[None]:
    """Make the batch's answers available to the calls made inside the block."""
    store: dict[str, list[ItemResult]] | None = None
    if requests is not None and responses is not None:
        store = {}
        for request, response in zip(requests, responses, strict=True):
            store.setdefault(request.key(owner), []).append(response)
    token = _answers.set(store)
    try:
        yield
    finally:
        _answers.reset(token)


def take_answer(owner: object, request: RoutedRequest) -> ItemResult | None:
    """The batch's answer to this request, or its exception (each is handed out once).

    None outside a batch.
    """
    store = _answers.get()
    if not store:
        return None
    answers = store.get(request.key(owner))
    return answers.pop(0) if answers else None


def in_config_thread(config: Mapping[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """A stream's call options with the config's ``thread_id`` as ``conversation_id``.

    ``BaseChatModel.stream`` gives ``_stream`` no run manager, so the thread is read from the
    config there: its ``metadata``, else ``configurable``.
    """
    if kwargs.get("conversation_id") is not None:
        return kwargs
    for part in ("metadata", "configurable"):
        thread = (config.get(part) or {}).get(THREAD_KEY)
        if thread is not None:
            return {**kwargs, "conversation_id": str(thread)}
    return kwargs
