"""Uncertainty estimators, selectable by name.

>>> from confroute import estimators
>>> "perplexity" in estimators.available()
True
"""

from __future__ import annotations

from confroute.errors import ConfigurationError
from confroute.estimators.base import EstimationContext, Estimator, Requirement
from confroute.estimators.single_pass import Perplexity

__all__ = [
    "EstimationContext",
    "Estimator",
    "Perplexity",
    "Requirement",
    "available",
    "get",
    "register",
]

_REGISTRY: dict[str, type[Estimator]] = {}


def register(cls: type[Estimator]) -> type[Estimator]:
    """Add an estimator class to the registry under its ``name`` (usable as a decorator)."""
    _REGISTRY[cls.name] = cls
    return cls


for _cls in (Perplexity,):
    register(_cls)


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
