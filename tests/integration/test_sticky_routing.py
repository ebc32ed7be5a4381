"""Sticky routing with the real bundled SmolLM2 as the local model (and, in process, as target).

The in-process SmolLM2 stands in for the strong model so the test stays fast; what is checked
is that a real conversation's follow-up turns stay on the model that took the escalation, and
which rule every decision reports.
"""

from __future__ import annotations

import pytest

from confroute import ConfRouter, LocalModel, RoutingDecision
from confroute.policies import ConversationPolicy, FixedThreshold

SLM = "smollm2-135m-instruct"
STRONG = f"confroute/{SLM}"


@pytest.fixture(scope="session")
def smollm() -> LocalModel:
    return LocalModel(SLM)


def test_a_real_conversation_stays_on_the_strong_model_then_returns(smollm: LocalModel) -> None:
    seen: list[RoutingDecision] = []
    policy = ConversationPolicy(FixedThreshold(1.0), turns=1, release_confidence=None)
    router = ConfRouter(smollm, STRONG, policy=policy, max_new_tokens=12, hooks=[seen.append])
    history = [{"role": "user", "content": "Name a primary colour."}]
    first = router.route(history)
    assert first.decision.reason == "low_confidence" and first.decision.answered_by == STRONG
    policy.inner = FixedThreshold(0.0)  # from now on the threshold alone keeps every answer
    history += [
        {"role": "assistant", "content": first.text},
        {"role": "user", "content": "Name another one."},
    ]
    second = router.route(history)  # no id: keyed by the conversation's opening
    assert second.decision.escalated and second.decision.reason == "sticky"
    assert second.decision.answered_by == STRONG and second.text.strip()
    assert second.decision.confidence is not None  # the local answer was still scored
    history += [
        {"role": "assistant", "content": second.text},
        {"role": "user", "content": "And a third?"},
    ]
    third = router.route(history)
    assert not third.decision.escalated and third.decision.reason == "confident"
    assert [d.reason for d in seen] == ["low_confidence", "sticky", "confident"]
