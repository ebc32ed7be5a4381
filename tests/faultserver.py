"""A fault-injecting OpenAI-compatible chat server for the reliability tests.

:class:`FaultServer` is a real HTTP server on 127.0.0.1 (an ephemeral port, a background thread;
standard library only) that speaks ``POST /v1/chat/completions``, with and without SSE
streaming. Its answer echoes the request, so a test can tell which request an answer belongs to:
``"echo:<model>:<last user message>"``.

What it does with a request is chosen, first match wins, by

1. a marker in the last user message, ``[[fault:NAME]]`` (per request);
2. :attr:`FaultServer.model_faults`, keyed by the model name in the request body (per model,
   so a primary can fail while its fallback answers);
3. :attr:`FaultServer.queue`, consumed one fault per request (per scenario);
4. :attr:`FaultServer.default` (``"ok"`` unless changed).

Faults (:data:`FAULTS`):

- ``ok``: a normal answer (streamed in word-sized SSE chunks when ``stream`` is true);
- ``500``: HTTP 500 with an OpenAI-style error body;
- ``429``: HTTP 429 with ``Retry-After: <retry_after>`` seconds;
- ``401``: HTTP 401 whose error message quotes the key it received, in full (the worst
  case of a provider echoing a secret back);
- ``hang``: no answer for ``hang_s`` seconds (the client's timeout should fire first); a
  stopping server releases hung requests at once;
- ``malformed``: HTTP 200, ``Content-Type: application/json``, a body that is not JSON (for a
  streaming request, an SSE event whose data is not JSON);
- ``drop``: (streaming) the first chunks of the answer, then the connection is closed without
  ending the chunked body; (non-streaming) the connection is closed without any response;
- ``stall``: (streaming) the first chunks, then no more bytes for ``hang_s`` seconds.

"Connection refused" needs no server: :func:`closed_port` returns a port nothing listens on.

Example:
    >>> with FaultServer() as server:  # doctest: +SKIP
    ...     server.queue.extend(["500", "ok"])
    ...     url = server.base_url  # "http://127.0.0.1:PORT/v1"
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FAULTS", "FaultServer", "Recorded", "closed_port", "echo"]

FAULTS = ("ok", "500", "429", "401", "hang", "malformed", "drop", "stall")
"""Every behaviour the server can be told to show."""

_MARKER = re.compile(r"\[\[fault:([a-z0-9]+)\]\]")

PARTIAL_CHUNKS = 2
"""How many content chunks ``drop`` and ``stall`` send before failing."""


def echo(model: str, question: str) -> str:
    """The answer the server gives ``question`` when asked as ``model``."""
    return f"echo:{model}:{question}"


def closed_port() -> int:
    """A 127.0.0.1 port with nothing listening on it (connecting is refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass
class Recorded:
    """One request as the server saw it."""

    model: str
    messages: list[dict[str, Any]]
    stream: bool
    fault: str
    authorization: str | None
    body: dict[str, Any]


@dataclass
class _State:
    queue: deque[str] = field(default_factory=deque)
    model_faults: dict[str, str] = field(default_factory=dict)
    default: str = "ok"
    retry_after: float = 0.0
    hang_s: float = 5.0
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr
        return

    # -- plumbing --------------------------------------------------------------------------

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _sse(self, payload: Any) -> None:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        self._chunk(f"data: {data}\n\n".encode())

    def _abort(self) -> None:
        """Close the socket now: no response, or an unfinished chunked body."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _wait(self) -> None:
        self.server.state.stopping.wait(self.server.state.hang_s)

    # -- the endpoint ----------------------------------------------------------------------

    def do_GET(self) -> None:
        self._send_json(404, {"error": {"message": "only POST /v1/chat/completions"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._send_json(400, {"error": {"message": "request body is not JSON"}})
            return
        messages = body.get("messages") or []
        question = _last_user_text(messages)
        model = str(body.get("model", ""))
        stream = bool(body.get("stream"))
        fault = self.server.choose(question, model)
        with self.server.state.lock:
            self.server.state.requests.append(
                Recorded(
                    model=model,
                    messages=messages,
                    stream=stream,
                    fault=fault,
                    authorization=self.headers.get("Authorization"),
                    body=body,
                )
            )
        answer = echo(model, question)
        if fault == "500":
            self._send_json(
                500, {"error": {"message": "injected internal error", "type": "server_error"}}
            )
        elif fault == "429":
            self._send_json(
                429,
                {"error": {"message": "injected rate limit", "type": "rate_limit_exceeded"}},
                {"Retry-After": _seconds(self.server.state.retry_after)},
            )
        elif fault == "401":
            key = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            self._send_json(
                401,
                {
                    "error": {
                        "message": f"Incorrect API key provided: {key}",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                },
            )
        elif fault == "hang":
            self._wait()
            self._abort()
        elif fault == "malformed":
            if stream:
                self._stream_headers()
                self._sse("{this is not json")
                self._chunk(b"")
            else:
                self._send_json(200, b'{"id": "x", "choices": [{"message": ')
        elif fault == "drop" and not stream:
            self._abort()
        elif stream:
            self._stream(model, answer, fault)
        else:
            self._send_json(200, _completion(model, answer, messages))

    def _stream_headers(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _stream(self, model: str, answer: str, fault: str) -> None:
        self._stream_headers()
        words = answer.split(" ")
        pieces = [w if i == len(words) - 1 else w + " " for i, w in enumerate(words)]
        if fault in ("drop", "stall") and len(pieces) <= PARTIAL_CHUNKS:
            # always leave something unsent, however short the answer
            pieces = [answer[: len(answer) // 2], answer[len(answer) // 2 :], ""]
        created = int(time.time())
        base = {"id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": created}
        self._sse(
            {
                **base,
                "model": model,
                "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}],
            }
        )
        for index, piece in enumerate(pieces):
            if fault in ("drop", "stall") and index == PARTIAL_CHUNKS:
                if fault == "stall":
                    self._wait()
                self._abort()
                return
            self._sse(
                {
                    **base,
                    "model": model,
                    "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                }
            )
        self._sse(
            {
                **base,
                "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            }
        )
        self._sse(
            {
                **base,
                "model": model,
                "choices": [],
                "usage": {
                    "prompt_tokens": 5,
                    "completion_tokens": len(words),
                    "total_tokens": 5 + len(words),
                },
            }
        )
        self._sse("[DONE]")
        self._chunk(b"")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    state: _State

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet when a client hangs up (timeouts do that on purpose)."""
        import sys

        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def choose(self, question: str, model: str) -> str:
        marker = _MARKER.search(question)
        if marker:
            return _check(marker.group(1))
        with self.state.lock:
            if model in self.state.model_faults:
                return self.state.model_faults[model]
            if self.state.queue:
                return self.state.queue.popleft()
            return self.state.default


class FaultServer:
    """An OpenAI chat-completions server on 127.0.0.1 that fails on demand.

    Use it as a context manager (or call :meth:`start` / :meth:`stop`).

    Attributes:
        queue: Faults consumed one per request, before :attr:`default`.
        model_faults: Fault per model name (as sent in the request body), checked before
            :attr:`queue`.
        default: The fault when nothing else applies (``"ok"``).
        retry_after: Seconds sent in a 429's ``Retry-After`` header.
        hang_s: How long ``hang`` and ``stall`` keep the client waiting.
    """

    def __init__(self, *, retry_after: float = 0.0, hang_s: float = 5.0) -> None:
        self._state = _State(retry_after=retry_after, hang_s=hang_s)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- configuration ---------------------------------------------------------------------

    @property
    def queue(self) -> deque[str]:
        return self._state.queue

    @property
    def model_faults(self) -> dict[str, str]:
        return self._state.model_faults

    @property
    def default(self) -> str:
        return self._state.default

    @default.setter
    def default(self, fault: str) -> None:
        self._state.default = _check(fault)

    @property
    def retry_after(self) -> float:
        return self._state.retry_after

    @retry_after.setter
    def retry_after(self, seconds: float) -> None:
        self._state.retry_after = seconds

    @property
    def hang_s(self) -> float:
        return self._state.hang_s

    @hang_s.setter
    def hang_s(self, seconds: float) -> None:
        self._state.hang_s = seconds

    def script(self, *faults: str) -> None:
        """Replace the scenario queue with ``faults`` (one per request, in order)."""
        with self._state.lock:
            self._state.queue.clear()
            self._state.queue.extend(_check(f) for f in faults)

    def reset(self) -> None:
        """Forget recorded requests and every configured fault."""
        with self._state.lock:
            self._state.queue.clear()
            self._state.model_faults.clear()
            self._state.requests.clear()
            self._state.default = "ok"

    @property
    def requests(self) -> list[Recorded]:
        """Every request received so far, in arrival order."""
        with self._state.lock:
            return list(self._state.requests)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("The fault server is not running; call start().")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """The ``api_base`` for LiteLLM: ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FaultServer:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.state = self._state
        self._state.stopping.clear()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._state.stopping.set()  # release hung handlers
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _check(fault: str) -> str:
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; use one of {FAULTS}")
    return fault


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def _completion(model: str, answer: str, messages: list[Any]) -> dict[str, Any]:
    prompt_tokens = sum(
        len(str(m.get("content", "")).split()) for m in messages if isinstance(m, dict)
    )
    completion_tokens = len(answer.split())
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
