"""Building a router's pieces from its settings: generation defaults, backend, target, policy.

Pure functions of :class:`~confroute.settings.RouterSettings` and the objects the user passed;
:class:`~confroute.router.ConfRouter` calls them once, at construction. Each one checks what it
builds and raises :class:`~confroute.errors.ConfigurationError` with what to do instead.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Sequence
from typing import Any

from confroute.backend import LocalBackend
from confroute.calibration import CalibrationProfile, default_profile_path, shipped_profiles
from confroute.errors import ConfigurationError
from confroute.escalation import Escalation, Redactor
from confroute.estimators import PROBE_LAYER, Estimator, Requirement, available, get
from confroute.generation import GenerationConfig
from confroute.local import LocalModel
from confroute.policies import (
    FixedThreshold,
    RoutingPolicy,
    StreamingQuantile,
    TargetEscalationRate,
)
from confroute.settings import DEFAULT_THRESHOLD, RouterSettings, settings_from
from confroute.target import EscalationTarget

__all__ = [
    "check_capabilities",
    "check_choices",
    "check_policy",
    "escalation_target",
    "generation_defaults",
    "local_backend",
    "router_settings",
    "servable",
    "threshold_policy",
]

logger = logging.getLogger(__name__)


def check_choices(
    settings: RouterSettings,
    policy: RoutingPolicy | None,
    profile: object | None,
    hooks: Sequence[object],
) -> None:
    """Refuse settings that contradict each other, and hooks that cannot be called.

    Raises:
        ConfigurationError: More than one of threshold, policy and escalation_rate; a profile
            without a rate; a hook that is not callable.
    """
    chosen = [
        name
        for name, value in (
            ("threshold", settings.threshold),
            ("policy", policy),
            ("escalation_rate", settings.escalation_rate),
        )
        if value is not None
    ]
    if len(chosen) > 1:
        raise ConfigurationError(f"Give one of threshold, policy or escalation_rate; got {chosen}.")
    if profile is not None and settings.escalation_rate is None:
        raise ConfigurationError(
            "profile is only used with escalation_rate; pass escalation_rate=... too, or "
            "use the profile in a policy (for example RiskControlledThreshold(profile, ...))."
        )
    for hook in hooks:
        if not callable(hook):
            raise ConfigurationError(f"Every hook must be callable; got {hook!r}.")


def router_settings(
    settings: RouterSettings | None,
    strong_model: object,
    changes: dict[str, Any],
    *,
    from_settings: bool,
) -> tuple[RouterSettings, Any]:
    """The router's settings from ``settings`` and keyword ``changes``, and its strong model.

    A string ``strong_model`` becomes the ``strong_model`` setting; with ``from_settings`` (not
    given) the setting is used.

    Raises:
        TypeError: A keyword that is no setting (a typo such as ``treshold=``).
        ConfigurationError: A setting out of its bounds.
    """
    unknown = sorted(set(changes) - set(RouterSettings.model_fields))
    if unknown:
        raise TypeError(
            f"ConfRouter() got an unexpected keyword argument {unknown[0]!r}; the settings "
            f"are {sorted(RouterSettings.model_fields)}."
        )
    if not from_settings and isinstance(strong_model, str):
        changes = {**changes, "strong_model": strong_model}
    resolved = settings_from(settings, **changes)
    if from_settings or isinstance(strong_model, str):
        return resolved, resolved.strong_model
    return resolved, strong_model


def generation_defaults(
    settings: RouterSettings, estimators: Sequence[Estimator]
) -> GenerationConfig:
    """The local generation settings the estimators need (and a check that they fit together).

    Raises:
        ConfigurationError: An estimator is chosen twice, two change the answer prompt, or
            two read different hidden layers.
    """
    names = [e.name for e in estimators]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"Each estimator may be chosen once; got {names}.")
    prompt_changers = [e.name for e in estimators if Requirement.PROMPT in e.requires]
    if len(prompt_changers) > 1:
        raise ConfigurationError(
            f"Only one estimator may change the answer prompt; got {prompt_changers}."
        )
    hidden_layers = {
        getattr(e, "hidden_layer", PROBE_LAYER)
        for e in estimators
        if Requirement.HIDDEN_STATE in e.requires
    }
    if len(hidden_layers) > 1:
        raise ConfigurationError(
            f"The chosen estimators read different hidden layers {sorted(hidden_layers)}; "
            "choose estimators that read the same one."
        )
    needs = frozenset().union(*(e.requires for e in estimators))
    return GenerationConfig(
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        hidden_layer=next(iter(hidden_layers)) if hidden_layers else None,
        keep_cache=Requirement.FOLLOW_UP in needs,
    )


def escalation_target(
    settings: RouterSettings, strong_model: str | EscalationTarget | None, redact: Redactor | None
) -> EscalationTarget | None:
    """The strong model: a target as given, or an :class:`Escalation` built from a model string.

    Raises:
        ConfigurationError: ``strong_model`` is neither a string, a target nor None.
    """
    if strong_model is None or isinstance(strong_model, EscalationTarget):
        return strong_model
    if not isinstance(strong_model, str):
        raise ConfigurationError(
            "strong_model must be a LiteLLM model string, an EscalationTarget (such as an "
            f"Escalation) or None; got {type(strong_model).__name__}."
        )
    return Escalation(
        strong_model,
        api_base=settings.api_base,
        api_key=settings.api_key,
        timeout=settings.timeout,
        max_retries=settings.max_retries,
        fallbacks=settings.fallbacks,
        redact=redact,
    )


def local_backend(
    settings: RouterSettings,
    local_model: str | os.PathLike[str] | LocalBackend | None,
    estimators: Sequence[Estimator],
) -> LocalBackend:
    """The local backend (loaded by name when needed), checked against the estimators' needs.

    Raises:
        ConfigurationError: ``local_model`` is of the wrong type, or the backend cannot compute
            what an estimator needs (its :class:`~confroute.backend.Capabilities`).
    """
    if local_model is None or isinstance(local_model, (str, os.PathLike)):
        name = settings.local_model if local_model is None else local_model
        local: LocalBackend = LocalModel(name, device=settings.device)
    elif isinstance(local_model, LocalBackend):
        local = local_model
    else:
        raise ConfigurationError(
            "local_model must be a model name or path, or a LocalBackend (such as a "
            f"LocalModel); got {type(local_model).__name__}."
        )
    check_capabilities(local, estimators)
    return local


def servable(local: LocalBackend) -> list[str]:
    """Names of the registered estimators ``local``'s capabilities can serve."""
    return [name for name in available() if not local.capabilities.missing(get(name).requires)]


def check_capabilities(local: LocalBackend, chosen: Sequence[Estimator]) -> None:
    """Refuse an estimator whose requirement the backend cannot serve.

    Raises:
        ConfigurationError: Names the backend, the estimator, what it lacks, and the
            estimators that would work.
    """
    for estimator in chosen:
        missing = local.capabilities.missing(estimator.requires)
        if missing:
            raise ConfigurationError(
                f"The estimator {estimator.name!r} needs {missing}, which the "
                f"{local.capabilities.backend} backend of {local.name!r} "
                f"({type(local).__name__}) cannot compute. Estimators it serves: "
                f"{', '.join(servable(local))}; or run the model on a backend that has it "
                "(the transformers backend has all)."
            )


def threshold_policy(
    settings: RouterSettings,
    local: LocalBackend,
    estimator: Estimator,
    profile: CalibrationProfile | str | os.PathLike[str] | None,
) -> RoutingPolicy:
    """A fixed threshold, or the target-rate policy from ``profile`` (or the shipped one).

    Raises:
        ConfigurationError: ``escalation_rate`` is set and no profile is given or shipped.
        ProfileMismatchError: The profile was made for another model or estimator (with
            ``strict_profile``).
    """
    rate = settings.escalation_rate
    if rate is None:
        threshold = settings.threshold
        return FixedThreshold(DEFAULT_THRESHOLD if threshold is None else threshold)
    if profile is None:
        profile = default_profile_path(local.name, estimator.name)
        if profile is None:
            shipped = ", ".join(shipped_profiles()) or "none"
            raise ConfigurationError(
                f"escalation_rate needs a calibration profile, and none ships for model "
                f"{local.name!r} with estimator {estimator.name!r} (shipped: {shipped}). Pass "
                "profile=PATH (build one with `confroute calibrate`), or use threshold=."
            )
    loaded = (
        profile if isinstance(profile, CalibrationProfile) else CalibrationProfile.load(profile)
    )
    loaded.check_compatible(
        local.fingerprint, estimator.name, model_name=local.name, strict=settings.strict_profile
    )
    per_format = settings.per_format_thresholds
    if settings.adapt_to_traffic:
        return StreamingQuantile(rate, loaded, per_format=per_format)
    return TargetEscalationRate(loaded, rate, per_format=per_format)


def check_policy(policy: RoutingPolicy) -> RoutingPolicy:
    """``policy`` if its ``decide`` takes ``answer_format`` (the router always passes it).

    Raises:
        ConfigurationError: ``policy`` has no ``decide``, or a ``decide(confidence)`` without
            the ``answer_format`` keyword (the message says how to write it).
    """
    decide = getattr(policy, "decide", None)
    if not callable(decide):
        raise ConfigurationError(
            f"policy must have decide(confidence, answer_format=None) -> Verdict; got {policy!r}."
        )
    try:
        params = inspect.signature(decide).parameters
    except (TypeError, ValueError):  # a builtin or C callable: trust it
        return policy
    takes_keywords = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if "answer_format" not in params and not takes_keywords:
        raise ConfigurationError(
            f"{type(policy).__name__}.decide must accept answer_format (the answer format key "
            "the router recognised, or None): write it as "
            "`def decide(self, confidence, answer_format=None) -> Verdict`."
        )
    return policy
