"""confroute: answer with a small local model; escalate to a strong model only when unsure.

The engine is :class:`ConfRouter`; both framework adapters call it.
"""

from __future__ import annotations

import os

# Offline by default: LiteLLM reads its cost map from the installed package instead of fetching
# it. This must happen before LiteLLM is first imported, so it sits at the package's top; a
# LiteLLM imported earlier has already decided (warn_if_cost_map_fetched, below, tells).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from confroute.decision import RoutingDecision, TierAttempt
from confroute.errors import (
    CacheCorruptError,
    ConfigurationError,
    ConfRouteError,
    ContextOverflowError,
    EscalationError,
    InvalidRequestError,
    LocalBackendError,
    LogprobsUnavailableError,
    ModelNotFoundError,
    WeightsNotInstalledError,
)
from confroute.escalation import Escalation, warn_if_cost_map_fetched
from confroute.generation import Generation, TokenAlternative
from confroute.hooks import ScoredAnswer
from confroute.llamacpp import LlamaCppModel
from confroute.local import GenerationConfig, LocalModel
from confroute.models import DEFAULT_LLM, DEFAULT_SLM
from confroute.policies import ConversationPolicy, FixedThreshold, RoutingPolicy, Verdict
from confroute.router import CallOptions, ConfRouter, RoutedChunk, RoutedResponse
from confroute.server_backend import ServerModel
from confroute.target import EscalationResult
from confroute.tiers import Tier

__version__ = "0.1.0"

warn_if_cost_map_fetched()

__all__ = [
    "DEFAULT_LLM",
    "DEFAULT_SLM",
    "CacheCorruptError",
    "CallOptions",
    "ConfRouteError",
    "ConfRouter",
    "ConfigurationError",
    "ContextOverflowError",
    "ConversationPolicy",
    "Escalation",
    "EscalationError",
    "EscalationResult",
    "FixedThreshold",
    "Generation",
    "GenerationConfig",
    "InvalidRequestError",
    "LlamaCppModel",
    "LocalBackendError",
    "LocalModel",
    "LogprobsUnavailableError",
    "ModelNotFoundError",
    "RoutedChunk",
    "RoutedResponse",
    "RoutingDecision",
    "RoutingPolicy",
    "ScoredAnswer",
    "ServerModel",
    "Tier",
    "TierAttempt",
    "TokenAlternative",
    "Verdict",
    "WeightsNotInstalledError",
    "__version__",
]
