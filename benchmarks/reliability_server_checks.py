"""The server probes that ``benchmarks/reliability_probes.py`` runs, over real sockets.

Each sends raw HTTP to confroute's server (started in-process on a free 127.0.0.1 port by
``reliability_checks.Env``) and returns an ``Outcome``.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from typing import Any

from reliability_checks import Env
from reliability_probes import Outcome

DISCONNECT_S = 11.0
"""How long a server stream whose client left may take to report its decision."""
STALL_S = 10.0
"""A stalled request body must be dropped by the server within this many seconds."""


def _post(env: Env, body: bytes, path: str = "/v1/chat/completions") -> tuple[int, str, bytes]:
    """POST raw bytes to the confroute server: status, content type, body."""
    connection = http.client.HTTPConnection("127.0.0.1", env.server.port, timeout=30)
    try:
        connection.request("POST", path, body, {"Content-Type": "application/json"})
        reply = connection.getresponse()
        return reply.status, reply.getheader("Content-Type", ""), reply.read()
    finally:
        connection.close()


def _get(env: Env, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", env.server.port, timeout=30)
    try:
        connection.request("GET", path)
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


def _chat_body(**extra: Any) -> str:
    return json.dumps(
        {"model": "confroute", "messages": [{"role": "user", "content": "hi"}]} | extra
    )


def server_stream_disconnect(env: Env) -> Outcome:
    """issue 19.3: a server client that closes a `stream: true` request after the first bytes
    (the strong model stalls mid-answer) gets one decision within 11 s.
    """
    before = len(env.served)
    with socket.create_connection(("127.0.0.1", env.server.port), timeout=10) as client:
        stalling = [{"role": "user", "content": "hi [[fault:stall]]"}]
        body = _chat_body(stream=True, messages=stalling).encode()
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        client.sendall(head.encode() + body)
        client.recv(64)  # the first bytes, then the client goes away
    deadline = time.monotonic() + DISCONNECT_S
    while time.monotonic() < deadline and len(env.served) == before:
        time.sleep(0.1)
    reported = len(env.served) - before
    observed = f"{reported} decisions {DISCONNECT_S:.0f} s after the client left (want 1)"
    return Outcome(reported == 1, observed)


def server_read_timeout(env: Env) -> Outcome:
    """issue 19.6: the server drops a request that sends its headers and 1 of 100 body bytes,
    then stalls, within 10 s (the probe server runs with body_timeout=5 s).
    """
    with socket.create_connection(("127.0.0.1", env.server.port), timeout=STALL_S + 5) as client:
        client.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        started = time.monotonic()
        client.settimeout(STALL_S)
        try:
            client.recv(1024)
        except TimeoutError:
            return Outcome(
                False, f"a stalled body still holds its connection after {STALL_S:.0f} s"
            )
        return Outcome(True, f"dropped after {time.monotonic() - started:.1f} s")


def server_bad_values(env: Env) -> Outcome:
    """issue 19.7: `max_tokens` Infinity / NaN / 1e400, a lone surrogate, `tool_calls: "zz"`,
    50,000-deep JSON each get a 400.
    """
    hi = '"messages": [{"role": "user", "content": "hi"}]'
    bodies = {
        "max_tokens Infinity": f'{{"model": "confroute", {hi}, "max_tokens": Infinity}}',
        "max_tokens NaN": f'{{"model": "confroute", {hi}, "max_tokens": NaN}}',
        "max_tokens 1e400": f'{{"model": "confroute", {hi}, "max_tokens": 1e400}}',
        "lone surrogate": '{"model": "confroute", "messages": [{"role": "user", '
        '"content": "x \\ud800"}]}',
        "tool_calls zz": '{"model": "confroute", "messages": [{"role": "user", "content": "hi"}, '
        '{"role": "assistant", "content": "", "tool_calls": "zz"}, '
        '{"role": "user", "content": "q"}]}',
        "50,000-deep JSON": "[" * 50_000 + "]" * 50_000,
    }
    statuses = {name: _post(env, body.encode())[0] for name, body in bodies.items()}
    bad = {k: v for k, v in statuses.items() if v != 400}
    observed = ", ".join(f"{k} -> {v}" for k, v in bad.items())
    return Outcome(not bad, observed if bad else "every one a 400")


def malformed_bodies(env: Env) -> Outcome:
    """the server answers a body that is not JSON, not an object, lacks `messages` or is not
    UTF-8 with a JSON 400.
    """
    bodies = [b"{not json", b"[]", b'"text"', b"{}", b'{"model": "confroute"}', b"\xff\xfe"]
    seen = [_post(env, body) for body in bodies]
    bad = [f"{b[:10]!r} -> {s} {t}" for b, (s, t, _) in zip(bodies, seen, strict=True)]
    bad = [line for line, (s, t, _) in zip(bad, seen, strict=True) if s != 400 or "json" not in t]
    return Outcome(not bad, ", ".join(bad) if bad else f"{len(bodies)} bodies, each a JSON 400")


def path_traversal(env: Env) -> Outcome:
    """`..`, `%2e%2e` and `%2F` paths get no 200 and no file contents."""
    paths = [
        "/../../etc/passwd",
        "/v1/../../etc/passwd",
        "/v1/models/..%2F..%2Fetc%2Fpasswd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/static/../../pyproject.toml",
    ]
    seen = [_get(env, path) for path in paths]
    leaked = [
        p
        for p, (_, body) in zip(paths, seen, strict=True)
        if b"root:" in body or b"[project]" in body
    ]
    codes = sorted({status for status, _ in seen})
    return Outcome(
        not leaked and 200 not in codes, f"statuses {codes}, leaked {leaked or 'nothing'}"
    )


def huge_body(env: Env) -> Outcome:
    """a 50 MB request body is refused with a 413 and the server stays healthy."""
    body = (
        b'{"model": "confroute", "messages": [{"role": "user", "content": "'
        + b"a" * (50 * 2**20)
        + b'"}]}'
    )
    status: int | str
    try:
        status, _, _ = _post(env, body)
    except OSError as error:
        status = f"connection closed ({type(error).__name__})"
    health, _ = _get(env, "/health")
    return Outcome(
        status == 413 and health == 200, f"50 MB body -> {status}, then /health {health}"
    )
