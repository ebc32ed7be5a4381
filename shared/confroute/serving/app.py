"""``confroute serve``: an OpenAI-compatible HTTP server in front of one shared router.

Endpoints: ``POST /v1/chat/completions`` (plain and ``stream=true`` server-sent events),
``GET /v1/models``, ``GET /v1/models/{id}`` and ``GET /health``. Every request is routed by the
same :class:`~confroute.router.ConfRouter`; the routing decision comes back as an extra
``confroute`` field of the response (of the last chunk when streaming) and as ``x-confroute-*``
headers. The OpenAI SDK and LiteLLM (``openai/<model>`` with ``api_base``) work against it
unchanged. It listens on 127.0.0.1 unless told otherwise.

Concurrent requests share batched local generation when the router's local model is a
:class:`~confroute.serving.batcher.MicroBatcher` (``confroute serve`` sets this up).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
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
from confroute.serving.openai_format import (
    ChatRequest,
    completion_body,
    decision_headers,
    error_body,
    parse_chat_request,
    stream_chunk,
)

__all__ = ["DEFAULT_HOST", "DEFAULT_MODEL_NAME", "BackgroundServer", "create_app", "serve"]

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
    }


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(400, "The request body is not valid JSON.", "invalid_request_error")
    chat = parse_chat_request(body)
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


async def _stream(
    request: web.Request, router: ConfRouter, chat: ChatRequest
) -> web.StreamResponse:
    """Stream the answer; headers carry the decision when it is known before the first token.

    A kept-local answer (or a failed escalation answered locally) is known in full at once, so
    its headers hold the whole decision. An escalated answer streams the strong model's tokens
    as they come: its headers say ``x-confroute-escalated: true`` and the full decision arrives
    in the last chunk's ``confroute`` field.
    """
    chunks: AsyncIterator[RoutedChunk] = router.astream(chat.messages, **_route_kwargs(chat))
    head: list[RoutedChunk] = []
    async for chunk in chunks:  # errors before the first byte become plain HTTP errors
        head.append(chunk)
        if chunk.response is not None or len(head) >= 2:
            break
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
        if final is None:
            async for chunk in chunks:
                yield chunk

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

    Raises:
        ConfigurationError: An empty model name or fewer than one worker thread.
    """
    if not model_name:
        raise ConfigurationError("model_name must be a non-empty string, e.g. 'confroute'.")
    if worker_threads < 1:
        raise ConfigurationError(f"worker_threads must be >= 1, got {worker_threads}.")
    app = web.Application(middlewares=[_guard])
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


def serve(
    router: ConfRouter,
    *,
    host: str = DEFAULT_HOST,
    port: int = 8000,
    model_name: str = DEFAULT_MODEL_NAME,
    api_key: str | None = None,
) -> None:
    """Serve until interrupted (Ctrl-C)."""
    app = create_app(router, model_name=model_name, api_key=api_key)
    logger.info("confroute serve: http://%s:%d/v1 (model %r)", host, port, model_name)
    web.run_app(app, host=host, port=port, print=None, access_log=None)


class BackgroundServer:
    """The server on a background thread with its own event loop (tests, notebooks, examples).

    Example:
        >>> with BackgroundServer(router) as server:  # doctest: +SKIP
        ...     client = openai.OpenAI(base_url=server.base_url, api_key="unused")
    """

    def __init__(
        self,
        router: ConfRouter,
        *,
        host: str = DEFAULT_HOST,
        port: int = 0,
        model_name: str = DEFAULT_MODEL_NAME,
        api_key: str | None = None,
    ) -> None:
        """Configure; :meth:`start` (or ``with``) starts it. ``port=0`` picks a free port."""
        self.app = create_app(router, model_name=model_name, api_key=api_key)
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://HOST:PORT/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        """Start listening; returns once the port is open.

        Raises:
            ConfigurationError: The server did not start within ``timeout`` seconds (the cause,
                such as a port in use, is chained).
        """
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._open())
            except BaseException as error:
                failure.append(error)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shut())
            loop.close()

        self._thread = threading.Thread(target=run, name="confroute-server", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or failure:
            cause = failure[0] if failure else None
            raise ConfigurationError(
                f"The server did not start on {self.host}:{self.port}: {cause}. Pick another "
                "port or host."
            ) from cause
        return self

    async def _open(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        addresses = self._runner.addresses
        if addresses:
            self.port = int(addresses[0][1])

    async def _shut(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def close(self) -> None:
        """Stop serving and wait for the thread. Idempotent."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)

    def __enter__(self) -> BackgroundServer:
        """Start the server."""
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        """Stop the server."""
        self.close()
