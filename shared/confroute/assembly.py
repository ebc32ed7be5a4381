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
from confroute.backend_choice import choose_backend, load_backend
from confroute.calibration import CalibrationProfile, default_profile_path, shipped_profiles
from confroute.calibration_transfer import engine_problem
from confroute.errors import ConfigurationError
from confroute.escalation import Escalation, Redactor
from confroute.estimators import PROBE_LAYER, Estimator, Requirement, available, get
from confroute.generation import GenerationConfig
from confroute.policies import (
    ConversationPolicy,
    EscalationCap,
    FixedThreshold,
    RoutingPolicy,
    TargetEscalationRate,
    check_cap,
    held_rate,
)
from confroute.settings import (
    DEFAULT_ESCALATION_RATE,
    DEFAULT_THRESHOLD,
    RouterSettings,
    settings_from,
)
from confroute.target import EscalationTarget
from confroute.tool_routing import ToolCallRouting

__all__ = [
    "check_capabilities",
    "check_choices",
    "check_policy",
    "escalation_target",
    "generation_defaults",
    "local_backend",
    "router_settings",
    "servable",
    "sticky_policy",
    "threshold_policy",
    "tool_call_routing",
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
    if settings.max_escalation_rate is not None:
        if policy is not None:
            raise ConfigurationError(
                "max_escalation_rate caps the policy the router builds; for your own policy "
                "pass policy=EscalationCap(policy, max_escalation_rate, window) instead."
            )
        check_cap(settings.max_escalation_rate, settings.budget_window, settings.escalation_rate)
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
        needs = frozenset().union(*(e.requires for e in estimators))
        filled = settings.with_env()
        choice = choose_backend(
            name, settings.local_backend, api_base=filled.local_api_base, needs=needs
        )
        logger.info("local model %s on %s (%s)", choice.model, choice.backend, choice.rule)
        local: LocalBackend = load_backend(choice, settings)
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
    """The target-rate policy from ``profile`` (or the shipped one), or a fixed threshold.

    With neither a rate nor a threshold, :data:`~confroute.settings.DEFAULT_ESCALATION_RATE`
    is held when a shipped profile matches the local model's weights and the estimator, and
    was made on its engine or one whose measured shift allows the transfer
    (:mod:`confroute.calibration_transfer`; else a warning says to recalibrate), else the
    threshold is :data:`~confroute.settings.DEFAULT_THRESHOLD`. ``max_escalation_rate``
    caps whichever policy is built.

    Raises:
        ConfigurationError: ``escalation_rate`` is set and no profile is given or shipped.
        ProfileMismatchError: The profile was made for another model or estimator, or on
            another engine the rule does not allow (with ``strict_profile``).
    """
    rate = settings.escalation_rate
    if rate is None and settings.threshold is None and profile is None:
        engine = local.capabilities.backend
        default_path = default_profile_path(local.name, estimator.name, engine)
        if default_path is not None:
            found = CalibrationProfile.load(default_path)
            if found.fingerprint.model_fingerprint == local.fingerprint:
                problem = engine_problem(
                    found.fingerprint.backend,
                    engine,
                    estimator.name,
                    adaptive=settings.adapt_to_traffic,
                )
                if problem is None:
                    rate, profile = DEFAULT_ESCALATION_RATE, found
                else:
                    logger.warning(
                        "not using the shipped profile %s: %s; the threshold is %s. "
                        "Recalibrate with `confroute calibrate --slm-backend %s`.",
                        default_path, problem, DEFAULT_THRESHOLD, engine,
                    )  # fmt: skip
    if rate is None:
        threshold = settings.threshold
        fixed = FixedThreshold(DEFAULT_THRESHOLD if threshold is None else threshold)
        return _capped(fixed, settings)
    if profile is None:
        profile = default_profile_path(local.name, estimator.name, local.capabilities.backend)
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
    checked: str | None = local.capabilities.backend
    if checked is not None and settings.adapt_to_traffic:
        made_on = loaded.fingerprint.backend  # a start point the held rate corrects
        if engine_problem(made_on, checked, estimator.name, adaptive=True) is None:
            checked = None
    loaded.check_compatible(
        local.fingerprint,
        estimator.name,
        model_name=local.name,
        strict=settings.strict_profile,
        backend=checked,
    )
    per_format = settings.per_format_thresholds
    if settings.adapt_to_traffic:
        return held_rate(
            rate,
            loaded,
            per_format=per_format,
            max_escalation_rate=settings.max_escalation_rate,
            budget_window=settings.budget_window,
        )
    return _capped(TargetEscalationRate(loaded, rate, per_format=per_format), settings)


def _capped(policy: RoutingPolicy, settings: RouterSettings) -> RoutingPolicy:
    """``policy`` under ``settings.max_escalation_rate``, when one is set."""
    if settings.max_escalation_rate is None:
        return policy
    return EscalationCap(policy, settings.max_escalation_rate, settings.budget_window)


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


def tool_call_routing(
    settings: RouterSettings, estimators: Sequence[Estimator]
) -> ToolCallRouting | None:
    """The tool estimator and threshold that decide tool-call answers (None: turned off).

    The estimator is the chosen one of that name when it is among ``estimators`` (its
    confidence is computed once); when it is the primary estimator, the router's policy
    decides calls too (one estimator, one threshold), so None is returned.

    Raises:
        ConfigurationError: ``settings.tool_estimator`` is not a registered estimator.
    """
    name = settings.tool_estimator
    if name is None or (estimators and estimators[0].name == name):
        return None
    chosen = next((e for e in estimators if e.name == name), None)
    return ToolCallRouting(chosen or get(name), settings.tool_threshold)


def sticky_policy(settings: RouterSettings, policy: RoutingPolicy) -> RoutingPolicy:
    """``policy`` in a :class:`~confroute.policies.ConversationPolicy` when ``sticky_turns`` > 0.

    Raises:
        ConfigurationError: ``policy`` is a ConversationPolicy already (set its turns instead).
    """
    if settings.sticky_turns == 0:
        return policy
    if isinstance(policy, ConversationPolicy):
        raise ConfigurationError(
            "policy= is a ConversationPolicy already and sticky_turns= is set too: give one "
            "(the policy's own turns, or sticky_turns= on a plain policy)."
        )
    return ConversationPolicy(
        policy, settings.sticky_turns, release_confidence=settings.sticky_release_confidence
    )
