"""The record of one routing decision, reported for every request, escalated or not."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DecisionReason", "RoutingDecision", "TierAttempt"]

DecisionReason = Literal[
    "confident",
    "low_confidence",
    "no_confidence",
    "context_overflow",
    "malformed_tool_call",
    "repeated_tool_call",
    "local_only",
    "local_failed",
    "budget_exhausted",
    "sticky",
]
"""Why a request was kept local or escalated."""


def _new_id() -> str:
    return uuid.uuid4().hex


def _now() -> datetime:
    return datetime.now(timezone.utc)


class TierAttempt(BaseModel):
    """One tier of a cascade tried for a request (see :mod:`confroute.cascade`).

    A scored tier (a local or log-prob backend) has a confidence, the threshold its policy
    compared it with, and ``escalated`` when it handed the request on; the hosted last tier
    has no confidence. A tier that failed has ``error`` set (secrets redacted) and the next
    tier was tried.
    """

    model_config = ConfigDict(frozen=True)

    model: str
    """Name of the tier's model."""
    backend: str
    """The engine (``"transformers"``, ``"llama.cpp"``, ``"server"``) or ``"litellm"``."""
    confidence: float | None = None
    """The tier's confidence in its answer; None for a hosted tier or when not computed."""
    threshold: float | None = None
    """The threshold the tier's policy compared the confidence with (scored tiers)."""
    escalated: bool = False
    """Whether the tier handed the request on to the next tier."""
    reason: str | None = None
    """Why a scored tier kept or passed on the request (a :data:`DecisionReason`)."""
    latency_s: float = 0.0
    """Wall time of the tier's answer (and its scoring)."""
    cost_usd: float | None = 0.0
    """Cost of the tier's answer (0 for local models, None when unknown)."""
    prompt_tokens: int | None = None
    """Prompt tokens the tier read (billed ones for a hosted tier), when known."""
    completion_tokens: int | None = None
    """Tokens the tier wrote, when known."""
    error: str | None = None
    """Why the tier gave no answer, when it failed."""


class RoutingDecision(BaseModel):
    """What the router decided for one request and what it cost. It never holds a secret.

    ``escalated`` says whether escalation was attempted; ``answered_by`` names the model whose
    answer was returned (the local model when escalation failed and the local answer was
    returned instead, with ``error`` set).
    """

    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=_new_id)
    """Unique id of the decision."""
    created_at: datetime = Field(default_factory=_now)
    """When the request arrived (UTC)."""
    estimator: str
    """Name of the estimator whose confidence decided: the primary one, or the tool estimator
    (``RouterSettings.tool_estimator``) when the local answer was a well-formed tool call."""
    confidence: float | None
    """Confidence of the local answer in [0, 1] by :attr:`estimator`; None when it could not
    be computed."""
    threshold: float
    """The threshold the confidence was compared with."""
    escalated: bool
    """Whether the request was sent to the strong model."""
    reason: DecisionReason
    """Why it was (or was not) escalated."""
    local_model: str
    """Name of the local model."""
    local_backend: str = "transformers"
    """The engine that ran the local model (``"transformers"``, ``"llama.cpp"``, ``"server"``)."""
    remote_model: str | None = None
    """The LiteLLM model string that answered (or was tried last), when escalated."""
    answered_by: str
    """Name of the model whose answer was returned."""
    local_latency_s: float = 0.0
    """Wall time of local generation and confidence estimation."""
    remote_latency_s: float | None = None
    """Wall time of the escalation, retries included."""
    local_prompt_tokens: int = 0
    """Prompt tokens seen by the local model."""
    local_completion_tokens: int = 0
    """Tokens the local model wrote."""
    remote_prompt_tokens: int | None = None
    """Prompt tokens billed by the strong model."""
    remote_completion_tokens: int | None = None
    """Completion tokens billed by the strong model."""
    cost_usd: float | None = None
    """Cost of the escalation from LiteLLM's cost map (0 for local models, None if unknown)."""
    attempts: int = 0
    """Calls made to strong models, retries and fallbacks included."""
    error: str | None = None
    """What went wrong: the escalation's failure, or the local backend's (``local_failed``)."""
    confidences: dict[str, float | None] = Field(default_factory=dict)
    """Every computed estimator's confidence (the primary one, any extra ones, and the tool
    estimator for a tool-call answer)."""
    tiers: list[TierAttempt] = Field(default_factory=list)
    """Each tier tried, in order, when the request escalated into a cascade (the local model
    first); empty for a two-tier route, whose fields above already say everything."""
