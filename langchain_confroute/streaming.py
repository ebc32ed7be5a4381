"""Streamed answers as LangChain chunks, and the decision event of a stream.

LangChain calls ``_stream`` without a run manager from ``stream()`` and from streamed
``invoke`` calls (it reports the tokens itself), so the decision event is dispatched where the
run is known: ``_generate_with_cache`` exposes its run manager through a context variable, and
``stream()`` dispatches for the run named by the chunks' message id.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from uuid import UUID, uuid4

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.runnables import RunnableConfig
from langchain_core.utils.utils import LC_ID_PREFIX

from confroute.decision import RoutingDecision
from confroute.response import RoutedChunk, RoutedResponse
from langchain_confroute.events import DECISION_EVENT, claim_failure
from langchain_confroute.messages import DECISION_KEY, last_chunk

__all__ = [
    "adispatch_for_config",
    "areplay",
    "awhole_with_tools",
    "current_run",
    "dispatch_for_config",
    "replay",
    "reporter_for",
    "running",
    "to_chunk",
    "whole_with_tools",
]

logger = logging.getLogger(__name__)

RunManager = CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun
"""The run manager of one chat model call (sync or async)."""

current_run: ContextVar[tuple[int, RunManager] | None] = ContextVar(
    "confroute_current_run", default=None
)
"""(id of the model, run manager) of the generation running in this context."""


@contextmanager
def running(owner: object, run_manager: RunManager | None) -> Iterator[None]:
    """Expose the run manager of ``owner``'s generation to the ``_stream`` it calls."""
    token = current_run.set((id(owner), run_manager) if run_manager is not None else None)
    try:
        yield
    finally:
        current_run.reset(token)


def reporter_for(owner: object, run_manager: RunManager | None) -> RunManager | None:
    """The run to report a decision to: the given one, or the owner's run in progress."""
    if run_manager is not None:
        return run_manager
    running = current_run.get()
    return running[1] if running is not None and running[0] == id(owner) else None


def replay(response: RoutedResponse) -> Iterator[RoutedChunk]:
    """A finished answer as the pieces a stream would have produced."""
    yield RoutedChunk(text=response.text)
    yield RoutedChunk(response=response)


async def areplay(response: RoutedResponse) -> AsyncIterator[RoutedChunk]:
    """Async form of :func:`replay`."""
    for piece in replay(response):
        yield piece


def whole_with_tools(
    pieces: Iterator[RoutedChunk], tools: Sequence[Mapping[str, Any]] | None
) -> Iterator[RoutedChunk]:
    """With tools offered, release the answer whole, once its tool calls are known.

    (The chat model routes such calls without streaming: the in-process provider does not
    stream tool calls.)
    """
    if not tools:
        yield from pieces
        return
    for piece in pieces:
        if piece.response is not None:
            yield from replay(piece.response)


async def awhole_with_tools(
    pieces: AsyncIterator[RoutedChunk], tools: Sequence[Mapping[str, Any]] | None
) -> AsyncIterator[RoutedChunk]:
    """Async form of :func:`whole_with_tools`."""
    async for piece in pieces:
        if not tools:
            yield piece
        elif piece.response is not None:
            for whole in replay(piece.response):
                yield whole


def to_chunk(piece: RoutedChunk) -> ChatGenerationChunk | None:
    """The LangChain chunk for a routed piece (None for an empty text piece)."""
    if piece.response is not None:
        return ChatGenerationChunk(message=last_chunk(piece.response))
    if not piece.text:
        return None
    return ChatGenerationChunk(message=AIMessageChunk(content=piece.text))


def _undispatched(chunk: BaseMessage) -> tuple[UUID, dict[str, Any]] | None:
    """The run id and decision of a stream's last chunk, when ``stream()`` must dispatch it."""
    if not isinstance(chunk, AIMessageChunk) or chunk.chunk_position != "last":
        return None
    decision = chunk.response_metadata.get(DECISION_KEY)
    prefix = f"{LC_ID_PREFIX}-"
    if decision is None or not (chunk.id or "").startswith(prefix):
        return None
    try:
        return UUID(str(chunk.id)[len(prefix) :]), RoutingDecision.model_validate(
            decision
        ).model_dump(mode="json")
    except ValueError:
        logger.debug("Stream chunk id %r names no run; decision event not sent.", chunk.id)
        return None


def _configure_args(model: Any, config: RunnableConfig) -> tuple[Any, ...]:
    """The handlers' configuration, exactly as ``BaseChatModel.stream`` builds it."""
    return (
        config.get("callbacks"),
        model.callbacks,
        model.verbose,
        config.get("tags"),
        model.tags,
        config.get("metadata"),
        model.metadata,
    )


def dispatch_failure_for_config(model: Any, config: RunnableConfig, error: BaseException) -> None:
    """Report the decision of a stream whose escalation failed (no last chunk carries it)."""
    decision = claim_failure(error, config)
    if decision is not None:
        manager = CallbackManager.configure(*_configure_args(model, config))
        manager.on_custom_event(DECISION_EVENT, decision.model_dump(mode="json"), run_id=uuid4())


async def adispatch_failure_for_config(
    model: Any, config: RunnableConfig, error: BaseException
) -> None:
    """Async form of :func:`dispatch_failure_for_config`."""
    decision = claim_failure(error, config)
    if decision is not None:
        manager = AsyncCallbackManager.configure(*_configure_args(model, config))
        await manager.on_custom_event(
            DECISION_EVENT, decision.model_dump(mode="json"), run_id=uuid4()
        )


def dispatch_for_config(model: Any, config: RunnableConfig, chunk: BaseMessage) -> None:
    """Send the decision carried by a stream's last chunk to the run's handlers."""
    found = _undispatched(chunk)
    if found is not None:
        run_id, decision = found
        manager = CallbackManager.configure(*_configure_args(model, config))
        manager.on_custom_event(DECISION_EVENT, decision, run_id=run_id)


async def adispatch_for_config(model: Any, config: RunnableConfig, chunk: BaseMessage) -> None:
    """Async form of :func:`dispatch_for_config`."""
    found = _undispatched(chunk)
    if found is not None:
        run_id, decision = found
        manager = AsyncCallbackManager.configure(*_configure_args(model, config))
        await manager.on_custom_event(DECISION_EVENT, decision, run_id=run_id)
