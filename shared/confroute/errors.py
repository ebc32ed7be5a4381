"""The one exception family of confroute.

Every error says what was wrong and how to fix it. Catch :class:`ConfRouteError` to handle any of
them; the subclasses let callers tell configuration mistakes from runtime failures.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CacheCorruptError",
    "CalibrationError",
    "ConfRouteError",
    "ConfigurationError",
    "ContextOverflowError",
    "EscalationError",
    "InvalidRequestError",
    "LocalBackendError",
    "LogprobsUnavailableError",
    "ModelNotFoundError",
    "ProfileMismatchError",
    "WeightsNotInstalledError",
]


class ConfRouteError(Exception):
    """Base class of every error raised by confroute."""


class ConfigurationError(ConfRouteError, ValueError):
    """A setting is invalid (a threshold outside [0, 1], an unknown estimator, ...)."""


class InvalidRequestError(ConfRouteError, ValueError):
    """A request cannot be answered as given (no user message, unsupported content, ...)."""


class ModelNotFoundError(ConfRouteError, LookupError):
    """A model name is neither a bundled model, a local path nor a usable hub id."""


class WeightsNotInstalledError(ConfRouteError):
    """A bundled model's weight packages are not installed; the message names the pip command."""


class CacheCorruptError(ConfRouteError):
    """A cached file failed its hash check and could not be rebuilt."""


class EscalationError(ConfRouteError):
    """Escalation to the strong model failed after retries and fallbacks.

    Attributes:
        provider: The LiteLLM model string that failed last.
        attempts: How many calls were made, over all models.
        errors: One short description per failed model, in order; never contains a secret.
    """

    def __init__(self, message: str, *, provider: str, attempts: int, errors: list[str]) -> None:
        super().__init__(message)
        self.provider = provider
        self.attempts = attempts
        self.errors = errors
        self.decision: Any = None
        """The :class:`~confroute.decision.RoutingDecision` reported for the failed request."""
        self.tiers: list[Any] = []
        """The :class:`~confroute.decision.TierAttempt` of each cascade tier tried, if any."""


class LocalBackendError(ConfRouteError):
    """The local model could not answer: its server is down or failed after retries.

    Raised by a backend reached over HTTP (:class:`~confroute.server_backend.ServerModel`).

    Attributes:
        model: The model string of the local backend.
        attempts: How many calls were made.
        errors: One short description per failed call, in order; never contains a secret.
    """

    def __init__(self, message: str, *, model: str, attempts: int, errors: list[str]) -> None:
        super().__init__(message)
        self.model = model
        self.attempts = attempts
        self.errors = errors


class LogprobsUnavailableError(ConfigurationError):
    """The local model's server returns no token log-probabilities, so no confidence exists.

    The message names the server and how to make it return them.
    """


class ContextOverflowError(InvalidRequestError):
    """The prompt plus the answer budget does not fit the local model's context window.

    The router escalates such requests with reason ``context_overflow`` instead of raising.
    """

    def __init__(self, message: str, *, prompt_tokens: int, context_window: int) -> None:
        super().__init__(message)
        self.prompt_tokens = prompt_tokens
        self.context_window = context_window


class CalibrationError(ConfigurationError):
    """A calibration profile or set cannot be built or used (empty set, corrupt file, bad rate)."""


class ProfileMismatchError(CalibrationError):
    """A calibration profile was made for another model or estimator; names both fingerprints."""
