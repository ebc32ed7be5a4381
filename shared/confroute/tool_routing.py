"""Tool-call answers are decided by the tool estimator, against the tool estimator's threshold.

An answer that is a well-formed call to an offered tool is structured output: its overall
token probability says little about whether the call is right (BFCL, bundled 0.5B: perplexity
AUROC 0.60 against 0.82 for ``tool_call``, BENCHMARKS.md). So the router scores such an answer
with a second estimator, on the same generation (no extra model call), and compares that
confidence with the tool estimator's own threshold (``RouterSettings.tool_threshold``): the
two estimators' confidences are on different scales, so one threshold cannot serve both.
Plain-text answers keep the primary estimator and the router's policy.

Budget policies hold these decisions to their budget (:func:`~confroute.policies.admitted`): a
hard cap (``max_escalation_rate``) or a held rate counts each call answer and refuses its
escalation when the budget is spent (``reason="budget_exhausted"``); a malformed call is still
escalated regardless (counted, never refused: its answer is unusable).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from confroute.estimators import Estimator
from confroute.policies import RoutingPolicy, Verdict, admitted, compare

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
        """Compare ``confidence`` with :attr:`threshold`; a budget ``policy`` holds it to budget.

        Args:
            confidence: The tool estimator's confidence in the call (None: the lowest).
            policy: The router's policy; one that keeps a budget counts the request and may
                refuse its escalation (:func:`~confroute.policies.admitted`).
            answer_format: The request's answer format key (passed to the budget policy).

        Returns:
            The verdict, carrying :attr:`threshold` (reason ``budget_exhausted`` if refused).
        """
        return admitted(policy, compare(confidence, self.threshold), answer_format)

    def decider(self, policy: RoutingPolicy) -> Callable[[float | None, str | None], Verdict]:
        """:meth:`decide` bound to ``policy``.

        A conversation policy asks it where no sticky rule holds for the turn (a sticky rule
        escalates a call whatever its confidence).
        """
        return lambda confidence, answer_format: self.decide(confidence, policy, answer_format)
