"""Early escalation (opt-in): stop writing an answer that is already hopeless, and escalate it.

While the local model writes, every ``every`` tokens the running confidence of the answer so far
is compared with the routing threshold; once it is more than ``margin`` below, generation of
that answer stops and the request is escalated. The strong model answers anyway, so the local
tokens that would have followed are pure cost.

The running confidence uses the same formulas as the single-pass estimators, on the tokens
written so far: ``perplexity`` = exp(mean log-probability), ``avg_token_prob``,
``min_token_prob`` and ``mean_token_entropy`` = exp(-mean entropy).

Example:
    >>> router = EarlyEscalationRouter(  # doctest: +SKIP
    ...     "qwen2.5-coder-0.5b-instruct",
    ...     threshold=0.8,
    ...     early_escalation=EarlyEscalation(every=8, margin=0.2),
    ... )
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from confroute.errors import ConfigurationError
from confroute.generation import Generation
from confroute.hooks import ScoredAnswer
from confroute.policies import FixedThreshold, Verdict, check_unit_interval
from confroute.router import ConfRouter

__all__ = [
    "STOPPED_EARLY_KEY",
    "EarlyEscalation",
    "EarlyEscalationRouter",
    "RunningMeasure",
    "stopped_early_at",
]

STOPPED_EARLY_KEY = "stopped_early_at"
"""Key of ``Generation.extras`` that holds the answer length (steps) where a row was stopped."""

RunningMeasure = Literal["perplexity", "avg_token_prob", "min_token_prob", "mean_token_entropy"]
"""Which running confidence is watched."""

_MEASURES: tuple[str, ...] = (
    "perplexity",
    "avg_token_prob",
    "min_token_prob",
    "mean_token_entropy",
)


@dataclass(frozen=True)
class EarlyEscalation:
    """When to stop a local answer early: a :data:`confroute.local.StepMonitorFactory`.

    Equal settings compare equal, so requests with the same early-escalation settings can share
    one micro-batch (:class:`~confroute.serving.batcher.MicroBatcher`).

    Attributes:
        threshold: The routing threshold; None takes it from the router's fixed threshold.
        every: Check after every this many answer tokens.
        margin: Stop when the running confidence is below ``threshold - margin``.
        min_tokens: Never stop before this many answer tokens.
        measure: The running confidence watched (see the module docstring).
    """

    threshold: float | None = None
    every: int = 8
    margin: float = 0.2
    min_tokens: int = 8
    measure: RunningMeasure = "perplexity"

    def __post_init__(self) -> None:
        """Reject settings that cannot work."""
        if self.threshold is not None:
            check_unit_interval("threshold", self.threshold)
        check_unit_interval("margin", self.margin)
        if self.every < 1:
            raise ConfigurationError(f"every must be >= 1 token, got {self.every}.")
        if self.min_tokens < 1:
            raise ConfigurationError(f"min_tokens must be >= 1, got {self.min_tokens}.")
        if self.measure not in _MEASURES:
            raise ConfigurationError(
                f"Unknown running measure {self.measure!r}; use one of {list(_MEASURES)}."
            )

    @property
    def cutoff(self) -> float:
        """The running confidence below which an answer is stopped."""
        if self.threshold is None:
            raise ConfigurationError(
                "EarlyEscalation needs a threshold: give EarlyEscalation(threshold=...) or use it "
                "through EarlyEscalationRouter with a fixed threshold."
            )
        return self.threshold - self.margin

    def should_stop(self, confidence: float, tokens: int) -> bool:
        """Whether an answer of ``tokens`` tokens with this running confidence stops now."""
        return tokens >= self.min_tokens and tokens % self.every == 0 and confidence < self.cutoff

    def __call__(self, batch: int) -> _RunningConfidence:
        """A monitor for one decoded batch of ``batch`` rows (the local model calls this)."""
        self.cutoff  # noqa: B018 - fail before decoding when no threshold is set
        return _RunningConfidence(self, batch)

    def replay(
        self, logprobs: Sequence[float], entropies: Sequence[float] | None = None
    ) -> int | None:
        """The answer length at which an answer with these statistics would stop, or None.

        Greedy decoding writes the same tokens whether or not it is stopped, so replaying a
        finished answer's log-probabilities tells exactly where early escalation cuts it.
        """
        monitor = _RunningConfidence(self, 1)
        ents = list(entropies) if entropies is not None else [0.0] * len(logprobs)
        for step, (logprob, entropy) in enumerate(zip(logprobs, ents, strict=True)):
            if monitor(step, [0], [logprob], [entropy])[0]:
                return step + 1
        return None


class _RunningConfidence:
    """Per-row running sums of one batch; called after every decoding step."""

    def __init__(self, settings: EarlyEscalation, batch: int) -> None:
        self.settings = settings
        self.count = [0] * batch
        self.sum_logprob = [0.0] * batch
        self.sum_prob = [0.0] * batch
        self.min_logprob = [0.0] * batch
        self.sum_entropy = [0.0] * batch

    def confidence(self, row: int) -> float:
        """The running confidence of one row (1.0 before any token)."""
        count = self.count[row]
        if count == 0:
            return 1.0
        measure = self.settings.measure
        if measure == "perplexity":
            return math.exp(self.sum_logprob[row] / count)
        if measure == "avg_token_prob":
            return self.sum_prob[row] / count
        if measure == "min_token_prob":
            return math.exp(self.min_logprob[row])
        return math.exp(-max(0.0, self.sum_entropy[row] / count))

    def __call__(
        self,
        step: int,
        token_ids: Sequence[int],
        logprobs: Sequence[float],
        entropies: Sequence[float],
    ) -> list[bool]:
        """Add one step's statistics; return which rows to stop."""
        del step, token_ids
        flags = []
        for row, (logprob, entropy) in enumerate(zip(logprobs, entropies, strict=True)):
            self.count[row] += 1
            self.sum_logprob[row] += logprob
            self.sum_prob[row] += math.exp(logprob)
            self.min_logprob[row] = (
                logprob if self.count[row] == 1 else min(self.min_logprob[row], logprob)
            )
            self.sum_entropy[row] += entropy
            flags.append(self.settings.should_stop(self.confidence(row), self.count[row]))
        return flags


def stopped_early_at(generation: Generation | None) -> int | None:
    """The answer length where early escalation stopped ``generation``, or None."""
    if generation is None:
        return None
    value = generation.extras.get(STOPPED_EARLY_KEY)
    return int(value) if value is not None else None


class EarlyEscalationRouter(ConfRouter):
    """A :class:`~confroute.router.ConfRouter` that stops hopeless local answers early.

    Takes every :class:`ConfRouter` argument, plus ``early_escalation``. An answer stopped early
    is always escalated (reason ``low_confidence``), whatever the estimator says about the
    partial answer; with ``strong_model=None`` it is reported as ``local_only`` and the partial
    answer is returned. ``response.local.extras["stopped_early_at"]`` tells where it stopped.

    It is a plain :class:`ConfRouter` with two things attached through public seams: the
    running-confidence monitor as ``defaults.step_monitor``, and :meth:`escalate_stopped` as a
    score observer (:data:`confroute.hooks.ScoreObserver`).
    """

    def __init__(self, *args: Any, early_escalation: EarlyEscalation, **kwargs: Any) -> None:
        """Build the router, then attach early escalation to its generation settings.

        Raises:
            ConfigurationError: ``early_escalation`` has no threshold and the policy is not a
                fixed threshold (say which threshold to watch).
        """
        super().__init__(*args, **kwargs)
        if not isinstance(early_escalation, EarlyEscalation):
            raise ConfigurationError(
                f"early_escalation must be an EarlyEscalation, got {type(early_escalation)}."
            )
        if early_escalation.threshold is None:
            if not isinstance(self.policy, FixedThreshold):
                raise ConfigurationError(
                    f"The policy {self.policy!r} has no fixed threshold; give "
                    "EarlyEscalation(threshold=...) explicitly."
                )
            early_escalation = replace(early_escalation, threshold=self.policy.threshold)
        if not self.local.capabilities.step_monitor:
            raise ConfigurationError(
                f"Early escalation watches every decoding step, which the local backend "
                f"{self.local.name!r} cannot report; use a backend with step_monitor "
                "(the transformers LocalModel), or drop early_escalation."
            )
        self.early_escalation = early_escalation
        self.defaults = replace(self.defaults, step_monitor=early_escalation)
        self.observers.append(self.escalate_stopped)

    def escalate_stopped(self, answer: ScoredAnswer) -> Verdict | None:
        """Score observer: escalate an answer stopped early (low_confidence), whatever it scored."""
        if stopped_early_at(answer.generation) is None or answer.verdict.escalate:
            return None
        return Verdict(True, answer.verdict.threshold, "low_confidence")
