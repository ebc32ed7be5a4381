"""A planted canary key never leaves the request it authorises.

Every logger runs at DEBUG (LiteLLM's debug mode on too), and the success path and every
failure path are driven through a real HTTP server on 127.0.0.1. The canary must appear in no
log record (message, arguments, extras, traceback), nothing written to stdout/stderr, no repr,
no decision, no hook payload, no exception (message, ``errors``, chained causes), no LangChain
callback payload or JSONL decision log, and no LlamaIndex event. The server checks that the key
did reach it, so the test cannot pass by never sending it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import litellm
import pytest

from confroute import ConfRouter, EscalationError
from confroute.escalation import Escalation
from tests.fakes import ScriptedLocalModel
from tests.faultserver import FaultServer, closed_port

CANARY = "sk-canary-SECRETS-0f1e2d3c4b5a69788796a5b4"
FRAGMENT = CANARY[10:30]  # any piece this long would give the key away too
FAULTS = ["ok", "500", "429", "401", "hang", "malformed", "drop", "refused"]
MODES = ["route", "aroute", "stream", "astream"]


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer(hang_s=5.0) as running:
        yield running


@pytest.fixture(scope="module")
def slm() -> ScriptedLocalModel:
    return ScriptedLocalModel(script={"sure?": ("391", (0.99, 0.98, 0.97))})


@pytest.fixture
def debug_everything(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every logger at DEBUG, LiteLLM's debug mode on; levels restored afterwards."""
    caplog.set_level(logging.DEBUG)  # first, so caplog restores the root level it found
    loggers = [logging.getLogger(), *map(logging.getLogger, list(logging.root.manager.loggerDict))]
    saved = [(lg, lg.level, lg.disabled) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
        lg.disabled = False
    litellm._turn_on_debug()
    try:
        yield caplog
    finally:
        for lg, level, disabled in saved:
            lg.setLevel(level)
            lg.disabled = disabled


def leaks(text: str) -> bool:
    return CANARY in text or FRAGMENT in text


def assert_no_canary_in_logs(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    assert caplog.records, "the DEBUG capture saw nothing: the test would prove nothing"
    for record in caplog.records:
        rendered = formatter.format(record)  # message, arguments and any traceback
        assert not leaks(rendered), f"canary in a log record of {record.name}: {rendered[:300]}"
        assert not leaks(repr(record.__dict__)), f"canary in the extras of {record.name}"
    out, err = capfd.readouterr()
    assert not leaks(out) and not leaks(err), "canary written to stdout/stderr"


def exception_texts(error: BaseException | None) -> list[str]:
    """The message, repr and attributes of an error and of every error chained to it."""
    texts: list[str] = []
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        texts += [str(error), repr(error), repr(error.args), repr(vars(error))]
        error = error.__cause__ or error.__context__
    return texts


async def drive(router: ConfRouter, prompt: str, mode: str) -> tuple[Any, BaseException | None]:
    try:
        if mode == "route":
            return await asyncio.to_thread(router.route, prompt), None
        if mode == "aroute":
            return await router.aroute(prompt), None
        if mode == "stream":
            chunks = await asyncio.to_thread(lambda: list(router.stream(prompt)))
        else:
            chunks = [c async for c in router.astream(prompt)]
        return chunks, None
    except Exception as error:
        return None, error


@pytest.mark.parametrize("policy", ["return_local", "raise"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", FAULTS)
async def test_canary_never_leaks(
    server: FaultServer,
    slm: ScriptedLocalModel,
    debug_everything: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    fault: str,
    mode: str,
    policy: str,
) -> None:
    server.reset()
    if fault != "refused":
        server.default = fault
    base = f"http://127.0.0.1:{closed_port()}/v1" if fault == "refused" else server.base_url
    seen: list[Any] = []
    router = ConfRouter(
        slm,
        "openai/primary",
        threshold=0.8,
        api_base=base,
        api_key=CANARY,
        timeout=0.5 if fault == "hang" else 10.0,
        max_retries=1 if fault in ("500", "401") else 0,
        fallbacks=["openai/backup"] if fault == "429" else [],
        on_escalation_error=policy,  # type: ignore[arg-type]
        hooks=[seen.append],
    )
    assert router.escalation is not None
    router.escalation.backoff_s = 0.0
    result, error = await drive(router, "Tell me the secret plan", mode)

    if fault != "refused":
        assert server.requests, "the request never reached the server"
        assert all(r.authorization == f"Bearer {CANARY}" for r in server.requests)
    if fault == "ok":
        assert error is None
    elif policy == "raise" or (fault == "drop" and mode.endswith("stream")):
        assert isinstance(error, EscalationError)
    else:
        assert error is None
    assert len(seen) == 1
    if fault == "401":
        assert "**********" in (seen[0].error or "")  # the echoed key was redacted

    for text in [
        repr(router),
        repr(router.escalation),
        repr(vars(router.escalation)),
        repr(result),
        repr(seen),
        json.dumps([d.model_dump(mode="json") for d in seen]),
        *exception_texts(error),
    ]:
        assert not leaks(text), text[:300]
    assert_no_canary_in_logs(debug_everything, capfd)


def test_key_is_a_secret_type_end_to_end(slm: ScriptedLocalModel) -> None:
    from pydantic import SecretStr

    router = ConfRouter(slm, "openai/x", api_key=CANARY)
    assert router.escalation is not None
    assert isinstance(router.escalation.api_key, SecretStr)
    assert router.escalation.api_key.get_secret_value() == CANARY
    escalation = Escalation("openai/x", api_key=SecretStr(CANARY))
    assert escalation.api_key is not None and escalation.api_key.get_secret_value() == CANARY
    for text in (repr(router), repr(escalation), str(vars(escalation))):
        assert not leaks(text)


# -- the adapters ------------------------------------------------------------------------------


async def test_langchain_payloads_and_jsonl_log_hold_no_canary(
    server: FaultServer,
    slm: ScriptedLocalModel,
    debug_everything: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    from langchain_core.callbacks import AsyncCallbackHandler
    from langchain_core.load import dumpd, dumps

    from langchain_confroute import ChatConfRoute, EscalationLogger

    class Everything(AsyncCallbackHandler):  # type: ignore[misc]
        """Records the arguments of every callback LangChain makes."""

        def __init__(self) -> None:
            self.payloads: list[str] = []

        def __getattribute__(self, name: str) -> Any:
            if name.startswith("on_"):
                payloads = object.__getattribute__(self, "payloads")

                async def record(*args: Any, **kwargs: Any) -> None:
                    payloads.append(repr((name, args, kwargs)))

                return record
            return object.__getattribute__(self, name)

    server.reset()
    log = tmp_path / "decisions.jsonl"
    everything = Everything()
    config: Any = {"callbacks": [everything, EscalationLogger(log)]}
    for policy in ("return_local", "raise"):
        llm = ChatConfRoute(
            local_model=slm,
            strong_model="openai/primary",
            api_base=server.base_url,
            api_key=CANARY,
            threshold=0.8,
            max_retries=0,
            on_escalation_error=policy,
        )
        for fault in ("ok", "500", "401"):
            server.default = fault
            for streamed in (False, True):
                try:
                    if streamed:
                        got: Any = [c async for c in llm.astream("streamed", config=config)]
                    else:
                        got = await llm.ainvoke(f"question with {fault}", config=config)
                    assert not leaks(repr(got))
                except EscalationError as error:
                    assert policy == "raise" and fault != "ok"
                    for text in exception_texts(error):
                        assert not leaks(text)
        for text in (repr(llm), llm.model_dump_json(), json.dumps(dumpd(llm)), dumps(llm)):
            assert not leaks(text)
    assert all(r.authorization == f"Bearer {CANARY}" for r in server.requests)
    lines = log.read_text().splitlines()
    # 12 calls; the 4 that raise (policy "raise", faults 500/401) are not yet logged by the
    # LangChain adapter: see test_faults_adapters.py::test_langchain_reports_failed_escalations
    assert len(lines) in (8, 12)
    assert all(json.loads(line)["local_model"] == "scripted-slm" for line in lines)
    assert not leaks(log.read_text())
    assert everything.payloads and not any(leaks(p) for p in everything.payloads)
    assert_no_canary_in_logs(debug_everything, capfd)


async def test_llamaindex_events_hold_no_canary(
    server: FaultServer,
    slm: ScriptedLocalModel,
    debug_everything: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler

    from llamaindex_confroute import ConfRouteLLM

    payloads: list[str] = []

    class Everything(BaseEventHandler):
        def handle(self, event: Any, **kwargs: Any) -> None:
            payloads.append(repr(event) + repr(kwargs))

    handler = Everything()
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(handler)
    server.reset()
    try:
        for policy in ("return_local", "raise"):
            llm = ConfRouteLLM(
                slm,
                "openai/primary",
                api_base=server.base_url,
                api_key=CANARY,
                threshold=0.8,
                max_retries=0,
                on_escalation_error=policy,
            )
            for fault in ("ok", "500", "401"):
                server.default = fault
                try:
                    response = await llm.acomplete(f"question with {fault}")
                    assert not leaks(repr(response))
                except EscalationError as error:
                    assert policy == "raise"
                    for text in exception_texts(error):
                        assert not leaks(text)
            for text in (repr(llm), llm.to_json(), json.dumps(llm.to_dict())):
                assert not leaks(text)
    finally:
        dispatcher.event_handlers.remove(handler)
    assert all(r.authorization == f"Bearer {CANARY}" for r in server.requests)
    assert payloads and not any(leaks(p) for p in payloads)
    assert_no_canary_in_logs(debug_everything, capfd)
