"""A local backend that fails (its server is down) still gets every request decided and reported.

The SLM is a :class:`~confroute.server_backend.ServerModel` on a fake LiteLLM (the unit-test hook);
the strong model is the ``scripted/`` provider.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from confroute import ConfRouter
from confroute.decision import RoutingDecision
from confroute.errors import LocalBackendError
from tests.fakes import ScriptedProvider
from tests.unit.test_server_backend import (
    FOUR,
    KEY,
    FakeLiteLLM,
    choice,
    connection_error,
    response,
    server,
)


def test_a_down_slm_server_escalates_and_reports_why(provider: ScriptedProvider) -> None:
    seen: list[RoutingDecision] = []
    router = ConfRouter(server(FakeLiteLLM(connection_error()), max_retries=0), "scripted/strong")
    router = router.with_hooks(hooks=[seen.append])
    response_ = router.route("What is 2+2?")
    assert response_.text == "strong answer"
    [decision] = seen
    assert decision.escalated and decision.reason == "local_failed"
    assert decision.local_backend == "server" and decision.confidence is None
    assert decision.error is not None and "qwen-test" in decision.error
    assert KEY not in decision.model_dump_json()


def test_a_down_slm_server_with_no_strong_model_raises_after_reporting() -> None:
    seen: list[RoutingDecision] = []
    router = ConfRouter(server(FakeLiteLLM(connection_error()), max_retries=0), None)
    with pytest.raises(LocalBackendError, match="no strong model") as raised:
        router.with_hooks(hooks=[seen.append]).route("What is 2+2?")
    assert [d.reason for d in seen] == ["local_failed"]
    assert KEY not in str(raised.value)


def test_every_item_of_a_batch_is_decided_when_the_slm_fails(provider: ScriptedProvider) -> None:
    seen: list[RoutingDecision] = []
    slm = server(FakeLiteLLM(connection_error()), max_retries=0)
    router = ConfRouter(slm, "scripted/strong", hooks=[seen.append])
    answers = asyncio.run(router.aroute_batch(["a?", "b?", "c?"]))
    assert [a.text for a in answers] == ["strong answer"] * 3
    assert [d.reason for d in seen] == ["local_failed"] * 3


def test_a_failed_follow_up_call_gives_no_confidence_never_a_made_up_one(
    provider: ScriptedProvider,
) -> None:
    # the answer arrives; the p_true follow-up call then fails on every try
    calls = {"n": 0}

    def reply(kwargs: dict[str, Any]) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            return response(choice(FOUR))
        raise connection_error()

    seen: list[RoutingDecision] = []
    slm = server(FakeLiteLLM(reply), max_retries=0)
    router = ConfRouter(slm, "scripted/strong", estimator="p_true", hooks=[seen.append])
    assert router.route("What is 2+2?").text == "strong answer"
    [decision] = seen
    assert decision.confidence is None and decision.reason == "no_confidence"
    assert decision.escalated
