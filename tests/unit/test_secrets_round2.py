"""Secrets, round two (issue 19 items 2 and 9).

Item 2: a key in the userinfo of ``api_base`` (``http://u:KEY@host/v1``) is a secret like
``api_key``: it reaches the server (as the ``Basic`` header the HTTP client makes of it) but no
repr, dump, serialisation, callback payload, span or error, not even a 401 that quotes the
``Basic`` header back. Item 9: local-only (no cost-map fetch) whatever the import order of
``litellm`` and ``confroute``, or one warning that says what to set.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from confroute import ConfRouter, EscalationError
from confroute.errors import ConfigurationError
from confroute.escalation import Escalation
from confroute.settings import RouterSettings, environment, settings_from
from tests.fakes import ScriptedLocalModel
from tests.faultserver import FaultServer, echo

PASSWORD = "sk-canary-USERINFO-7a6b5c4d3e2f1a0b"
USER = "acct"
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
FRAGMENTS = (PASSWORD, PASSWORD[8:26], BASIC, BASIC[4:24], f"{USER}:")
MASKED_MARK = "***@127.0.0.1"
KEY = "sk-unused"  # the OpenAI client wants one; the userinfo's Basic header replaces it
MODES = ["route", "aroute", "stream", "astream"]


def leaks(text: str) -> bool:
    return any(fragment in text for fragment in FRAGMENTS)


def with_userinfo(base_url: str) -> str:
    return base_url.replace("http://", f"http://{USER}:{PASSWORD}@", 1)


def exception_texts(error: BaseException | None) -> list[str]:
    """The message, repr and attributes of an error and of every error chained to it."""
    texts: list[str] = []
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        texts += [str(error), repr(error), repr(error.args), repr(vars(error))]
        error = error.__cause__ or error.__context__
    return texts


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer() as running:
        yield running


@pytest.fixture
def base(server: FaultServer) -> str:
    server.reset()
    return with_userinfo(server.base_url)


@pytest.fixture(scope="module")
def slm() -> ScriptedLocalModel:
    return ScriptedLocalModel(script={"sure?": ("391", (0.99, 0.98, 0.97))})


def assert_sent_as_basic(server: FaultServer) -> None:
    """The credential did reach the server: the test cannot pass by dropping it."""
    assert server.requests, "the request never reached the server"
    assert all(r.authorization == f"Basic {BASIC}" for r in server.requests)


# -- the core ----------------------------------------------------------------------------------


def test_reprs_show_the_url_with_its_userinfo_masked(slm: ScriptedLocalModel) -> None:
    base = f"http://{USER}:{PASSWORD}@127.0.0.1:9/v1"
    router = ConfRouter(slm, "openai/p", api_base=base, api_key="sk-other")
    assert router.escalation is not None
    assert "api_base='http://***@127.0.0.1:9/v1'" in repr(router.escalation)
    settings = RouterSettings(api_base=base)  # type: ignore[arg-type]
    for text in (
        repr(router),
        repr(router.escalation),
        repr(vars(router.escalation)),
        repr(router.settings),
        router.settings.model_dump_json(),
        repr(settings),
        settings.model_dump_json(),
        repr(environment({"CONFROUTE_API_BASE": base})),
    ):
        assert not leaks(text), text
        assert "http://***@127.0.0.1:9/v1" in text, text


def test_the_url_stays_whole_for_the_call(slm: ScriptedLocalModel) -> None:
    from pydantic import SecretStr

    base = f"http://{USER}:{PASSWORD}@127.0.0.1:9/v1"
    for given in (base, SecretStr(base)):
        escalation = Escalation("openai/p", api_base=given)
        assert escalation.api_base is not None
        assert escalation.api_base.get_secret_value() == base
    router = ConfRouter(slm, "openai/p", api_base=base)
    assert router.escalation is not None and router.escalation.api_base is not None
    assert router.escalation.api_base.get_secret_value() == base
    assert settings_from(router.settings).api_base == router.settings.api_base  # round trip
    escalation.api_base = "http://127.0.0.1:9/v1"  # type: ignore[assignment]  # wrapped
    assert repr(escalation).count("api_base='http://127.0.0.1:9/v1'") == 1
    with pytest.raises(ConfigurationError, match="api_base must be a URL string"):
        Escalation("openai/p", api_base=9)  # type: ignore[arg-type]


def test_secret_url_masks_userinfo_password_and_basic_credential() -> None:
    from confroute.redaction import SecretURL, mask_secret

    url = SecretURL("https://us%40er:p%3Ass@host:8/v1?q=1")
    assert str(url) == "https://***@host:8/v1?q=1"
    assert repr(url) == "SecretURL('https://***@host:8/v1?q=1')"
    assert SecretURL("http://127.0.0.1:9/v1").secret_parts() == ()
    assert str(SecretURL("http://127.0.0.1:9/v1")) == "http://127.0.0.1:9/v1"
    decoded = base64.b64encode(b"us@er:p:ss").decode()
    text = f"us%40er:p%3Ass / p%3Ass / p:ss / Basic {decoded} / host"
    assert (
        mask_secret(text, url) == "********** / ********** / ********** / Basic ********** / host"
    )
    assert mask_secret("key sk-1 at host", None, SecretURL("http://h/v1")) == "key sk-1 at host"


def test_settings_errors_never_echo_the_url() -> None:
    with pytest.raises(ConfigurationError) as info:
        settings_from(None, api_base=[f"http://{USER}:{PASSWORD}@h/v1"])
    assert "api_base must be a string" in str(info.value) and not leaks(str(info.value))


@pytest.mark.parametrize("policy", ["return_local", "raise"])
@pytest.mark.parametrize("mode", MODES)
async def test_a_401_quoting_the_basic_header_is_redacted(
    server: FaultServer,
    base: str,
    slm: ScriptedLocalModel,
    caplog: pytest.LogCaptureFixture,
    mode: str,
    policy: str,
) -> None:
    caplog.set_level(logging.DEBUG, logger="confroute")
    server.default = "401"  # the error message quotes the Authorization header it got
    seen: list[Any] = []
    router = ConfRouter(
        slm,
        "openai/primary",
        threshold=0.8,
        api_base=base,
        api_key=KEY,
        max_retries=0,
        on_escalation_error=policy,  # type: ignore[arg-type]
        hooks=[seen.append],
    )
    error: BaseException | None = None
    try:
        if mode == "route":
            result: Any = router.route("Tell me the plan")
        elif mode == "aroute":
            result = await router.aroute("Tell me the plan")
        elif mode == "stream":
            result = list(router.stream("Tell me the plan"))
        else:
            result = [c async for c in router.astream("Tell me the plan")]
    except EscalationError as raised:
        error, result = raised, None
    [decision] = seen
    assert (error is not None) == (policy == "raise")
    if mode.startswith("a"):
        # LiteLLM's async transport (aiohttp) refuses credentials in the URL beside an
        # Authorization header, so nothing is sent; the refusal must not show them either.
        assert server.requests == [] and decision.error
    else:
        assert_sent_as_basic(server)
        assert decision.error and "Basic **********" in decision.error
    texts = [repr(result), repr(seen), json.dumps(decision.model_dump(mode="json"))]
    texts += exception_texts(error) + [r.getMessage() for r in caplog.records]
    for text in texts:
        assert not leaks(text), text[:300]


def test_the_redact_hook_error_masks_the_userinfo(base: str, slm: ScriptedLocalModel) -> None:
    def broken(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        raise RuntimeError(f"scanner down; it read {PASSWORD} and {BASIC}")

    escalation = Escalation("openai/primary", api_base=base, api_key=KEY, redact=broken)
    router = ConfRouter(slm, escalation, threshold=0.8, on_escalation_error="raise")
    with pytest.raises(EscalationError, match="redact hook failed") as info:
        router.route("q")
    assert info.value.errors == [
        "redact: RuntimeError: scanner down; it read ********** and **********"
    ]


# -- LangChain ---------------------------------------------------------------------------------


def test_langchain_serialisations_and_start_payload_mask_the_userinfo(
    server: FaultServer, base: str, slm: ScriptedLocalModel
) -> None:
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.load import dumpd, dumps

    from langchain_confroute import ChatConfRoute

    class StartPayloads(BaseCallbackHandler):  # type: ignore[misc]
        def __init__(self) -> None:
            self.serialized: list[Any] = []

        def on_chat_model_start(self, serialized: Any, messages: Any, **_: Any) -> None:
            self.serialized.append(serialized)

    handler = StartPayloads()
    llm = ChatConfRoute(local_model=slm, strong_model="openai/primary", api_base=base, api_key=KEY)
    message = llm.invoke("Tell me the plan", config={"callbacks": [handler]})  # sync: see above
    assert message.content == echo("primary", "Tell me the plan")
    assert_sent_as_basic(server)
    assert handler.serialized, "on_chat_model_start was not called"
    texts = [
        repr(llm),
        llm.model_dump_json(),
        json.dumps(dumpd(llm)),
        dumps(llm),
        json.dumps(handler.serialized),
        repr(message),
    ]
    for text in texts:
        assert not leaks(text), text[:300]
    assert MASKED_MARK in llm.model_dump_json() and MASKED_MARK in json.dumps(handler.serialized)


# -- LlamaIndex --------------------------------------------------------------------------------


def test_llamaindex_serialisation_and_spans_mask_the_userinfo(
    server: FaultServer, base: str, slm: ScriptedLocalModel
) -> None:
    from llama_index.core.bridge.pydantic import Field
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.span_handlers import SimpleSpanHandler

    from llamaindex_confroute import ConfRouteLLM

    class Spans(SimpleSpanHandler):
        """Records what span handlers are given: bound arguments, instance, result, error."""

        seen: list[str] = Field(default_factory=list)

        def new_span(self, id_: str, bound_args: Any, instance: Any = None, **kw: Any) -> Any:
            self.seen.append(repr((id_, bound_args, instance, kw)))
            return super().new_span(id_, bound_args, instance, **kw)

        def prepare_to_exit_span(self, id_: str, bound_args: Any, **kw: Any) -> Any:
            self.seen.append(repr((id_, bound_args, kw)))
            return super().prepare_to_exit_span(id_, bound_args, **kw)

        def prepare_to_drop_span(self, id_: str, bound_args: Any, **kw: Any) -> Any:
            self.seen.append(repr((id_, bound_args, kw)))
            return super().prepare_to_drop_span(id_, bound_args, **kw)

    spans = Spans()
    root = get_dispatcher()
    root.add_span_handler(spans)
    try:
        llm = ConfRouteLLM(slm, "openai/primary", api_base=base, api_key=KEY, max_retries=0)
        response = llm.complete("Tell me the plan")
        assert response.text == echo("primary", "Tell me the plan")
        server.default = "401"
        failing = ConfRouteLLM(
            slm,
            "openai/primary",
            api_base=base,
            api_key=KEY,
            max_retries=0,
            on_escalation_error="raise",
        )
        with pytest.raises(EscalationError) as info:
            failing.complete("Tell me the plan")
        ready = ConfRouteLLM(router=ConfRouter(slm, "openai/primary", api_base=base))
    finally:
        root.span_handlers.remove(spans)
    assert_sent_as_basic(server)
    assert spans.completed_spans and spans.dropped_spans and spans.seen
    for model in (llm, failing, ready):
        assert MASKED_MARK in model.to_json()
        for text in (repr(model), model.to_json(), json.dumps(model.to_dict())):
            assert not leaks(text), text[:300]
    for text in [*spans.seen, *exception_texts(info.value)]:
        assert not leaks(text), text[:300]


# -- item 9: the cost map and the import order -------------------------------------------------

_PROBE = """
import time
started = time.perf_counter()
{imports}
from litellm.litellm_core_utils.get_model_cost_map import get_model_cost_map_source_info
info = get_model_cost_map_source_info()
print("FORCED_LOCAL" if info["is_env_forced"] else "FETCHED", round(time.perf_counter() - started))
"""


def _import_in_fresh_interpreter(
    imports: str, cost_map_url: str
) -> subprocess.CompletedProcess[str]:
    """Run ``imports`` in a new Python with no LITELLM_LOCAL_MODEL_COST_MAP set.

    The cost map URL points at a closed port on 127.0.0.1, so a fetch (if any) fails at once
    instead of reaching the network; whether LiteLLM tried is read from LiteLLM itself.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("LITELLM_")}
    env["LITELLM_MODEL_COST_MAP_URL"] = cost_map_url
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).parents[2] / "shared"), str(Path(__file__).parents[2])]
    )
    return subprocess.run(
        [sys.executable, "-c", _PROBE.format(imports=imports)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )


@pytest.fixture(scope="module")
def closed_cost_map_url() -> str:
    from tests.faultserver import closed_port

    return f"http://127.0.0.1:{closed_port()}/model_prices.json"


def test_confroute_first_keeps_litellm_local(closed_cost_map_url: str) -> None:
    done = _import_in_fresh_interpreter("import confroute\nimport litellm", closed_cost_map_url)
    assert done.stdout.split()[0] == "FORCED_LOCAL"
    assert "LITELLM_LOCAL_MODEL_COST_MAP" not in done.stderr  # no warning: nothing to warn of
    assert "cost map" not in done.stderr.lower()  # LiteLLM did not try to fetch it either


def test_litellm_first_warns_once_with_what_to_set(closed_cost_map_url: str) -> None:
    imports = "import litellm\nimport confroute\nimport confroute.escalation"
    imports += "\nconfroute.escalation.warn_if_cost_map_fetched()"  # a second call says nothing
    done = _import_in_fresh_interpreter(imports, closed_cost_map_url)
    assert done.stdout.split()[0] == "FETCHED"  # LiteLLM decided at its own import
    warnings = [line for line in done.stderr.splitlines() if "imported before confroute" in line]
    assert len(warnings) == 1, done.stderr
    assert "set LITELLM_LOCAL_MODEL_COST_MAP=True in the environment" in warnings[0]
    assert closed_cost_map_url in warnings[0]


def test_no_warning_when_the_user_asked_for_the_remote_map(closed_cost_map_url: str) -> None:
    imports = "import os\nos.environ['LITELLM_LOCAL_MODEL_COST_MAP'] = 'False'\n"
    imports += "import litellm\nimport confroute"
    done = _import_in_fresh_interpreter(imports, closed_cost_map_url)
    assert done.stdout.split()[0] == "FETCHED"
    assert "imported before confroute" not in done.stderr
