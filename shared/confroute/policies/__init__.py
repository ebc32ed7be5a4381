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
  confidences, warm-started from the profile.
"""

from __future__ import annotations

from confroute.bounds import check_unit_interval
from confroute.policies.base import RoutingPolicy, Verdict, compare
from confroute.policies.budget import OnlineBudget, ks_statistic
from confroute.policies.fixed import FixedThreshold
from confroute.policies.risk import RiskControlledThreshold, clopper_pearson_upper
from confroute.policies.streaming import StreamingQuantile
from confroute.policies.target_rate import TargetEscalationRate

__all__ = [
    "FixedThreshold",
    "OnlineBudget",
    "RiskControlledThreshold",
    "RoutingPolicy",
    "StreamingQuantile",
    "TargetEscalationRate",
    "Verdict",
    "check_unit_interval",
    "clopper_pearson_upper",
    "compare",
    "ks_statistic",
]
