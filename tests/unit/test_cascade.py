"""Cascades of more than two models (confroute.cascade), with scripted tiers and a fake host."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pytest

from confroute import ConfRouter, EscalationError, RoutingDecision
from confroute.cascade import Cascade, Tier, is_scored
from confroute.errors import ConfigurationError, LocalBackendError
from confroute.target import EscalationResult
from tests.fakes import ListTarget, ScriptedLocalModel

SURE = (0.99, 0.98, 0.97)
UNSURE = (0.2, 0.3, 0.4)


class FakeHost(ListTarget):
    """A hosted last tier: fixed pieces, optional failure, records its calls."""

    model = "fake/host"

    def __init__(self, pieces: Sequence[str] = ("hos", "ted"), fail: bool = False) -> None:
        self.pieces = list(pieces)
        self.fail = fail
        self.calls: list[str] = []

    def _result(self) -> EscalationResult:
        if self.fail:
            raise EscalationError("fake/host: down", provider=self.model, attempts=1, errors=["x"])
        return EscalationResult(
            text="".join(self.pieces),
            model=self.model,
            prompt_tokens=11,
            completion_tokens=2,
            cost_usd=0.5,
            latency_s=0.25,
            attempts=1,
        )


class DownModel(ScriptedLocalModel):
    """A scored tier whose server is down."""

    def generate_from_ids(self, prompts: Any, config: Any) -> Any:
        raise LocalBackendError(
            "middle: connection refused", model=self.name, attempts=1, errors=[]
        )


def first() -> ScriptedLocalModel:
    return ScriptedLocalModel(
        script={"easy?": ("4", SURE), "mid?": ("a guess", UNSURE), "hard?": ("no idea", UNSURE)},
        name="tier-a",
        fingerprint="a-sha",
    )


def middle(name: str = "tier-b") -> ScriptedLocalModel:
    return ScriptedLocalModel(
        script={"mid?": ("middle answer", SURE), "hard?": ("still unsure", UNSURE)},
        name=name,
        fingerprint=f"{name}-sha",
    )


def router(*tiers: Any, **changes: Any) -> ConfRouter:
    return ConfRouter(first(), list(tiers), threshold=0.7, **changes)


def test_each_tier_answers_what_it_is_sure_of() -> None:
    host = FakeHost()
    routed = router(middle(), host)
    assert isinstance(routed.escalation, Cascade)
    easy, mid, hard = routed.route_batch(["easy?", "mid?", "hard?"])

    assert easy.text == "4" and not easy.decision.escalated and easy.decision.tiers == []
    assert mid.text == "middle answer" and mid.decision.answered_by == "tier-b"
    assert [t.model for t in mid.decision.tiers] == ["tier-a", "tier-b"]
    assert [t.escalated for t in mid.decision.tiers] == [True, False]
    assert mid.decision.tiers[1].confidence is not None and mid.decision.tiers[1].confidence > 0.7
    assert mid.decision.cost_usd == 0.0
    assert hard.text == "hosted" and hard.decision.answered_by == "fake/host"
    assert [t.model for t in hard.decision.tiers] == ["tier-a", "tier-b", "fake/host"]
    assert [t.escalated for t in hard.decision.tiers] == [True, True, False]
    assert hard.decision.tiers[2].backend == "litellm"
    assert hard.decision.tiers[2].confidence is None
    assert hard.decision.tiers[2].cost_usd == 0.5 and hard.decision.cost_usd == 0.5
    assert hard.decision.tiers[1].completion_tokens == 3
    assert host.calls == ["complete"]


def test_tiers_serialise_in_to_dict_without_secrets() -> None:
    routed = router(middle(), FakeHost(), api_key="sk-cascade-secret-123")
    decision = routed.route("hard?").decision
    data = decision.model_dump(mode="json")
    assert [t["model"] for t in data["tiers"]] == ["tier-a", "tier-b", "fake/host"]
    assert set(data["tiers"][0]) >= {"confidence", "escalated", "latency_s", "cost_usd", "error"}
    assert "sk-cascade-secret-123" not in json.dumps(data)
    assert "sk-cascade-secret-123" not in repr(routed)
    assert RoutingDecision.model_validate(data).tiers == decision.tiers


def test_failed_middle_tier_goes_on_and_is_reported() -> None:
    host = FakeHost()
    response = router(DownModel(name="down"), host).route("mid?")
    assert response.text == "hosted"
    down = response.decision.tiers[1]
    assert down.model == "down" and down.escalated and "connection refused" in (down.error or "")
    assert response.decision.tiers[-1].model == "fake/host"


def test_failed_last_tier_falls_back_to_the_local_answer_with_every_tier() -> None:
    seen: list[RoutingDecision] = []
    response = router(middle(), FakeHost(fail=True), hooks=[seen.append]).route("hard?")
    assert response.text == "no idea"  # on_escalation_error="return_local"
    assert response.decision.error and "down" in response.decision.error
    assert [t.model for t in response.decision.tiers] == ["tier-a", "tier-b", "fake/host"]
    assert response.decision.tiers[-1].error is not None
    assert seen == [response.decision]


def test_failed_last_tier_raises_when_asked_to() -> None:
    routed = router(middle(), FakeHost(fail=True), on_escalation_error="raise")
    with pytest.raises(EscalationError) as raised:
        routed.route("hard?")
    assert [t.model for t in raised.value.decision.tiers] == ["tier-a", "tier-b", "fake/host"]


def test_a_scored_last_tier_answers_whatever_its_confidence() -> None:
    response = router(middle()).route("hard?")
    assert response.text == "still unsure" and response.decision.answered_by == "tier-b"
    last = response.decision.tiers[-1]
    assert not last.escalated and last.reason == "local_only" and last.confidence is not None


def test_tier_with_its_own_threshold() -> None:
    lenient = Tier(middle(), threshold=0.1)
    response = router(lenient, FakeHost()).route("hard?")
    assert response.decision.answered_by == "tier-b"
    assert response.decision.tiers[1].threshold == 0.1


def test_stream_holds_middle_tiers_and_streams_the_last() -> None:
    host = FakeHost()
    routed = router(middle(), host)
    kept = list(routed.stream("mid?"))
    assert [c.text for c in kept if c.text] == ["middle answer"]
    assert kept[-1].response is not None and kept[-1].response.decision.answered_by == "tier-b"
    streamed = list(routed.stream("hard?"))
    assert [c.text for c in streamed if c.text] == ["hos", "ted"]
    final = streamed[-1].response
    assert final is not None and [t.model for t in final.decision.tiers][-1] == "fake/host"
    assert host.calls == ["stream"]


def test_async_paths() -> None:
    host = FakeHost()
    routed = router(middle(), host)

    async def go() -> tuple[Any, Any, list[Any]]:
        one = await routed.aroute("hard?")
        batch = await routed.aroute_batch(["mid?", "easy?"])
        chunks = [c async for c in routed.astream("hard?")]
        return one, batch, chunks

    one, (mid, easy), chunks = asyncio.run(go())
    assert one.decision.answered_by == "fake/host" and len(one.decision.tiers) == 3
    assert mid.decision.answered_by == "tier-b" and easy.decision.tiers == []
    assert "".join(c.text for c in chunks) == "hosted"
    assert host.calls == ["acomplete", "astream"]


def test_bad_lists_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="names no tier"):
        router()
    with pytest.raises(ConfigurationError, match="hosted"):
        router(FakeHost(), middle())
    with pytest.raises(ConfigurationError, match="more than once"):
        router(middle("tier-a"), FakeHost())
    with pytest.raises(ConfigurationError, match="more than once"):
        router(middle(), middle(), FakeHost())
    with pytest.raises(ConfigurationError, match="cannot compute"):
        router(Tier(middle(), estimator="trained_probe"), FakeHost())


def test_which_entries_are_scored(tmp_path: Any) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"")
    assert is_scored("qwen2.5-coder-1.5b-instruct") and is_scored("server:openai/slm")
    assert is_scored(str(gguf)) and is_scored(middle()) and is_scored(Tier("x"))
    assert not is_scored("openai/gpt-4o-mini") and not is_scored(FakeHost())
