"""Property test over a real socket (issue 19, "Done when"): the server answers 200 or 400.

The random conversations, tools and settings of :mod:`tests.unit.test_property_routing` are
posted as OpenAI chat-completion bodies (bytes values and other non-JSON ones left out; NaN and
lone surrogates kept, as ``json.dumps`` writes them) to a local-only server on 127.0.0.1. Each
request gets a JSON answer with status 200 and exactly one new decision, or status 400 with an
OpenAI-shaped error and at most one decision (a local-only prompt that does not fit is decided,
then refused), within a deadline: never a 500, never a hang, never a missing decision.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from confroute import ConfRouter, RoutingDecision
from confroute.serving.server import BackgroundServer
from tests.fakes import ScriptedLocalModel
from tests.unit.test_property_routing import TOOLS, _call_settings, _prompt

PROPERTY = settings(
    max_examples=60,
    deadline=timedelta(seconds=20),
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_SETTING_NAMES = {"max_new_tokens": "max_tokens", "temperature": "temperature", "stop": "stop"}


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[BackgroundServer, list[RoutingDecision]]]:
    seen: list[RoutingDecision] = []
    slm = ScriptedLocalModel(default=("391", (0.99, 0.98, 0.97)))
    with BackgroundServer(ConfRouter(slm, None, hooks=[seen.append])) as running:
        yield running, seen


def _body(prompt: Any, tools: Any, options: dict[str, Any]) -> dict[str, Any]:
    messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    body: dict[str, Any] = {"model": "confroute", "messages": messages}
    for name, value in options.items():
        if value is not None and not isinstance(value, bytes):
            body[_SETTING_NAMES[name]] = list(value) if isinstance(value, tuple) else value
    if tools is not None:
        body["tools"] = tools
    return body


def _post(server: BackgroundServer, payload: bytes) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=15)
    try:
        connection.request(
            "POST", "/v1/chat/completions", payload, {"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@PROPERTY
@given(
    prompt=_prompt,
    tools=st.one_of(st.none(), st.just(TOOLS), st.sampled_from([[], "f", 5, [1]])),
    options=_call_settings,
)
def test_the_server_answers_200_with_one_decision_or_400(
    served: tuple[BackgroundServer, list[RoutingDecision]],
    prompt: Any,
    tools: Any,
    options: dict[str, Any],
) -> None:
    server, seen = served
    try:
        payload = json.dumps(_body(prompt, tools, options)).encode()
    except (TypeError, ValueError):  # a value JSON cannot carry: no request to send
        return
    before = len(seen)
    status, answer = _post(server, payload)
    new = len(seen) - before
    assert status in (200, 400), (status, answer)
    if status == 200:
        assert new == 1 and answer["choices"][0]["message"]["role"] == "assistant"
    else:
        assert new <= 1 and answer["error"]["message"], answer
