"""The router's seams: score observers, tracers, with_hooks, any EscalationTarget, capabilities."""

from __future__ import annotations

import gc
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest

from confroute import ConfRouter, EscalationError, RoutingDecision
from confroute.errors import ConfigurationError
from confroute.hooks import EscalationCall, ScoredAnswer
from confroute.policies import Verdict
from confroute.target import EscalationTarget, StreamDelta
from tests.fakes import SCRIPTED_CAPABILITIES, ListTarget, ScriptedLocalModel


class RecordingTracer:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    @contextmanager
    def _span(self, name: str) -> Iterator[None]:
        self.events.append(("enter", name, ""))
        try:
            yield
        except BaseException as error:
            self.events.append(("drop", name, type(error).__name__))
            raise
        self.events.append(("exit", name, ""))

    def local_generation(self, conversations: int) -> Any:
        return self._span(f"local:{conversations}")

    def escalation(self, model: str, call: EscalationCall) -> Any:
        return self._span(f"{call}:{model}")


def test_a_custom_target_is_an_escalation_target_and_answers(
    scripted_slm: ScriptedLocalModel,
) -> None:
    target = ListTarget()
    assert isinstance(target, EscalationTarget)
    router = ConfRouter(scripted_slm, target, threshold=0.5)
    response = router.route("unsure?")
    assert (response.text, response.decision.answered_by) == ("strong", "list/strong")
    assert target.calls == ["complete"]


def test_an_observer_can_replace_the_verdict(scripted_slm: ScriptedLocalModel) -> None:
    seen: list[ScoredAnswer] = []

    def escalate_everything(answer: ScoredAnswer) -> Verdict | None:
        seen.append(answer)
        return Verdict(True, answer.verdict.threshold, "low_confidence")

    router = ConfRouter(scripted_slm, ListTarget(), threshold=0.5, observers=[escalate_everything])
    response = router.route("sure?")
    assert seen[0].verdict.reason == "confident" and seen[0].generation is not None
    assert (response.text, response.decision.escalated) == ("strong", True)
    assert response.decision.reason == "low_confidence"


def test_a_raising_observer_is_ignored(scripted_slm: ScriptedLocalModel) -> None:
    def broken(answer: ScoredAnswer) -> Verdict | None:
        raise RuntimeError("observer bug")

    router = ConfRouter(scripted_slm, ListTarget(), threshold=0.5, observers=[broken])
    response = router.route("sure?")
    assert (response.text, response.decision.reason) == ("391", "confident")


def test_tracers_wrap_local_generation_and_each_escalation_call(
    scripted_slm: ScriptedLocalModel,
) -> None:
    tracer = RecordingTracer()
    router = ConfRouter(scripted_slm, ListTarget(), threshold=0.5, tracers=[tracer])
    router.route_batch(["sure?", "unsure?"])
    assert tracer.events == [
        ("enter", "local:2", ""),
        ("exit", "local:2", ""),
        ("enter", "complete:list/strong", ""),
        ("exit", "complete:list/strong", ""),
    ]
    tracer.events.clear()
    assert "".join(c.text for c in router.stream("unsure?")) == "strong"
    assert [e[:2] for e in tracer.events][-2:] == [
        ("enter", "stream:list/strong"),
        ("exit", "stream:list/strong"),
    ]


async def test_async_paths_open_their_own_spans(scripted_slm: ScriptedLocalModel) -> None:
    tracer = RecordingTracer()
    router = ConfRouter(scripted_slm, ListTarget(), threshold=0.5, tracers=[tracer])
    await router.aroute("unsure?")
    chunks = [c async for c in router.astream("unsure?")]
    names = [name for kind, name, _ in tracer.events if kind == "exit"]
    assert names == ["local:1", "acomplete:list/strong", "local:1", "astream:list/strong"]
    assert chunks[-1].response is not None and chunks[-1].response.text == "strong"


def test_with_hooks_copies_and_leaves_the_original_alone(scripted_slm: ScriptedLocalModel) -> None:
    first: list[RoutingDecision] = []
    second: list[RoutingDecision] = []
    router = ConfRouter(scripted_slm, None, threshold=0.5, hooks=[first.append])
    copy = router.with_hooks(hooks=[second.append, first.append])
    copy.route("sure?")
    assert (len(first), len(second)) == (1, 1)  # first.append was not added twice
    router.route("sure?")
    assert (len(first), len(second)) == (2, 1)
    assert copy.local is router.local and copy.policy is router.policy


def test_an_abandoned_stream_still_reports_its_decision(scripted_slm: ScriptedLocalModel) -> None:
    seen: list[RoutingDecision] = []
    tracer = RecordingTracer()
    router = ConfRouter(
        scripted_slm, ListTarget(), threshold=0.5, hooks=[seen.append], tracers=[tracer]
    )
    stream = router.stream("unsure?")
    assert next(stream).text == "str"
    stream.close()
    gc.collect()
    [decision] = seen
    assert decision.escalated and decision.remote_model == "list/strong"
    assert decision.error is not None and "closed by its reader" in decision.error
    assert tracer.events[-1] == ("drop", "stream:list/strong", "GeneratorExit")


def test_a_stream_failing_after_text_reports_once_and_raises(
    scripted_slm: ScriptedLocalModel,
) -> None:
    class Breaks(ListTarget):
        def stream(self, messages: Sequence[Mapping[str, Any]], **_: Any) -> Iterator[StreamDelta]:
            yield StreamDelta(text="par")
            raise EscalationError("cut", provider=self.model, attempts=1, errors=["cut"])

    seen: list[RoutingDecision] = []
    router = ConfRouter(scripted_slm, Breaks(), threshold=0.5, hooks=[seen.append])
    with pytest.raises(EscalationError) as info:
        list(router.stream("unsure?"))
    assert [d.error for d in seen] == ["cut"] and info.value.decision is seen[0]


def test_an_estimator_the_backend_cannot_serve_is_refused(
    scripted_slm: ScriptedLocalModel,
) -> None:
    assert not scripted_slm.capabilities.hidden_state
    with pytest.raises(ConfigurationError, match=r"needs \['hidden_state'\]"):
        ConfRouter(scripted_slm, None, estimator="ood_probe")
    no_samples = ScriptedLocalModel(capabilities=replace(SCRIPTED_CAPABILITIES, samples=False))
    with pytest.raises(ConfigurationError, match=r"needs \['samples'\]"):
        ConfRouter(no_samples, None, estimator="jaccard_degree")


def test_a_policy_without_answer_format_is_refused(scripted_slm: ScriptedLocalModel) -> None:
    class Old:
        def decide(self, confidence: float | None) -> Verdict:
            return Verdict(False, 0.5, "confident")

    with pytest.raises(ConfigurationError, match="must accept answer_format"):
        ConfRouter(scripted_slm, None, policy=Old())  # type: ignore[arg-type]


def test_unknown_setting_is_a_type_error_naming_it(scripted_slm: ScriptedLocalModel) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_retires'"):
        ConfRouter(scripted_slm, None, max_retires=1)
    router = ConfRouter(scripted_slm, None, timeout=7, max_new_tokens=9)
    assert (router.settings.timeout, router.defaults.max_new_tokens) == (7.0, 9)
