"""Tool-call answers are decided by the tool estimator, against the tool estimator's threshold.

An answer that is a well-formed call to an offered tool is structured output: its overall
token probability says little about whether the call is right (BFCL, bundled 0.5B: perplexity
AUROC 0.60 against 0.82 for ``tool_call``, BENCHMARKS.md). So the router scores such an answer
with a second estimator, on the same generation (no extra model call), and compares that
confidence with the tool estimator's own threshold (``RouterSettings.tool_threshold``): the
two estimators' confidences are on different scales, so one threshold cannot serve both.
Plain-text answers keep the primary estimator and the router's policy.

Budget policies still pay for these escalations: an escalated call is counted through
:func:`~confroute.policies.forced_verdict`, as a malformed call is (counted, never refused).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from confroute.estimators import Estimator
from confroute.policies import CountsForcedEscalations, RoutingPolicy, Verdict, compare

__all__ = ["ToolCallRouting"]


@dataclass(frozen=True)
class ToolCallRouting:
    """How the router decides an answer that is a well-formed tool call.

    Attributes:
        estimator: The estimator whose confidence decides call answers.
        threshold: Escalate a call whose confidence is below it.
    """

    estimator: Estimator
    threshold: float

    def decide(
        self, confidence: float | None, policy: RoutingPolicy, answer_format: str | None = None
    ) -> Verdict:
        """Compare ``confidence`` with :attr:`threshold`; a budget ``policy`` counts an escalation.

        Args:
            confidence: The tool estimator's confidence in the call (None: the lowest).
            policy: The router's policy; one that keeps a budget
                (:class:`~confroute.policies.CountsForcedEscalations`) is told of an
                escalation, so the spent budget stays true.
            answer_format: The request's answer format key (passed to the budget policy).

        Returns:
            The verdict, carrying :attr:`threshold`.
        """
        verdict = compare(confidence, self.threshold)
        if verdict.escalate and isinstance(policy, CountsForcedEscalations):
            policy.forced(answer_format)
        return verdict

    def decider(self, policy: RoutingPolicy) -> Callable[[float | None, str | None], Verdict]:
        """:meth:`decide` bound to ``policy``.

        A conversation policy asks it where no sticky rule holds for the turn (a sticky rule
        escalates a call whatever its confidence).
        """
        return lambda confidence, answer_format: self.decide(confidence, policy, answer_format)
