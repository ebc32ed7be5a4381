"""Conversation-aware routing: turn keys, the sticky rules, bounds, threads, and the router."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from confroute import ConfRouter, RoutingDecision
from confroute.conversation import DERIVED_PREFIX, check_conversation_id, turn_of
from confroute.errors import ConfigurationError
from confroute.policies import (
    ConversationPolicy,
    EscalationCap,
    FixedThreshold,
    OnlineBudget,
    ReportsThreshold,
    Verdict,
    compare,
    held_rate,
)
from confroute.scoring import Pipeline
from tests.fakes import ScriptedLocalModel, ScriptedProvider, two_format_profile

SYSTEM = {"role": "system", "content": "Be brief."}
CALL = {
    "role": "assistant",
    "content": "",
    "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{}"}}
    ],
}
RESULT = {"role": "tool", "content": "5", "tool_call_id": "c1"}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def said(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


class CountingPolicy:
    """A fixed threshold that records how it was asked (decide or forced)."""

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold
        self.asked: list[str] = []

    def decide(self, confidence: float | None, answer_format: str | None = None) -> Verdict:
        self.asked.append("decide")
        return compare(confidence, self.threshold)

    def forced(self, answer_format: str | None = None) -> Verdict:
        self.asked.append("forced")
        return Verdict(True, self.threshold, "low_confidence")


# -- turn keys ---------------------------------------------------------------------------------


def test_follow_ups_share_the_key_derived_from_the_opening() -> None:
    first = turn_of([SYSTEM, user("q1")])
    second = turn_of([SYSTEM, user("q1"), said("a1"), user("q2")])
    other = turn_of([user("q1")])
    assert first.key == second.key and first.key.startswith(DERIVED_PREFIX)
    assert other.key != first.key  # the system message is part of the opening
    assert first.starts and not second.starts
    assert not first.tool_step and not second.tool_step


def test_tool_steps_are_recognised_after_the_last_user_message() -> None:
    assert turn_of([user("q"), CALL, RESULT]).tool_step
    assert turn_of([user("q"), CALL]).tool_step
    assert not turn_of([user("q"), CALL, RESULT, said("5"), user("again")]).tool_step
    step = turn_of([user("q"), CALL, RESULT])
    assert not step.starts  # an agent run continues its conversation


def test_a_caller_id_is_the_key_and_never_starts_over() -> None:
    turn = turn_of([user("q1")], "thread-7")
    assert turn.key == "thread-7" and not turn.starts


@pytest.mark.parametrize("bad", [3, "", "   ", "x" * 257])
def test_bad_conversation_ids_are_refused(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="conversation_id"):
        check_conversation_id(bad)


# -- the sticky rules ------------------------------------------------------------------------


def test_escalation_holds_for_k_turns_then_the_inner_policy_decides() -> None:
    policy = ConversationPolicy(FixedThreshold(0.5), turns=2, release_confidence=None)
    turn = turn_of([user("q")], "c")
    reasons = [policy.decide_turn(turn, c).reason for c in (0.2, 0.7, 0.7, 0.7)]
    assert reasons == ["low_confidence", "sticky", "sticky", "confident"]
    assert policy.turns_left("c") == 0


def test_a_cap_inside_refuses_sticky_turns_once_its_window_is_spent() -> None:
    cap = EscalationCap(FixedThreshold(0.5), max_escalation_rate=0.5, window=4)
    policy = ConversationPolicy(cap, turns=3, release_confidence=None)
    turn = turn_of([user("q")], "c")
    verdicts = [policy.decide_turn(turn, c) for c in (0.2, 0.7, 0.7, 0.7)]
    assert [v.reason for v in verdicts] == [
        "low_confidence",
        "sticky",
        "budget_exhausted",
        "budget_exhausted",
    ]
    assert [v.escalate for v in verdicts] == [True, True, False, False]
    assert cap.cap.state() == [1, 0, 0]  # 2 of 4 allowed; the refused turns counted as kept


def test_a_confident_turn_clears_the_release_bar() -> None:
    policy = ConversationPolicy(FixedThreshold(0.5), turns=3, release_confidence=0.9)
    turn = turn_of([user("q")], "c")
    assert policy.decide_turn(turn, 0.1).escalate
    assert policy.decide_turn(turn, 0.89).reason == "sticky"
    released = policy.decide_turn(turn, 0.95)
    assert not released.escalate and released.reason == "confident"
    assert policy.decide_turn(turn, 0.7).reason == "confident"  # no longer sticky


def test_a_turn_the_inner_policy_escalates_anyway_keeps_its_reason_and_renews() -> None:
    policy = ConversationPolicy(FixedThreshold(0.5), turns=1, release_confidence=None)
    turn = turn_of([user("q")], "c")
    policy.decide_turn(turn, 0.1)
    again = policy.decide_turn(turn, 0.2)
    assert again.escalate and again.reason == "low_confidence"
    assert policy.turns_left("c") == 1
    assert policy.decide_turn(turn, 0.7).reason == "sticky"
    assert policy.decide_turn(turn, 0.7).reason == "confident"


def test_tool_steps_of_an_escalated_run_stay_escalated_whatever_the_confidence() -> None:
    policy = ConversationPolicy(FixedThreshold(0.5), turns=0, release_confidence=0.9)
    start = turn_of([user("q")], "c")
    step = turn_of([user("q"), CALL, RESULT], "c")
    assert policy.decide_turn(start, 0.1).escalate
    sticky = policy.decide_turn(step, 0.99)
    assert sticky.escalate and sticky.reason == "sticky"
    # a new user turn with turns=0 is decided alone again
    assert not policy.decide_turn(turn_of([user("q2")], "c"), 0.99).escalate


def test_a_local_run_escalates_mid_run_and_stays_there() -> None:
    policy = ConversationPolicy(FixedThreshold(0.5), turns=0)
    step = turn_of([user("q"), CALL, RESULT], "c")
    assert not policy.decide_turn(turn_of([user("q")], "c"), 0.9).escalate
    assert policy.decide_turn(step, 0.1).reason == "low_confidence"
    assert policy.decide_turn(step, 0.9).reason == "sticky"


def test_independent_tool_steps_are_decided_alone() -> None:
    policy = ConversationPolicy(FixedThreshold(0.5), turns=0, tool_steps="independent")
    policy.decide_turn(turn_of([user("q")], "c"), 0.1)
    step = policy.decide_turn(turn_of([user("q"), CALL, RESULT], "c"), 0.9)
    assert not step.escalate and step.reason == "confident"


def test_a_new_conversation_with_a_derived_key_starts_fresh() -> None:
    policy = ConversationPolicy(FixedThreshold(0.5), turns=3, release_confidence=None)
    opening = [user("same question")]
    policy.decide_turn(turn_of(opening), 0.1)
    follow_up = turn_of([*opening, said("a"), user("next")])
    assert policy.decide_turn(follow_up, 0.9).reason == "sticky"
    # another user opening with the same words is a new conversation, not a follow-up
    assert policy.decide_turn(turn_of(opening), 0.9).reason == "confident"


def test_forced_escalations_start_the_count_and_are_counted_by_the_inner_policy() -> None:
    inner = CountingPolicy()
    policy = ConversationPolicy(inner, turns=1, release_confidence=None)
    turn = turn_of([user("q")], "c")
    assert policy.forced_turn(turn).escalate
    assert policy.decide_turn(turn, 0.9).reason == "sticky"
    assert policy.decide_turn(turn, 0.9).reason == "confident"
    assert inner.asked == ["forced", "forced", "decide"]


def test_a_budget_policy_counts_sticky_turns_as_escalations() -> None:
    budget = OnlineBudget(0.5, step=0.1)
    policy = ConversationPolicy(budget, turns=2, release_confidence=None)
    turn = turn_of([user("q")], "c")
    budget.threshold = 0.5
    policy.decide_turn(turn, 0.1)  # escalates: threshold moves down by 0.05
    policy.decide_turn(turn, 0.9)  # sticky: counted as an escalation, moves down again
    assert budget.threshold == pytest.approx(0.4)
    assert budget.recent_rate() == 1.0


def test_a_cap_counts_sticky_escalations() -> None:
    cap = EscalationCap(FixedThreshold(0.5), max_escalation_rate=0.5, window=4)
    policy = ConversationPolicy(cap, turns=1, release_confidence=None)
    turn = turn_of([user("q")], "c")
    policy.decide_turn(turn, 0.1)
    assert policy.decide_turn(turn, 0.9).reason == "sticky"
    # two escalations in the window already: the cap refuses a third
    assert policy.decide_turn(turn_of([user("x")], "d"), 0.1).reason == "budget_exhausted"


def test_a_sticky_turn_over_a_held_rate_reports_its_threshold_for_the_format() -> None:
    inner = held_rate(0.3, two_format_profile(200))
    assert isinstance(inner, ReportsThreshold)
    policy = ConversationPolicy(inner, turns=2, release_confidence=None)
    turn = turn_of([user("q")], "c")
    assert policy.decide_turn(turn, 0.01, "yes_no").escalate
    expected = inner.threshold_for("yes_no")
    assert expected != pytest.approx(inner.threshold_for("letter"))
    sticky = policy.decide_turn(turn, 0.99, "yes_no")
    assert sticky.reason == "sticky" and sticky.threshold == pytest.approx(expected)


def test_memory_is_bounded_by_count_and_age() -> None:
    now = [0.0]
    policy = ConversationPolicy(
        FixedThreshold(0.5), turns=5, max_conversations=2, ttl_s=10.0, clock=lambda: now[0]
    )
    for key in ("a", "b", "c"):
        policy.decide_turn(turn_of([user("q")], key), 0.1)
    assert policy.remembered() == 2 and policy.turns_left("a") == 0 and policy.turns_left("c") == 5
    now[0] = 11.0
    policy.decide_turn(turn_of([user("q")], "d"), 0.9)
    assert policy.remembered() == 1 and policy.turns_left("c") == 0


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="turns"):
        ConversationPolicy(FixedThreshold(0.5), turns=-1)
    with pytest.raises(ConfigurationError, match="release_confidence"):
        ConversationPolicy(FixedThreshold(0.5), release_confidence=1.5)
    with pytest.raises(ConfigurationError, match="tool_steps"):
        ConversationPolicy(FixedThreshold(0.5), tool_steps="sometimes")  # type: ignore[arg-type]


def test_concurrent_conversations_keep_their_own_counts() -> None:
    policy = ConversationPolicy(FixedThreshold(0.5), turns=3, release_confidence=None)
    reasons: dict[str, list[str]] = {}

    def talk(key: str) -> None:
        turn = turn_of([user("q")], key)
        reasons[key] = [policy.decide_turn(turn, c).reason for c in (0.1, 0.9, 0.9, 0.9, 0.9)]

    threads = [threading.Thread(target=talk, args=(f"k{i}",)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = ["low_confidence", "sticky", "sticky", "sticky", "confident"]
    assert all(r == expected for r in reasons.values()) and len(reasons) == 16


# -- through the router ----------------------------------------------------------------------


def sticky_router(slm: ScriptedLocalModel, **changes: Any) -> tuple[ConfRouter, list[Any]]:
    seen: list[RoutingDecision] = []
    options: dict[str, Any] = {"threshold": 0.5, "max_retries": 0, "sticky_turns": 2}
    options["sticky_release_confidence"] = 0.99  # "sure?" scores 0.98: not released
    options.update(changes)
    router = ConfRouter(slm, "scripted/strong", hooks=[seen.append], **options)
    return router, seen


def test_the_router_reports_sticky_turns_by_conversation_id(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    router, seen = sticky_router(scripted_slm)
    assert isinstance(router.policy, ConversationPolicy)
    router.route("unsure?", conversation_id="t1")
    sticky = router.route("sure?", conversation_id="t1")
    alone = router.route("sure?", conversation_id="t2")
    assert sticky.decision.escalated and sticky.decision.reason == "sticky"
    assert sticky.text == "strong answer" and sticky.decision.answered_by == "scripted/strong"
    assert not alone.decision.escalated and alone.decision.reason == "confident"
    assert [d.reason for d in seen] == ["low_confidence", "sticky", "confident"]


def test_the_router_follows_a_resent_history_without_an_id(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    router, _ = sticky_router(scripted_slm)
    router.route([user("unsure?")])
    follow_up = [user("unsure?"), said("strong answer"), user("sure?")]
    [chunk] = [c for c in router.stream(follow_up) if c.response is not None]
    assert chunk.response is not None and chunk.response.decision.reason == "sticky"


async def test_aroute_counts_turns_and_a_score_is_no_turn(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    router, _ = sticky_router(scripted_slm, sticky_release_confidence=None)
    policy = router.policy
    assert isinstance(policy, ConversationPolicy)
    await router.aroute("unsure?", conversation_id="t")
    assert policy.turns_left("t") == 2
    scoring = Pipeline(scripted_slm, router.estimators, policy, follows_conversations=False)
    assert scoring.turn([user("sure?")]) is None  # what ConfRouter.score builds
    response = await router.aroute("sure?", conversation_id="t")
    assert response.decision.reason == "sticky" and policy.turns_left("t") == 1


def test_sticky_turns_off_by_default_and_no_double_wrapping(
    scripted_slm: ScriptedLocalModel,
) -> None:
    plain = ConfRouter(scripted_slm, None, threshold=0.5)
    assert not isinstance(plain.policy, ConversationPolicy)
    with pytest.raises(ConfigurationError, match="ConversationPolicy already"):
        ConfRouter(
            scripted_slm,
            None,
            policy=ConversationPolicy(FixedThreshold(0.5)),
            sticky_turns=2,
        )
    with pytest.raises(ConfigurationError, match="sticky_turns"):
        ConfRouter(scripted_slm, None, threshold=0.5, sticky_turns=-1)
    with pytest.raises(ConfigurationError, match="conversation_id"):
        plain.route("sure?", conversation_id="")


def test_the_server_keys_conversations_by_header_or_user_field(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    import openai

    from confroute.serving import BackgroundServer

    router, _ = sticky_router(scripted_slm)
    with BackgroundServer(router) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)

        def reason(question: str, **extra: Any) -> str:
            raw = client.chat.completions.with_raw_response.create(
                model="confroute", messages=[user(question)], **extra
            )
            return raw.headers["x-confroute-reason"]

        header = {"extra_headers": {"X-Conversation-Id": "h1"}}
        assert reason("unsure?", **header) == "low_confidence"
        assert reason("sure?", **header) == "sticky"
        assert reason("unsure?", user="u1") == "low_confidence"
        assert reason("sure?", user="u1") == "sticky"
        assert reason("sure?", user="u2") == "confident"
        with pytest.raises(openai.BadRequestError, match="conversation_id"):
            reason("sure?", user="")
