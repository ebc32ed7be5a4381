"""The aiohttp application of ``confroute serve``: OpenAI-compatible endpoints over one router.

Endpoints: ``POST /v1/chat/completions`` (plain and ``stream=true`` server-sent events),
``GET /v1/models``, ``GET /v1/models/{id}`` and ``GET /health``. Every request is routed by the
same :class:`~confroute.router.ConfRouter`; the routing decision comes back as an extra
``confroute`` field of the response (of the last chunk when streaming) and as ``x-confroute-*``
headers. Bodies are read under a deadline and checked before the router sees them
(:mod:`confroute.serving.request_body`); :mod:`confroute.serving.server` listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from confroute.errors import (
    ConfigurationError,
    ConfRouteError,
    ContextOverflowError,
    EscalationError,
    InvalidRequestError,
)
from confroute.router import ConfRouter, RoutedChunk, RoutedResponse
from confroute.serving.batcher import MicroBatcher
from confroute.serving.limits import ServerLimits
from confroute.serving.openai_format import (
    CONVERSATION_HEADER,
    ChatRequest,
    completion_body,
    decision_headers,
    error_body,
    parse_chat_request,
    stream_chunk,
)
from confroute.serving.request_body import read_json_body

__all__ = ["DEFAULT_HOST", "DEFAULT_MODEL_NAME", "create_app"]

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
"""Listen on the loopback interface only, unless told otherwise."""
DEFAULT_MODEL_NAME = "confroute"
"""The model id the server lists and answers to."""

_ROUTER = web.AppKey("router", ConfRouter)
_MODEL = web.AppKey("model_name", str)
_KEY = web.AppKey("api_key", str)
_STARTED = web.AppKey("started", int)
_WORKERS = web.AppKey("workers", int)
_LIMITS = web.AppKey("limits", ServerLimits)

DISCONNECT_POLL_S = 0.1
"""How often a streamed answer waiting for its next chunk checks that the client is still there.

aiohttp has no public disconnection event, and its ``handler_cancellation`` would cancel every
handler whose client leaves, a non-streamed route included, whose decision must still be
reported; so the stream checks its transport while it waits.
"""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(
    status: int, message: str, kind: str, *, param: str | None = None, code: str | None = None
) -> web.Response:
    return web.json_response(error_body(message, kind, param=param, code=code), status=status)


def _error_for(error: ConfRouteError) -> web.Response:
    """The HTTP answer for a library error."""
    if isinstance(error, ContextOverflowError):
        return _error(400, str(error), "invalid_request_error", code="context_length_exceeded")
    if isinstance(error, InvalidRequestError):
        param = getattr(error, "param", None)
        return _error(400, str(error), "invalid_request_error", param=param)
    if isinstance(error, EscalationError):
        return _error(502, str(error), "escalation_error", code="escalation_failed")
    return _error(500, str(error), "server_error")


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Check the key (when one is set) and turn library errors into OpenAI error objects."""
    key = request.app[_KEY]
    if key and request.path != "/health":
        sent = request.headers.get("Authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {key}".encode()):
            return _error(
                401,
                "Missing or wrong API key: send 'Authorization: Bearer <key>' with the key the "
                "server was started with.",
                "invalid_request_error",
                code="invalid_api_key",
            )
    try:
        return await handler(request)
    except ConfRouteError as error:
        return _error_for(error)
    except (web.HTTPException, asyncio.CancelledError, ConnectionError):
        raise
    except Exception as error:  # a bug: still an OpenAI error object, never a text/plain 500
        logger.exception("Unexpected error answering %s %s", request.method, request.path)
        return _error(500, f"Internal error ({type(error).__name__}).", "server_error")


async def _health(request: web.Request) -> web.Response:
    router = request.app[_ROUTER]
    body: dict[str, Any] = {
        "status": "ok",
        "model": request.app[_MODEL],
        "local_model": router.local.name,
        "strong_model": router.escalation.model if router.escalation is not None else None,
        "estimator": router.estimator.name,
    }
    if isinstance(router.local, MicroBatcher):
        stats = router.local.stats
        body["batching"] = {
            "window_ms": router.local.window_s * 1000,
            "max_batch": router.local.max_batch,
            "requests": stats.requests,
            "batches": stats.batches,
            "mean_batch": round(stats.mean_batch, 3),
        }
    return web.json_response(body)


def _model_card(app: web.Application) -> dict[str, Any]:
    return {
        "id": app[_MODEL],
        "object": "model",
        "created": app[_STARTED],
        "owned_by": "confroute",
    }


async def _models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [_model_card(request.app)]})


async def _model(request: web.Request) -> web.Response:
    if request.match_info["model"] != request.app[_MODEL]:
        return _model_not_found(request.app, request.match_info["model"])
    return web.json_response(_model_card(request.app))


def _model_not_found(app: web.Application, asked: str) -> web.Response:
    return _error(
        404,
        f"The model {asked!r} does not exist on this server; use {app[_MODEL]!r}.",
        "invalid_request_error",
        param="model",
        code="model_not_found",
    )


def _route_kwargs(chat: ChatRequest) -> dict[str, Any]:
    return {
        "max_new_tokens": chat.max_tokens,
        "temperature": chat.temperature,
        "stop": list(chat.stop) or None,
        "tools": chat.tools,
        "conversation_id": chat.conversation_id,
    }


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    body = await read_json_body(request, request.app[_LIMITS].body_timeout)
    chat = parse_chat_request(body, request.headers.get(CONVERSATION_HEADER))
    if chat.model != request.app[_MODEL]:
        return _model_not_found(request.app, chat.model)
    router = request.app[_ROUTER]
    if chat.stream:
        return await _stream(request, router, chat)
    response = await router.aroute(chat.messages, **_route_kwargs(chat))
    return web.json_response(
        completion_body(response, chat), headers=decision_headers(response.decision)
    )


def _sse(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def _gone(request: web.Request) -> bool:
    """Whether the client has closed its connection."""
    transport = request.transport
    return transport is None or transport.is_closing()


async def _next_chunk(request: web.Request, chunks: AsyncIterator[RoutedChunk]) -> RoutedChunk:
    """The stream's next chunk, unless the client leaves first.

    Raises:
        StopAsyncIteration: The stream ended.
        ConnectionResetError: The client closed its connection; the router's stream was
            cancelled where it waited, so its decision is reported now, not after the answer.
    """
    pending = asyncio.ensure_future(chunks.__anext__())
    while True:
        try:
            done, _ = await asyncio.wait({pending}, timeout=DISCONNECT_POLL_S)
        except asyncio.CancelledError:  # the server stops: let the router's stream end first
            pending.cancel()
            await asyncio.wait({pending})
            raise
        if done:
            return pending.result()
        if _gone(request):
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
            raise ConnectionResetError("The client closed the connection during the stream.")


async def _stream(
    request: web.Request, router: ConfRouter, chat: ChatRequest
) -> web.StreamResponse:
    """Stream the answer; headers carry the decision when it is known before the first token.

    A kept-local answer (or a failed escalation answered locally) is known in full at once, so
    its headers hold the whole decision. An escalated answer streams the strong model's tokens
    as they come: its headers say ``x-confroute-escalated: true`` and the full decision arrives
    in the last chunk's ``confroute`` field. A client that leaves closes the router's stream
    at once, which reports the decision of the abandoned answer.
    """
    chunks = router.astream(chat.messages, **_route_kwargs(chat))
    try:
        return await _write_stream(request, chat, chunks)
    finally:
        if isinstance(chunks, AsyncGenerator):
            await chunks.aclose()  # a client that left: the router reports the abandoned stream


async def _write_stream(
    request: web.Request, chat: ChatRequest, chunks: AsyncIterator[RoutedChunk]
) -> web.StreamResponse:
    # Errors before the first byte become plain HTTP errors. The first chunk is awaited whatever
    # the client does: until it comes, the router has no answer whose decision it could report.
    head: list[RoutedChunk] = []
    with contextlib.suppress(StopAsyncIteration):
        head.append(await chunks.__anext__())
        if head[0].response is None:
            head.append(await _next_chunk(request, chunks))
    final = next((c.response for c in head if c.response is not None), None)
    headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    if final is not None:
        headers.update(decision_headers(final.decision))
        chunk_id = f"chatcmpl-{final.decision.id}"
    else:
        headers["x-confroute-escalated"] = "true"
        chunk_id = f"chatcmpl-{uuid.uuid4().hex}"
    stream = web.StreamResponse(status=200, headers=headers)
    await stream.prepare(request)
    await stream.write(
        _sse(stream_chunk(chunk_id, chat, delta={"role": "assistant", "content": ""}))
    )

    async def rest() -> AsyncIterator[RoutedChunk]:
        for chunk in head:
            yield chunk
        while final is None:
            try:
                yield await _next_chunk(request, chunks)
            except StopAsyncIteration:
                return

    done: RoutedResponse | None = None
    try:
        async for chunk in rest():
            if chunk.text:
                delta = {"content": chunk.text}
                await stream.write(_sse(stream_chunk(chunk_id, chat, delta=delta)))
            if chunk.response is not None:
                done = chunk.response
    except ConfRouteError as error:
        logger.warning("A streamed answer failed after it started: %s", error)
        await stream.write(_sse(error_body(str(error), "escalation_error")))
        await stream.write_eof()
        return stream
    if done is not None:
        await stream.write(_sse(stream_chunk(chunk_id, chat, response=done)))
        if chat.include_usage:
            await stream.write(_sse(stream_chunk(chunk_id, chat, usage_only=done)))
    await stream.write(b"data: [DONE]\n\n")
    await stream.write_eof()
    return stream


async def _use_worker_threads(app: web.Application) -> None:
    """Give the loop enough worker threads to let concurrent requests meet in one batch."""
    loop = asyncio.get_running_loop()
    loop.set_default_executor(
        ThreadPoolExecutor(max_workers=app[_WORKERS], thread_name_prefix="confroute-serve")
    )


def create_app(
    router: ConfRouter,
    *,
    model_name: str = DEFAULT_MODEL_NAME,
    api_key: str | None = None,
    worker_threads: int = 64,
    limits: ServerLimits | None = None,
) -> web.Application:
    """Build the aiohttp application around one shared router.

    Args:
        router: Routes every request (wrap its local model in a
            :class:`~confroute.serving.batcher.MicroBatcher` to batch concurrent requests).
        model_name: The model id clients send and ``/v1/models`` lists.
        api_key: When set, requests must send ``Authorization: Bearer <api_key>``
            (``/health`` stays open).
        worker_threads: Threads for local generation and scoring; at least the batch size, so
            that concurrent requests can meet in one batch.
        limits: The body read timeout and size cap; the head timeout and the connection limit
            belong to the listening socket (:class:`~confroute.serving.server.BackgroundServer`,
            :func:`~confroute.serving.server.serve`). Default ``ServerLimits()``.

    Raises:
        ConfigurationError: An empty model name or fewer than one worker thread.
    """
    if not model_name:
        raise ConfigurationError("model_name must be a non-empty string, e.g. 'confroute'.")
    if worker_threads < 1:
        raise ConfigurationError(f"worker_threads must be >= 1, got {worker_threads}.")
    limits = limits or ServerLimits()
    app = web.Application(middlewares=[_guard], client_max_size=limits.max_body_bytes)
    app[_LIMITS] = limits
    app[_ROUTER] = router
    app[_MODEL] = model_name
    app[_KEY] = api_key or ""
    app[_STARTED] = int(time.time())
    app[_WORKERS] = worker_threads
    app.on_startup.append(_use_worker_threads)
    app.router.add_get("/health", _health)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/v1/models/{model}", _model)
    app.router.add_post("/v1/chat/completions", _chat_completions)
    return app
