"""What one client may hold of the server: read timeouts, a body cap, a connection limit.

aiohttp bounds header sizes (``max_line_size``, ``max_field_size``, ``max_headers``) and the
body size (``client_max_size``), and closes a connection that sends no complete request head
within ``keepalive_timeout``. It has no body read timeout and no connection limit (its
``backlog`` only sizes the kernel's queue of connections not yet accepted), so a client that
sends ``Content-Length: 100`` and one byte holds a descriptor for as long as it likes. This
module adds what it lacks: :class:`ConnectionGate` refuses connections past the limit with a
503, the app reads bodies under a deadline (:mod:`confroute.serving.request_body`), and
:class:`RepeatFilter` logs a repeated error once per interval instead of once per occurrence.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass

from aiohttp import web

from confroute.errors import ConfigurationError

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "ERROR_LOG_INTERVAL_S",
    "ConnectionGate",
    "RepeatFilter",
    "ServerLimits",
    "default_max_connections",
]

DEFAULT_MAX_BODY_BYTES = 1024**2
"""Largest request body accepted (aiohttp's own default, 1 MiB); larger bodies get a 413."""
ERROR_LOG_INTERVAL_S = 10.0
"""A repeated server error is logged at most once per this many seconds."""
_RESERVED_DESCRIPTORS = 64
"""Descriptors left free for model files, logs and the strong model's connections."""


def default_max_connections() -> int:
    """The default connection limit: the process's descriptor limit less a reserve, at most 1024."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # no resource module (Windows)
        return 1024
    if soft == resource.RLIM_INFINITY:
        return 1024
    return max(8, min(1024, soft - _RESERVED_DESCRIPTORS))


@dataclass(frozen=True)
class ServerLimits:
    """Bounds on what a client may hold of the server.

    Attributes:
        header_timeout: Seconds a connection may take, from when it opens (or its previous
            answer ends), to send a complete request head; it is also how long an idle
            kept-alive connection stays open (aiohttp's ``keepalive_timeout``).
        body_timeout: Seconds a request may take to send its whole body once its head has
            arrived; a slower one gets a 408 and its connection is closed.
        max_body_bytes: Largest request body; a larger one gets a 413.
        max_connections: Open connections at most; past it (give or take one accept batch)
            new connections get a 503 and are closed. None: :func:`default_max_connections`.
        backlog: Connections the kernel queues before they are accepted.
    """

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_connections: int | None = None
    backlog: int = 128

    def __post_init__(self) -> None:
        """Check the bounds.

        Raises:
            ConfigurationError: A timeout is not a positive number, or a size is below 1.
        """
        for name in ("header_timeout", "body_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigurationError(
                    f"{name} must be a positive number of seconds, got {value!r}."
                )
            if value == float("inf"):
                raise ConfigurationError(f"{name} must be finite, got {value!r}.")
        for name in ("max_body_bytes", "max_connections", "backlog"):
            value = getattr(self, name)
            if value is None and name == "max_connections":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be an integer >= 1, got {value!r}.")

    @property
    def connection_limit(self) -> int:
        """The connection limit in force."""
        return self.max_connections or default_max_connections()


class RepeatFilter(logging.Filter):
    """Let a repeated log record through once per interval, with a count of those held back.

    Records are alike when they share logger, level, message template and exception type.
    """

    def __init__(self, interval_s: float = ERROR_LOG_INTERVAL_S) -> None:
        """Hold back repeats for ``interval_s`` seconds after each record let through."""
        super().__init__()
        self.interval_s = interval_s
        self._last: dict[tuple[object, ...], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether to emit ``record`` (a repeat within the interval is not emitted)."""
        error = record.exc_info[1] if record.exc_info else None
        key = (record.name, record.levelno, str(record.msg), type(error).__name__)
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.interval_s:
            self._last[key] = (last[0], last[1] + 1)
            return False
        if last is not None and last[1]:
            record.msg = (
                f"{record.msg} [{last[1]} more like this in the last {now - last[0]:.0f} s]"
            )
        self._last[key] = (now, 0)
        if len(self._last) > 1024:  # many distinct messages: forget the oldest
            del self._last[next(iter(self._last))]
        return True


_BUSY = json.dumps(
    {
        "error": {
            "message": "The server is at its connection limit; retry shortly.",
            "type": "server_error",
            "param": None,
            "code": "too_many_connections",
        }
    }
).encode()
_BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
    + str(len(_BUSY)).encode()
    + b"\r\n\r\n"
    + _BUSY
)


class _Refused(asyncio.Protocol):
    """A connection past the limit: answer 503 and close, without reading the request."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.WriteTransport):
            transport.write(_BUSY_RESPONSE)
        transport.close()


class ConnectionGate:
    """The listening socket's protocol factory: aiohttp's, until the connection limit is reached.

    ``loop.create_server(gate, ...)`` hands each accepted connection to aiohttp's request
    handler while fewer than ``limit`` are open, and answers the rest with a 503.
    """

    def __init__(self, server: web.Server, limit: int, log: logging.Logger) -> None:
        """Gate ``server`` (``AppRunner.server``) at ``limit`` open connections."""
        self.server, self.limit, self.log = server, limit, log
        self.refused = 0

    def __call__(self) -> asyncio.BaseProtocol:
        """The protocol of one new connection."""
        if len(self.server.connections) >= self.limit:
            self.refused += 1
            self.log.warning(
                "Connection limit reached (%d open): new connections get a 503.", self.limit
            )
            return _Refused()
        return self.server()
