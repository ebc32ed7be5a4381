"""The server against hostile clients, over real sockets on 127.0.0.1 (issue 19 items 3, 6, 7).

Stalled heads and bodies are cut off, a connection limit answers 503, repeated errors are logged
once per interval, bad JSON values are 400s naming the field, and a client that leaves a stream
gets its decision reported at once.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from confroute.decision import RoutingDecision
from confroute.errors import ConfigurationError
from confroute.router import ConfRouter
from confroute.serving.limits import RepeatFilter, ServerLimits
from confroute.serving.server import BackgroundServer
from tests.fakes import ScriptedLocalModel
from tests.faultserver import FaultServer

LIMITS = ServerLimits(header_timeout=1.5, body_timeout=1.0, max_body_bytes=200_000)
SLACK_S = 2.5
"""Time allowed past a timeout for the answer and the close (the linger, a loaded CI machine)."""


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    slm = ScriptedLocalModel(default=("391", (0.99, 0.98, 0.97)))
    with BackgroundServer(ConfRouter(slm, None), limits=LIMITS) as running:
        yield running


def _connect(server: BackgroundServer) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=10)
    return sock


def _read_until_closed(sock: socket.socket, deadline_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    start = time.monotonic()
    sock.settimeout(deadline_s)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        pytest.fail(f"the server kept the connection open past {deadline_s} s; got {data!r}")
    except ConnectionResetError:
        pass
    return data, time.monotonic() - start


def _stalled_body(server: BackgroundServer) -> socket.socket:
    sock = _connect(server)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    return sock


def _health(server: BackgroundServer) -> int:
    with urllib.request.urlopen(server.base_url.removesuffix("/v1") + "/health", timeout=3) as r:
        return int(r.status)


def test_a_stalled_body_is_cut_off_within_the_body_timeout(server: BackgroundServer) -> None:
    with _stalled_body(server) as sock:
        data, took = _read_until_closed(sock, LIMITS.body_timeout + SLACK_S)
    assert data.startswith(b"HTTP/1.1 408"), data
    error = json.loads(data.split(b"\r\n\r\n", 1)[1])["error"]
    assert error["code"] == "request_timeout" and "did not arrive" in error["message"]
    assert LIMITS.body_timeout * 0.8 <= took <= LIMITS.body_timeout + SLACK_S


def test_a_stalled_request_head_is_cut_off_within_the_header_timeout(
    server: BackgroundServer,
) -> None:
    with _connect(server) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Le")
        data, took = _read_until_closed(sock, LIMITS.header_timeout + SLACK_S)
    assert data == b"" and took <= LIMITS.header_timeout + SLACK_S


def test_health_answers_while_twenty_clients_stall(server: BackgroundServer) -> None:
    stalled = [_stalled_body(server) for _ in range(20)]
    try:
        started = time.monotonic()
        assert _health(server) == 200
        assert time.monotonic() - started < LIMITS.body_timeout  # not after the stalls end
        for sock in stalled:  # and every one of them is cut off
            data, _ = _read_until_closed(sock, LIMITS.body_timeout + SLACK_S)
            assert data.startswith(b"HTTP/1.1 408")
    finally:
        for sock in stalled:
            sock.close()
    assert _health(server) == 200


def test_connections_past_the_limit_get_a_503() -> None:
    slm = ScriptedLocalModel(default=("391", (0.99,) * 3))
    limits = ServerLimits(header_timeout=5.0, max_connections=4)
    with BackgroundServer(ConfRouter(slm, None), limits=limits) as running:
        idle = [_connect(running) for _ in range(4)]
        try:
            time.sleep(0.3)  # let the loop accept them
            with _connect(running) as extra:
                extra.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                data, _ = _read_until_closed(extra, 3)
            assert data.startswith(b"HTTP/1.1 503"), data
            assert json.loads(data.split(b"\r\n\r\n", 1)[1])["error"]["code"] == (
                "too_many_connections"
            )
        finally:
            for sock in idle:
                sock.close()
        time.sleep(0.3)
        assert _health(running) == 200


def test_a_repeated_error_is_logged_once_per_interval() -> None:
    records = []
    flt = RepeatFilter(interval_s=0.2)
    for _ in range(50):
        record = logging.LogRecord(
            "s", logging.ERROR, "f", 1, "accept failed: %s", ("EMFILE",), None
        )
        if flt.filter(record):
            records.append(record)
    other = logging.LogRecord("s", logging.ERROR, "f", 1, "another error", (), None)
    assert flt.filter(other)
    time.sleep(0.25)
    later = logging.LogRecord("s", logging.ERROR, "f", 1, "accept failed: %s", ("EMFILE",), None)
    assert flt.filter(later)
    assert len(records) == 1
    assert later.getMessage() == "accept failed: EMFILE [49 more like this in the last 0 s]"


@pytest.mark.parametrize(
    "changes",
    [
        {"header_timeout": 0},
        {"body_timeout": float("nan")},
        {"body_timeout": float("inf")},
        {"max_connections": 0},
        {"max_body_bytes": True},
        {"backlog": 1.5},
    ],
)
def test_limits_are_checked_at_construction(changes: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match=next(iter(changes))):
        ServerLimits(**changes)


def _post(server: BackgroundServer, body: bytes) -> tuple[int, str, dict[str, Any]]:
    request = urllib.request.Request(
        server.base_url + "/chat/completions",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.headers.get_content_type(), json.load(reply)
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get_content_type(), json.load(error)


def _body(**fields: str) -> bytes:
    """A request body with raw JSON text for some fields (NaN, Infinity, escapes)."""
    base = {"model": '"confroute"', "messages": '[{"role": "user", "content": "sure?"}]'}
    base.update(fields)
    return ("{" + ", ".join(f'"{k}": {v}' for k, v in base.items()) + "}").encode()


BAD_VALUES = [
    ("max_tokens Infinity", _body(max_tokens="Infinity"), "max_tokens", "finite"),
    ("max_tokens -Infinity", _body(max_tokens="-Infinity"), "max_tokens", "finite"),
    ("max_tokens NaN", _body(max_tokens="NaN"), "max_tokens", "finite"),
    ("temperature 1e400", _body(temperature="1e400"), "temperature", "finite"),
    (
        "a lone surrogate in content",
        _body(messages='[{"role": "user", "content": "x \\ud800"}]'),
        "messages[0].content",
        "surrogate",
    ),
    (
        "tool_calls that are a string",
        _body(
            messages='[{"role": "user", "content": "hi"}, '
            '{"role": "assistant", "content": null, "tool_calls": "zz"}, '
            '{"role": "user", "content": "sure?"}]'
        ),
        "messages[1].tool_calls",
        "list of tool calls",
    ),
    (
        "a tool call without a function",
        _body(
            messages='[{"role": "assistant", "content": "", "tool_calls": [{"id": "c"}]}, '
            '{"role": "user", "content": "sure?"}]'
        ),
        "messages[0].tool_calls[0]",
        "function",
    ),
    (
        "a message that is a number",
        _body(messages='[7, {"role": "user", "content": "sure?"}]'),
        "messages[0]",
        "object",
    ),
    (
        "a text part whose text is an object",
        _body(messages='[{"role": "user", "content": [{"type": "text", "text": {"a": 1}}]}]'),
        "messages[0].content[0].text",
        "string",
    ),
    ("50,000-deep JSON", b"[" * 50_000 + b"]" * 50_000, None, "nested deeper"),
    (
        "200-deep JSON in metadata",
        _body(metadata='{"a": ' * 200 + "1" + "}" * 200),
        "metadata" + ".a" * 99,
        "nested deeper",
    ),
    ("an integer of 5,000 digits", _body(max_tokens="9" * 5000), None, "not valid"),
    ("not UTF-8", b'{"model": "\xff"}', None, "not valid"),
]


@pytest.mark.parametrize(
    ("label", "body", "param", "message"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES]
)
def test_bad_values_are_400s_naming_the_field(
    server: BackgroundServer, label: str, body: bytes, param: str | None, message: str
) -> None:
    status, content_type, reply = _post(server, body)
    assert (status, content_type) == (400, "application/json"), reply
    assert reply["error"]["type"] == "invalid_request_error"
    assert reply["error"]["param"] == param and message in reply["error"]["message"]


def test_a_body_over_the_limit_is_a_413(server: BackgroundServer) -> None:
    status, _, reply = _post(server, _body(user=json.dumps("x" * 300_000)))
    assert status == 413 and reply["error"]["code"] == "request_too_large"
    assert "200000 bytes" in reply["error"]["message"]


def test_a_client_leaving_a_stream_gets_its_decision_reported_at_once() -> None:
    seen: list[RoutingDecision] = []
    slm = ScriptedLocalModel(default=("x", (0.2,) * 3))
    with FaultServer(hang_s=8.0) as strong:
        router = ConfRouter(
            slm,
            "openai/p",
            threshold=0.5,
            api_base=strong.base_url,
            api_key="k",
            timeout=30,
            max_retries=0,
            hooks=[seen.append],
        )
        with BackgroundServer(router) as running:
            body = json.dumps(
                {
                    "model": "confroute",
                    "stream": True,
                    "messages": [
                        {"role": "user", "content": "q is a long question [[fault:stall]]"}
                    ],
                }
            ).encode()
            with _connect(running) as sock:
                sock.sendall(
                    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                    b"application/json\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
                received = b""
                while not re.search(rb'"content": "[^"]', received):  # the first words
                    received += sock.recv(65536)
            left = time.monotonic()
            while not seen and time.monotonic() - left < 3.0:
                time.sleep(0.05)
            assert time.monotonic() - left < 3.0, "no decision 3 s after the client left"
            [decision] = seen
            assert decision.escalated and decision.remote_model == "openai/p"
            assert decision.error is not None and "closed by its reader" in decision.error
    assert len(seen) == 1


def test_serve_options_set_the_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    import confroute.local
    import confroute.serving.server
    from confroute.serving.cli import add_serve_parser, run_serve

    captured: dict[str, Any] = {}
    monkeypatch.setattr(confroute.local, "LocalModel", lambda *_, **__: ScriptedLocalModel())
    monkeypatch.setattr(confroute.serving.server, "serve", lambda _, **kw: captured.update(kw))
    parser = argparse.ArgumentParser(prog="confroute")
    add_serve_parser(parser.add_subparsers(dest="command"))
    argv = ["serve", "--local-only", "--no-batching", "--header-timeout", "3", "--body-timeout"]
    argv += ["4.5", "--max-body-bytes", "2048", "--max-connections", "50"]
    assert run_serve(parser.parse_args(argv)) == 0
    assert captured["limits"] == ServerLimits(
        header_timeout=3.0, body_timeout=4.5, max_body_bytes=2048, max_connections=50
    )
    with pytest.raises(ConfigurationError, match="body_timeout"):
        run_serve(parser.parse_args([*argv[:6], "0"]))
