"""The routing-policy contract: a confidence (and answer format) in, a :class:`Verdict` out.

Every policy compares a confidence with a threshold through :func:`compare`, so the meaning of
"confident", "low confidence" and "no confidence" is written once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from confroute.decision import DecisionReason

if TYPE_CHECKING:
    from confroute.conversation import Turn

__all__ = [
    "AdmitsVerdicts",
    "CountsForcedEscalations",
    "Decide",
    "FollowsConversations",
    "RoutingPolicy",
    "Verdict",
    "admitted",
    "compare",
    "forced_verdict",
    "turn_verdict",
]


@dataclass(frozen=True)
class Verdict:
    """A policy's answer for one confidence.

    Attributes:
        escalate: Whether to send the request to the strong model.
        threshold: The threshold the confidence was compared with.
        reason: Why (``"confident"``, ``"low_confidence"``, ``"no_confidence"``, or a reason the
            router sets itself, such as ``"context_overflow"``).
    """

    escalate: bool
    threshold: float
    reason: DecisionReason


Decide = Callable[[float | None, str | None], Verdict]
"""A verdict rule: ``(confidence, answer_format) -> Verdict`` (a policy's ``decide``, unbound)."""


@runtime_checkable
class RoutingPolicy(Protocol):
    """Decides from a confidence in [0, 1] (or None, meaning none could be computed)."""

    def decide(self, confidence: float | None, answer_format: str | None = None) -> Verdict:
        """Return whether to escalate, and why.

        Args:
            confidence: The local answer's confidence in [0, 1]; None when none was computed.
            answer_format: The answer format the router recognised in the request
                (``letter``, ``yes_no``, ``number``, ...); policies without per-format
                thresholds ignore it.
        """
        ...


@runtime_checkable
class CountsForcedEscalations(Protocol):
    """A policy that keeps a budget and is told of escalations it was not asked about.

    The router escalates some requests whatever the confidence (a prompt longer than the
    local context window, a failed local backend, a malformed or repeated tool call); a
    budget policy counts them through :meth:`forced` so the spent budget stays true. A policy
    without this method is asked ``decide(None)`` instead, which escalates too.
    """

    def forced(self, answer_format: str | None = None) -> Verdict:
        """Count one request escalated regardless; the verdict carries its threshold."""
        ...


@runtime_checkable
class AdmitsVerdicts(Protocol):
    """A budget policy that holds a verdict decided elsewhere to its budget.

    The router decides a tool-call answer with the tool estimator's own threshold
    (:class:`~confroute.tool_routing.ToolCallRouting`); a policy with this method counts that
    request and refuses its escalation (``reason="budget_exhausted"``) when the budget is
    spent, so a hard cap holds on agent traffic too.
    """

    def admit(self, verdict: Verdict, answer_format: str | None = None) -> Verdict:
        """Count one request decided elsewhere; ``verdict``, or its refusal."""
        ...


@runtime_checkable
class ReportsThreshold(Protocol):
    """A policy whose threshold moves with traffic (a held rate), and says what it is now.

    :class:`~confroute.policies.ConversationPolicy` compares a sticky turn with it, so that a
    turn is reported as below the threshold by the same rule the policy would apply.
    """

    def threshold_for(self, answer_format: str | None = None) -> float:
        """The threshold the next request of ``answer_format`` would be compared with."""
        ...


@runtime_checkable
class FollowsConversations(Protocol):
    """A policy that decides by conversation (see :class:`~confroute.policies.ConversationPolicy`).

    The router hands it each request's :class:`~confroute.conversation.Turn` (its conversation's
    key, and whether it is a tool step of an agent run) beside the confidence.
    """

    def decide_turn(
        self,
        turn: Turn,
        confidence: float | None,
        answer_format: str | None = None,
        decide: Decide | None = None,
    ) -> Verdict:
        """Like :meth:`RoutingPolicy.decide`, for one turn of a known conversation.

        ``decide`` gives the verdict where no conversation rule holds (default: the inner
        policy's); the router passes the tool estimator's rule for an answer that is a call.
        """
        ...

    def forced_turn(self, turn: Turn, answer_format: str | None = None) -> Verdict:
        """Like :func:`forced_verdict`: this turn escalates whatever the confidence."""
        ...


def turn_verdict(
    policy: RoutingPolicy,
    turn: Turn | None,
    confidence: float | None,
    answer_format: str | None,
    decide: Decide | None = None,
) -> Verdict:
    """The policy's verdict on one request: by conversation where the policy follows them.

    ``decide`` replaces ``policy.decide`` where no conversation rule holds (the tool
    estimator's rule for an answer that is a call).
    """
    if turn is not None and isinstance(policy, FollowsConversations):
        return policy.decide_turn(turn, confidence, answer_format, decide)
    if decide is not None:
        return decide(confidence, answer_format)
    return policy.decide(confidence, answer_format=answer_format)


def forced_verdict(
    policy: RoutingPolicy, answer_format: str | None, turn: Turn | None = None
) -> Verdict:
    """The policy's verdict for a request the router escalates whatever the confidence."""
    if turn is not None and isinstance(policy, FollowsConversations):
        return policy.forced_turn(turn, answer_format)
    if isinstance(policy, CountsForcedEscalations):
        return policy.forced(answer_format)
    return policy.decide(None, answer_format=answer_format)


def admitted(policy: RoutingPolicy, verdict: Verdict, answer_format: str | None) -> Verdict:
    """``verdict``, decided outside ``policy``, held to the policy's budget where it keeps one.

    A policy without :meth:`AdmitsVerdicts.admit` that counts forced escalations is told of
    an escalation (counted, never refused); any other policy is left alone.
    """
    if isinstance(policy, AdmitsVerdicts):
        return policy.admit(verdict, answer_format)
    if verdict.escalate and isinstance(policy, CountsForcedEscalations):
        policy.forced(answer_format)
    return verdict


def compare(confidence: float | None, threshold: float) -> Verdict:
    """Compare a confidence with a threshold: escalate when confidence < threshold.

    A threshold of 1.0 (or more) escalates every request, even a confidence of exactly 1.0,
    with reason ``low_confidence``. A missing confidence counts as the lowest: it escalates at
    any threshold above 0, with reason ``no_confidence``.

    Args:
        confidence: The confidence in [0, 1], or None.
        threshold: The threshold in [0, 1].

    Returns:
        The verdict, carrying ``threshold``.
    """
    if threshold >= 1.0:
        return Verdict(True, threshold, "low_confidence")
    if confidence is None:
        return Verdict(threshold > 0.0, threshold, "no_confidence")
    escalate = confidence < threshold
    return Verdict(escalate, threshold, "low_confidence" if escalate else "confident")
