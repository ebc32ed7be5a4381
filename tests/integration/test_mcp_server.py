"""``confroute mcp`` as a subprocess with the bundled 0.5B, called through the SDK's own clients.

One server speaks stdio (the way Claude Desktop starts it); one serves streamable HTTP on
127.0.0.1 with a strong model that cannot be reached and a key set, so that a failed escalation
shows the key in no result and no log line. Each server loads the model once (module scope).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent

from confroute.models import DEFAULT_SLM

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

SECRET = "sk-mcp-integration-SECRET-93b1"
ROOT = Path(__file__).resolve().parents[2]
LOAD_TIMEOUT_S = 600.0
"""How long a server may take to load the model (the machine may be shared)."""


def server_env() -> dict[str, str]:
    """This process's environment (offline, PYTHONPATH), with a strong-model key set."""
    return {**os.environ, "CONFROUTE_API_KEY": SECRET, "PYTHONUNBUFFERED": "1"}


def command(*extra: str, backend: str = "transformers") -> list[str]:
    """``confroute mcp`` on the bundled 0.5B (transformers by default: llama.cpp cannot score)."""
    return [
        "-m",
        "confroute",
        "mcp",
        "--slm",
        DEFAULT_SLM,
        "--slm-backend",
        backend,
        "--max-new-tokens",
        "24",
        "--log-level",
        "DEBUG",
        *extra,
    ]


def text_of(result: CallToolResult) -> str:
    [block] = result.content
    assert isinstance(block, TextContent)
    return block.text


# -- stdio -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stdio_log() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder) / "stdio-server.log"


@asynccontextmanager
async def stdio_session(log: Path) -> AsyncIterator[ClientSession]:
    parameters = StdioServerParameters(
        command=sys.executable, args=command("--strong", "none"), env=server_env(), cwd=ROOT
    )
    with log.open("a") as errlog:
        async with (
            stdio_client(parameters, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


@asynccontextmanager
async def held(
    open_session: Callable[[], AbstractAsyncContextManager[ClientSession]],
) -> AsyncIterator[ClientSession]:
    """A session opened and closed by one task of its own.

    The SDK's transports are anyio task groups, which must be left by the task that entered
    them; a fixture's set-up and tear-down may run in different tasks.
    """
    ready: asyncio.Future[ClientSession] = asyncio.get_running_loop().create_future()
    done = asyncio.Event()

    async def hold() -> None:
        try:
            async with open_session() as session:
                ready.set_result(session)
                await done.wait()
        except BaseException as error:
            if not ready.done():
                ready.set_exception(error)
            raise

    task = asyncio.create_task(hold())
    try:
        yield await ready
    finally:
        done.set()
        await task


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stdio(stdio_log: Path) -> AsyncIterator[ClientSession]:
    async with held(lambda: stdio_session(stdio_log)) as session:
        yield session


async def test_stdio_lists_both_tools(stdio: ClientSession) -> None:
    tools = {tool.name: tool for tool in (await stdio.list_tools()).tools}
    assert set(tools) == {"ask", "score"}
    assert tools["ask"].input_schema["required"] == ["question"]
    assert tools["ask"].output_schema is not None


async def test_stdio_ask_answers_from_the_context(stdio: ClientSession) -> None:
    result = await stdio.call_tool(
        "ask",
        {
            "question": "How many hours does the battery last? Answer with the number.",
            "context": "The Larkspur K7 robot's battery lasts 14 hours on a full charge.",
        },
        read_timeout_seconds=LOAD_TIMEOUT_S,
    )
    assert not result.is_error, result.content
    decision = result.structured_content
    assert decision is not None
    assert "14" in text_of(result) and decision["answer"] == text_of(result)
    assert decision["answered_by"] == decision["local_model"] == DEFAULT_SLM
    assert decision["escalated"] is False  # --strong none: nothing to escalate to
    assert 0.0 <= decision["confidence"] <= 1.0
    assert decision["would_escalate"] is (decision["confidence"] < decision["threshold"])


async def test_stdio_ask_kept_local_and_a_blank_question(stdio: ClientSession) -> None:
    local = await stdio.call_tool(
        "ask", {"question": "What is 2+2?", "max_escalation": "never"}, read_timeout_seconds=300
    )
    assert local.structured_content is not None
    assert local.structured_content["mode"] == "local"
    blank = await stdio.call_tool("ask", {"question": " "})
    assert blank.is_error and "question must be a non-empty string" in text_of(blank)


async def test_stdio_score_ranks_a_right_answer_above_a_wrong_one(stdio: ClientSession) -> None:
    question = {"question": "What is the capital of France? Answer in one word."}
    right = await stdio.call_tool("score", {**question, "answer": "Paris"})
    wrong = await stdio.call_tool("score", {**question, "answer": "Banana"})
    assert right.structured_content is not None and wrong.structured_content is not None
    assert right.structured_content["estimator"] == "perplexity"
    assert right.structured_content["confidence"] > wrong.structured_content["confidence"]


async def test_stdio_log_holds_no_key(stdio: ClientSession, stdio_log: Path) -> None:
    text = stdio_log.read_text()
    assert "confroute mcp: stdio" in text
    assert SECRET not in text


def test_stdout_carries_only_the_protocol_from_start_to_exit(tmp_path: Path) -> None:
    """With debug logs on, nothing but JSON-RPC reaches stdout, up to the process's exit."""
    requests = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "ping"},
    ]
    log = tmp_path / "stderr.log"
    with log.open("w") as errlog:
        server = subprocess.Popen(
            [sys.executable, *command("--strong", "none", backend="auto")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errlog,
            text=True,
            env=server_env(),
            cwd=ROOT,
        )
    assert server.stdin is not None and server.stdout is not None
    replies = []
    for request in requests:
        server.stdin.write(json.dumps(request) + "\n")
        server.stdin.flush()
        if "id" in request:
            replies.append(json.loads(server.stdout.readline()))
    server.stdin.close()  # the client leaves: the server shuts down and the process exits
    rest = server.stdout.read()
    server.wait(timeout=LOAD_TIMEOUT_S)
    errors = log.read_text()
    assert [r["id"] for r in replies] == [1, 2] and "result" in replies[1]
    assert rest.strip() == "", f"stray output on stdout: {rest[:300]!r}"
    assert "confroute mcp: stdio" in errors and SECRET not in errors


# -- streamable HTTP ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def http_server(stdio_log: Path) -> Iterator[tuple[str, Path]]:
    """The server on streamable HTTP; escalations go to a closed port with a key set."""
    port, closed = free_port(), free_port()
    log = stdio_log.with_name("http-server.log")
    args = command(
        "--transport",
        "streamable-http",
        "--port",
        str(port),
        "--strong",
        "openai/gpt-4o-mini",
        "--api-base",
        f"http://127.0.0.1:{closed}/v1",
        "--threshold",
        "1.0",  # every answer escalates (and fails: nothing listens there)
    )
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, *args], env=server_env(), cwd=ROOT, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while True:
            assert process.poll() is None, log.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"no server after {LOAD_TIMEOUT_S}s"
                time.sleep(1)
        yield f"http://127.0.0.1:{port}/mcp", log
    finally:
        process.terminate()
        process.wait(timeout=30)


@asynccontextmanager
async def http_session(url: str) -> AsyncIterator[ClientSession]:
    async with (
        streamable_http_client(url) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def test_http_ask_returns_the_local_answer_when_escalation_fails(
    http_server: tuple[str, Path],
) -> None:
    url, log = http_server
    async with http_session(url) as session:
        assert {t.name for t in (await session.list_tools()).tools} == {"ask", "score"}
        result = await session.call_tool(
            "ask", {"question": "What is 2+2?"}, read_timeout_seconds=LOAD_TIMEOUT_S
        )
        local = await session.call_tool(
            "ask", {"question": "What is 2+2?", "max_escalation": False}, read_timeout_seconds=300
        )
    assert not result.is_error, result.content
    decision = result.structured_content
    assert decision is not None
    assert decision["escalated"] is True and decision["error"]
    assert decision["answered_by"] == DEFAULT_SLM  # the local answer, kept after the failure
    assert text_of(result) == decision["answer"] != ""
    assert local.structured_content is not None
    assert local.structured_content["escalated"] is False
    assert local.structured_content["would_escalate"] is True  # threshold 1.0
    for text in (result.model_dump_json(), local.model_dump_json(), log.read_text()):
        assert SECRET not in text
    assert "gpt-4o-mini" in log.read_text()  # the failed escalation was logged, without the key


async def test_http_score(http_server: tuple[str, Path]) -> None:
    url, _ = http_server
    async with http_session(url) as session:
        result = await session.call_tool(
            "score", {"question": "What is 2+2?", "answer": "4"}, read_timeout_seconds=300
        )
    scored: dict[str, Any] | None = result.structured_content
    assert not result.is_error and scored is not None
    assert 0.0 <= scored["confidence"] <= 1.0
    assert scored["escalate"] is True  # threshold 1.0: nothing clears it
