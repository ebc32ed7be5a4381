"""Routing policies: turn a confidence into keep-or-escalate. Thresholds live here only.

Every policy satisfies :class:`RoutingPolicy` (``decide(confidence, answer_format=None)``) and
compares through :func:`compare`.

- :class:`FixedThreshold`: escalate when confidence < threshold.
- :class:`TargetEscalationRate`: "escalate 30%", with the threshold read from a calibration
  profile (per answer format if asked).
- :class:`RiskControlledThreshold`: the most coverage whose SLM error among kept answers stays
  <= alpha with probability >= 1 - delta (needs labels).
- :class:`OnlineBudget`: holds a target rate on live traffic with a streaming quantile update,
  and reports drift from the calibration distribution (:func:`ks_statistic`).
- :class:`StreamingQuantile`: holds a target rate with the running quantile of live
  confidences, warm-started from the profile; :func:`held_rate` builds it as
  ``ConfRouter(escalation_rate=r)`` does (budget feedback and a window band: the rate holds
  on shifting traffic).
- :class:`EscalationCap`: a hard ceiling on any policy's escalations per window
  (``reason="budget_exhausted"``).
- :class:`ConversationPolicy`: keeps an escalated conversation (or agent run) on the strong
  model for the next turns (``reason="sticky"``).
"""

from __future__ import annotations

from confroute.bounds import check_unit_interval
from confroute.policies.base import (
    AdmitsVerdicts,
    CountsForcedEscalations,
    FollowsConversations,
    ReportsThreshold,
    RoutingPolicy,
    Verdict,
    admitted,
    compare,
    forced_verdict,
    turn_verdict,
)
from confroute.policies.budget import OnlineBudget, ks_statistic
from confroute.policies.cap import EscalationCap, SlidingCap, check_cap
from confroute.policies.conversation import ConversationPolicy, ToolSteps
from confroute.policies.fixed import FixedThreshold
from confroute.policies.risk import RiskControlledThreshold, clopper_pearson_upper
from confroute.policies.streaming import HELD_RATE, StreamingQuantile, held_rate
from confroute.policies.target_rate import TargetEscalationRate

__all__ = [
    "HELD_RATE",
    "AdmitsVerdicts",
    "ConversationPolicy",
    "CountsForcedEscalations",
    "EscalationCap",
    "FixedThreshold",
    "FollowsConversations",
    "OnlineBudget",
    "ReportsThreshold",
    "RiskControlledThreshold",
    "RoutingPolicy",
    "SlidingCap",
    "StreamingQuantile",
    "TargetEscalationRate",
    "ToolSteps",
    "Verdict",
    "admitted",
    "check_cap",
    "check_unit_interval",
    "clopper_pearson_upper",
    "compare",
    "forced_verdict",
    "held_rate",
    "ks_statistic",
    "turn_verdict",
]
