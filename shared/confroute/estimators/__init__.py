"""Uncertainty estimators, selectable by name.

Every estimator returns a confidence in [0, 1] (higher = more sure) or None when it cannot
produce one. The single-pass ones read the answer's own statistics and cost nothing extra;
the others declare what they need (:class:`Requirement`) and the router arranges it.

>>> from confroute import estimators
>>> "perplexity" in estimators.available()
True
"""

from __future__ import annotations

from confroute.errors import ConfigurationError
from confroute.estimators.base import (
    PROBE_LAYER,
    EstimationContext,
    Estimator,
    Requirement,
    ashared_confidence,
    shared_confidence,
)
from confroute.estimators.combined import LogisticCombination
from confroute.estimators.follow_up import PTrue, Verbalized2S
from confroute.estimators.grounding import GroundedAnswer
from confroute.estimators.probe import OODProbe, TrainedProbe
from confroute.estimators.sampling import JaccardDegree
from confroute.estimators.single_pass import (
    AvgTokenProb,
    MeanTokenEntropy,
    MinTokenProb,
    Perplexity,
)
from confroute.estimators.tool_call import ToolCallConfidence
from confroute.estimators.verbalized import Verbalized1S, parse_confidence

__all__ = [
    "PAPER_METHODS",
    "PROBE_LAYER",
    "AvgTokenProb",
    "EstimationContext",
    "Estimator",
    "GroundedAnswer",
    "JaccardDegree",
    "LogisticCombination",
    "MeanTokenEntropy",
    "MinTokenProb",
    "OODProbe",
    "PTrue",
    "Perplexity",
    "Requirement",
    "ToolCallConfidence",
    "TrainedProbe",
    "Verbalized1S",
    "Verbalized2S",
    "ashared_confidence",
    "available",
    "get",
    "parse_confidence",
    "register",
    "shared_confidence",
]

_REGISTRY: dict[str, type[Estimator]] = {}

PAPER_METHODS: tuple[str, ...] = (
    "avg_token_prob",
    "perplexity",
    "p_true",
    "verbalized_1s",
    "verbalized_2s",
    "jaccard_degree",
    "trained_probe",
    "ood_probe",
)
"""The eight methods benchmarked by the paper, in its order."""


def register(cls: type[Estimator]) -> type[Estimator]:
    """Add an estimator class to the registry under its ``name`` (usable as a decorator)."""
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    """Names of every registered estimator."""
    return sorted(_REGISTRY)


def get(estimator: str | Estimator) -> Estimator:
    """Return an estimator instance for a name (or pass an instance through).

    Raises:
        ConfigurationError: The name is unknown; the message lists the known names.
    """
    if isinstance(estimator, Estimator):
        return estimator
    try:
        cls = _REGISTRY[estimator]
    except KeyError:
        raise ConfigurationError(
            f"Unknown estimator {estimator!r}; choose one of: {', '.join(available())}."
        ) from None
    return cls()


for _cls in (
    AvgTokenProb,
    Perplexity,
    MeanTokenEntropy,
    MinTokenProb,
    PTrue,
    Verbalized1S,
    Verbalized2S,
    JaccardDegree,
    TrainedProbe,
    OODProbe,
    LogisticCombination,
    GroundedAnswer,
):
    register(_cls)
register(ToolCallConfidence)
