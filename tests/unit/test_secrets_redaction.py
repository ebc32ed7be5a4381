"""The ``redact`` hook of :class:`~confroute.escalation.Escalation`.

It runs on (a copy of) the messages before any escalation call, once per request; what it
returns is what the strong provider sees, on every retry and fallback. When it fails, nothing
is sent and the router's ``on_escalation_error`` policy applies.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from confroute import ConfRouter, EscalationError
from confroute.errors import ConfigurationError
from confroute.escalation import Escalation
from tests.fakes import ScriptedLocalModel
from tests.faultserver import FaultServer, echo

EMAIL = re.compile(r"[\w.]+@[\w.]+")
QUESTION = "Why was jane.doe@example.com charged twice?"
MASKED = "Why was [EMAIL] charged twice?"


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer() as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh(server: FaultServer) -> None:
    server.reset()


@pytest.fixture(scope="module")
def slm() -> ScriptedLocalModel:
    return ScriptedLocalModel(script={"sure?": ("391", (0.99, 0.98, 0.97))})


class Masker:
    """Masks e-mail addresses; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.calls += 1
        for message in messages:  # mutating the copy it is given is allowed
            message["content"] = EMAIL.sub("[EMAIL]", message["content"])
        return messages


def router_with(
    server: FaultServer, slm: ScriptedLocalModel, redact: Any, **kwargs: Any
) -> tuple[ConfRouter, list[Any]]:
    seen: list[Any] = []
    policy = kwargs.pop("policy", "return_local")
    escalation = Escalation(
        "openai/primary",
        api_base=server.base_url,
        api_key="sk-test",
        backoff_s=0.0,
        redact=redact,
        **kwargs,
    )
    router = ConfRouter(
        slm, escalation, threshold=0.8, on_escalation_error=policy, hooks=[seen.append]
    )
    return router, seen


@pytest.mark.parametrize("mode", ["route", "aroute", "stream", "astream", "batch"])
async def test_provider_sees_only_redacted_messages(
    server: FaultServer, slm: ScriptedLocalModel, mode: str
) -> None:
    masker = Masker()
    router, seen = router_with(server, slm, masker)
    conversation = [
        {"role": "system", "content": "Support desk for bob@corp.example"},
        {"role": "user", "content": QUESTION},
    ]
    original = [dict(m) for m in conversation]
    if mode == "route":
        text = router.route(conversation).text
    elif mode == "aroute":
        text = (await router.aroute(conversation)).text
    elif mode == "stream":
        text = "".join(c.text for c in router.stream(conversation))
    elif mode == "astream":
        text = "".join([c.text async for c in router.astream(conversation)])
    else:
        text = router.route_batch([conversation, "sure?"])[0].text
    assert text == echo("primary", MASKED)
    [request] = server.requests
    assert request.messages == [
        {"role": "system", "content": "Support desk for [EMAIL]"},
        {"role": "user", "content": MASKED},
    ]
    assert conversation == original  # the caller's messages are untouched
    assert masker.calls == 1
    assert seen[0].escalated and seen[0].error is None


def test_redaction_runs_once_and_applies_to_every_retry_and_fallback(
    server: FaultServer, slm: ScriptedLocalModel
) -> None:
    server.model_faults["primary"] = "500"
    masker = Masker()
    router, _ = router_with(server, slm, masker, max_retries=1, fallbacks=["openai/backup"])
    response = router.route(QUESTION)
    assert response.text == echo("backup", MASKED)
    assert [r.model for r in server.requests] == ["primary", "primary", "backup"]
    assert all(r.messages[-1]["content"] == MASKED for r in server.requests)
    assert masker.calls == 1


def test_confident_answers_are_not_redacted_or_sent(
    server: FaultServer, slm: ScriptedLocalModel
) -> None:
    masker = Masker()
    router, _ = router_with(server, slm, masker)
    assert router.route("sure?").text == "391"
    assert masker.calls == 0 and server.requests == []


def _raises(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    raise RuntimeError("PII scanner is down; token sk-test")


BROKEN_HOOKS = {
    "raises": _raises,
    "returns None": lambda messages: None,
    "returns a string": lambda messages: "redacted",
    "returns an empty list": lambda messages: [],
    "returns a list of strings": lambda messages: ["hello"],
}


@pytest.mark.parametrize("hook", list(BROKEN_HOOKS))
@pytest.mark.parametrize("policy", ["return_local", "raise"])
async def test_a_failing_hook_sends_nothing(
    server: FaultServer, slm: ScriptedLocalModel, hook: str, policy: str
) -> None:
    router, seen = router_with(server, slm, BROKEN_HOOKS[hook], policy=policy)
    conversation = [{"role": "user", "content": QUESTION}]
    if policy == "raise":
        with pytest.raises(EscalationError, match="redact hook failed") as info:
            await router.aroute(conversation)
        assert info.value.attempts == 0 and info.value.provider == "openai/primary"
        assert "sk-test" not in str(info.value)
        [error] = info.value.errors
        assert error.startswith("redact: ") and "sk-test" not in error
    else:
        response = await router.aroute(conversation)
        assert response.text == "I am not sure."  # the marked local answer
        assert response.decision.error and "redact hook failed" in response.decision.error
        assert response.decision.escalated and response.decision.attempts == 0  # tried, none sent
    assert server.requests == []  # fail closed: the unredacted text never left
    assert conversation == [{"role": "user", "content": QUESTION}]
    assert len(seen) == 1 and seen[0].attempts == 0
    assert "sk-test" not in (seen[0].error or "")


@pytest.mark.parametrize("mode", ["route", "aroute", "stream", "astream"])
async def test_a_raising_hook_raises_escalation_error_on_every_path(
    server: FaultServer, slm: ScriptedLocalModel, mode: str
) -> None:
    router, seen = router_with(server, slm, _raises, policy="raise")
    with pytest.raises(EscalationError, match="redact hook failed") as info:
        if mode == "route":
            router.route(QUESTION)
        elif mode == "aroute":
            await router.aroute(QUESTION)
        elif mode == "stream":
            "".join(c.text for c in router.stream(QUESTION))
        else:
            "".join([c.text async for c in router.astream(QUESTION)])
    assert info.value.errors == ["redact: RuntimeError: PII scanner is down; token **********"]
    assert info.value.attempts == 0
    assert server.requests == []
    assert [(d.escalated, d.attempts) for d in seen] == [(True, 0)]


def _tool_turn(email: str) -> dict[str, Any]:
    arguments = f'{{"email": "{email}"}}'
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "lookup", "arguments": arguments},
    }
    return {"role": "assistant", "content": "", "tool_calls": [call]}


def test_the_hook_gets_a_deep_copy(server: FaultServer, slm: ScriptedLocalModel) -> None:
    """A hook that edits nested fields in place changes what is sent, not the caller's dicts."""

    def mask_tool_arguments(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        function = messages[1]["tool_calls"][0]["function"]
        function["arguments"] = EMAIL.sub("[EMAIL]", function["arguments"])
        return messages

    router, _ = router_with(server, slm, mask_tool_arguments)
    conversation = [
        {"role": "user", "content": "Who is this customer?"},
        _tool_turn("jane.doe@example.com"),
        {"role": "tool", "tool_call_id": "call_1", "content": "a customer"},
    ]
    assert router.route(conversation).decision.escalated
    assert conversation[1] == _tool_turn("jane.doe@example.com")  # untouched, however deep
    [request] = server.requests
    assert request.messages[1]["tool_calls"] == _tool_turn("[EMAIL]")["tool_calls"]


def test_redact_must_be_callable() -> None:
    with pytest.raises(ConfigurationError, match="redact must be a callable"):
        Escalation("openai/primary", redact="mask emails")  # type: ignore[arg-type]


def test_router_passes_redact_to_the_escalation_it_builds(
    server: FaultServer, slm: ScriptedLocalModel
) -> None:
    masker = Masker()
    router = ConfRouter(
        slm,
        "openai/primary",
        api_base=server.base_url,
        api_key="sk-test",
        threshold=0.8,
        redact=masker,
    )
    assert router.escalation is not None and router.escalation.redact is masker
    conversation = [{"role": "user", "content": QUESTION}]
    response = router.route(conversation)
    assert response.text == echo("primary", MASKED)
    assert response.decision.escalated
    [request] = server.requests
    assert request.messages == [{"role": "user", "content": MASKED}]
    assert conversation == [{"role": "user", "content": QUESTION}]
    assert masker.calls == 1


def test_router_refuses_redact_beside_a_built_escalation(slm: ScriptedLocalModel) -> None:
    with pytest.raises(ConfigurationError, match="Pass redact= to the Escalation"):
        ConfRouter(slm, Escalation("openai/primary"), redact=Masker())
