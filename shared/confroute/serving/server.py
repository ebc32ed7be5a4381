"""``confroute serve``: an OpenAI-compatible HTTP server in front of one shared router.

:func:`create_app` (:mod:`confroute.serving.app`) builds the endpoints; this module listens:
:func:`serve` until interrupted, :class:`BackgroundServer` on a thread of its own. Both listen
on 127.0.0.1 unless told otherwise and bound what one client may hold
(:class:`~confroute.serving.limits.ServerLimits`): a request head must arrive within
``header_timeout``, a body within ``body_timeout``, and past ``max_connections`` new
connections get a 503. A repeated accept or serve error (``Too many open files``) is logged
once per :data:`~confroute.serving.limits.ERROR_LOG_INTERVAL_S`, not once per occurrence.

Concurrent requests share batched local generation when the router's local model is a
:class:`~confroute.serving.batcher.MicroBatcher` (``confroute serve`` sets this up).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from typing import Any

from aiohttp import web

from confroute.errors import ConfigurationError
from confroute.router import ConfRouter
from confroute.serving.app import DEFAULT_HOST, DEFAULT_MODEL_NAME, create_app
from confroute.serving.limits import ConnectionGate, RepeatFilter, ServerLimits

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_MODEL_NAME",
    "BackgroundServer",
    "Listener",
    "ServerLimits",
    "create_app",
    "serve",
]

logger = logging.getLogger(__name__)
logger.addFilter(RepeatFilter())

LINGER_S = 1.0
"""How long a connection answered before its body arrived (a 408, a 413) is still drained, so
that the client can read the answer; aiohttp's default of 10 s would hold it ten times longer."""


def _loop_errors(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's error handler: asyncio's own errors (a failed accept), rate-limited."""
    logger.error(
        "%s", context.get("message", "Event loop error"), exc_info=context.get("exception")
    )


class Listener:
    """An app's listening socket, bounded by :class:`ServerLimits`, on the running loop."""

    def __init__(self, app: web.Application, host: str, port: int, limits: ServerLimits) -> None:
        """Configure; :meth:`open` listens."""
        self.app, self.host, self.port, self.limits = app, host, port, limits
        self.gate: ConnectionGate | None = None
        self._runner: web.AppRunner | None = None
        self._server: asyncio.AbstractServer | None = None

    async def open(self) -> None:
        """Start the app and listen; ``port`` becomes the port bound (for ``port=0``)."""
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_loop_errors)
        self._runner = web.AppRunner(
            self.app,
            access_log=None,
            logger=logger,
            keepalive_timeout=self.limits.header_timeout,
            lingering_time=LINGER_S,
        )
        await self._runner.setup()
        web_server = self._runner.server
        if web_server is None:  # setup() always makes one; mypy cannot know
            raise ConfigurationError("The aiohttp runner did not set up its server.")
        # Not a TCPSite: aiohttp sites hand every accepted connection to the app, and the
        # connection limit needs to see each one first.
        self.gate = ConnectionGate(web_server, self.limits.connection_limit, logger)
        self._server = await loop.create_server(
            self.gate, self.host, self.port, backlog=self.limits.backlog
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening, close the connections and clean the app up."""
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5.0)


def serve(
    router: ConfRouter,
    *,
    host: str = DEFAULT_HOST,
    port: int = 8000,
    model_name: str = DEFAULT_MODEL_NAME,
    api_key: str | None = None,
    limits: ServerLimits | None = None,
) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM).

    Args:
        router: Routes every request.
        host: Interface to listen on.
        port: Port to listen on.
        model_name: The model id clients send and ``/v1/models`` lists.
        api_key: When set, clients must send ``Authorization: Bearer <api_key>``.
        limits: Read timeouts, body cap and connection limit (default :class:`ServerLimits`).
    """
    limits = limits or ServerLimits()
    app = create_app(router, model_name=model_name, api_key=api_key, limits=limits)
    logger.info("confroute serve: http://%s:%d/v1 (model %r)", host, port, model_name)

    async def run() -> None:
        listener = Listener(app, host, port, limits)
        await listener.open()
        stop = asyncio.Event()
        with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        try:
            await stop.wait()
        finally:
            await listener.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


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
        limits: ServerLimits | None = None,
    ) -> None:
        """Configure; :meth:`start` (or ``with``) starts it. ``port=0`` picks a free port."""
        self.limits = limits or ServerLimits()
        self.app = create_app(router, model_name=model_name, api_key=api_key, limits=self.limits)
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: Listener | None = None
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
        self._listener = Listener(self.app, self.host, self.port, self.limits)
        await self._listener.open()
        self.port = self._listener.port

    async def _shut(self) -> None:
        if self._listener is not None:
            await self._listener.close()

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
