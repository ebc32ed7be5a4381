"""The tiers of a cascade: which entries are scored, and a scored tier's own pipeline.

See :mod:`confroute.cascade` for the rules. A scored tier is a local or log-prob backend with
its own estimator and policy, scored exactly as the router scores its local model.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confroute import estimators as estimator_registry
from confroute.assembly import check_choices, generation_defaults, local_backend, threshold_policy
from confroute.backend import LocalBackend
from confroute.backend_choice import PREFIXES
from confroute.calibration import CalibrationProfile
from confroute.decision import TierAttempt
from confroute.errors import LocalBackendError
from confroute.estimators import Estimator
from confroute.generation import GenerationConfig
from confroute.hooks import ScoredAnswer
from confroute.messages import as_messages
from confroute.models import BUNDLED_MODELS
from confroute.policies import RoutingPolicy
from confroute.scoring import Pipeline, call_config
from confroute.settings import RouterSettings
from confroute.target import EscalationTarget

__all__ = ["HOSTED_BACKEND", "ScoredTier", "Tier", "TierInput", "entry_name", "is_scored"]

HOSTED_BACKEND = "litellm"
"""The ``backend`` recorded for a hosted tier."""


@dataclass(frozen=True)
class Tier:
    """A scored tier with its own estimator or policy (otherwise a plain model will do).

    Attributes:
        model: What to load (a bundled name, ``.gguf`` file, directory, prefixed string) or a
            :class:`~confroute.backend.LocalBackend`.
        estimator: Its estimator's name or instance (default ``settings.estimator``).
        threshold: Its fixed threshold (excludes ``escalation_rate`` and ``policy``).
        escalation_rate: The share of its answers to hand on, from ``profile`` or the shipped
            profile of the model.
        policy: Its own routing policy.
        profile: The calibration profile for ``escalation_rate``.
    """

    model: str | os.PathLike[str] | LocalBackend
    estimator: str | Estimator | None = None
    threshold: float | None = None
    escalation_rate: float | None = None
    policy: RoutingPolicy | None = None
    profile: CalibrationProfile | str | os.PathLike[str] | None = None


TierInput = str | os.PathLike[str] | LocalBackend | EscalationTarget | Tier
"""One entry of a cascade's tier list."""


def is_scored(model: object) -> bool:
    """Whether a tier entry is scored (a local or log-prob backend) rather than hosted."""
    if isinstance(model, (Tier, LocalBackend)):
        return True
    if isinstance(model, EscalationTarget) or not isinstance(model, (str, os.PathLike)):
        return False
    text = os.fspath(model)
    if text in BUNDLED_MODELS or any(text.startswith(prefix) for prefix in PREFIXES):
        return True
    path = Path(text).expanduser()
    return (path.is_file() and path.suffix == ".gguf") or path.is_dir()


def entry_name(entry: object) -> str:
    """The name a tier entry is known by before it is loaded (for duplicate checks)."""
    model = entry.model if isinstance(entry, Tier) else entry
    if isinstance(model, (str, os.PathLike)):
        text = os.fspath(model)
        for prefix in PREFIXES:
            text = text.removeprefix(prefix)
        return text
    return str(getattr(model, "name", None) or getattr(model, "model", None) or id(model))


class ScoredTier:
    """A local or log-prob tier: its backend, estimators and policy, scored like the router's.

    Calls are serialised by a lock: a batch's escalations run in threads, and a local engine
    answers one generation at a time.
    """

    def __init__(self, settings: RouterSettings, entry: Tier, *, last: bool) -> None:
        """Load the tier's backend and build its policy (``last``: it answers whatever)."""
        changes: dict[str, Any] = {}
        if entry.threshold is not None or entry.escalation_rate is not None or entry.policy:
            changes = {"threshold": entry.threshold, "escalation_rate": entry.escalation_rate}
        tier_settings = settings.model_copy(update=changes)
        check_choices(tier_settings, entry.policy, entry.profile, ())
        self.estimator = estimator_registry.get(entry.estimator or tier_settings.estimator)
        self.defaults: GenerationConfig = generation_defaults(tier_settings, [self.estimator])
        self.local = local_backend(tier_settings, entry.model, [self.estimator])
        policy = entry.policy or threshold_policy(
            tier_settings, self.local, self.estimator, entry.profile
        )
        self.estimator.prepare(self.local)
        self.pipeline = Pipeline(self.local, [self.estimator], policy, can_escalate=not last)
        self.last = last
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """The tier's model name."""
        return self.local.name

    def __repr__(self) -> str:
        """The model and its estimator."""
        return f"ScoredTier({self.name!r}, estimator={self.estimator.name!r})"

    def answer(
        self, messages: Sequence[Mapping[str, Any]], options: Mapping[str, Any]
    ) -> tuple[TierAttempt, ScoredAnswer | None]:
        """The tier's record and its scored answer (None when it failed)."""
        config = call_config(
            self.defaults,
            options.get("max_tokens"),
            options.get("temperature"),
            options.get("stop"),
        )
        started = time.perf_counter()
        try:
            with self._lock:
                [scored] = self.pipeline.run([as_messages(messages)], config, options.get("tools"))
        except LocalBackendError as error:
            return self._failed(str(error), time.perf_counter() - started), None
        generation = scored.generation
        if generation is None:
            why = scored.local_error or (
                f"the prompt does not fit {self.name}'s context window of "
                f"{self.local.context_window} tokens"
            )
            return self._failed(why, scored.local_latency_s), None
        attempt = TierAttempt(
            model=self.name,
            backend=self.local.capabilities.backend,
            confidence=scored.confidence,
            threshold=scored.verdict.threshold,
            escalated=scored.verdict.escalate and not self.last,
            reason=scored.reason,
            latency_s=scored.local_latency_s,
            prompt_tokens=generation.prompt_tokens,
            completion_tokens=generation.completion_tokens,
        )
        return attempt, scored

    def _failed(self, error: str, latency_s: float) -> TierAttempt:
        return TierAttempt(
            model=self.name,
            backend=self.local.capabilities.backend,
            escalated=not self.last,
            latency_s=latency_s,
            error=error,
        )
