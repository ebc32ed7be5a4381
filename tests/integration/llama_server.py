"""A real ``python -m llama_cpp.server`` on 127.0.0.1, for the integration tests that need one.

Used by the server-backend tests (the SLM behind a server) and the escalation tests (the strong
model behind a server). Needs ``pip install 'llama-cpp-python[server]'``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from confroute.models import BUNDLED_MODELS, bundled_gguf


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def llama_server(model: str, alias: str, log_dir: Path) -> Iterator[str]:
    """Serve the bundled ``model`` as ``alias``; yields the OpenAI base URL, stops it after."""
    gguf = bundled_gguf(BUNDLED_MODELS[model])
    port = free_port()
    log = log_dir / "server.log"
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", alias,
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
        "--n_threads", str(min(4, os.cpu_count() or 1)),
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(base_url + "/models", timeout=5) as reply:
                    assert json.load(reply)["data"][0]["id"] == alias
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"llama_cpp.server did not start: {log.read_text()[-2000:]}")
                time.sleep(1)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
