"""Building the routing engine from ``ChatConfRoute``'s fields, and checking those fields."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_core.language_models.base import LangSmithParams

from confroute.backend import LocalBackend
from confroute.errors import ConfigurationError
from confroute.router import ConfRouter
from confroute.scoring import stop_sequences
from confroute.settings import RouterSettings, from_environment, settings_from
from langchain_confroute.messages import PROVIDER

if TYPE_CHECKING:
    from langchain_confroute.chat_model import ChatConfRoute

__all__ = [
    "CALL_SETTINGS",
    "ENGINE_FIELDS",
    "ROUTER_FIELDS",
    "build_router",
    "check_engine_settings",
    "from_environment",
    "identifying_params",
    "local_name",
    "router_settings",
    "setting",
    "tracing_params",
]

CALL_SETTINGS = frozenset({"temperature", "max_new_tokens"})
"""Router settings that are per-call options too; they may be set beside a ready ``router``."""

MODEL_SETTINGS = frozenset({"local_model", "strong_model", "estimator"})
"""Settings whose field may hold an object (a loaded model, an escalation, an estimator
instance); they are passed to :class:`ConfRouter` beside the settings."""

ENGINE_FIELDS = ("calibration_profile", "policy")
"""Fields that configure the engine and are not :class:`RouterSettings` values."""

ROUTER_FIELDS = (
    *(name for name in RouterSettings.model_fields if name not in CALL_SETTINGS),
    *ENGINE_FIELDS,
)
"""Fields that configure the engine; they conflict with a ready-made ``router``."""


def setting(name: str) -> Any:
    """The default of the router setting ``name`` (from :class:`RouterSettings`)."""
    return RouterSettings.model_fields[name].default


def check_engine_settings(model: ChatConfRoute) -> None:
    """Refuse settings that contradict each other.

    Raises:
        ConfigurationError: ``router`` is given with engine fields; more than one of
            ``threshold``, ``escalation_rate`` and ``policy``; or a profile without a rate.
    """
    if model.router is not None:
        clashing = [name for name in ROUTER_FIELDS if name in model.model_fields_set]
        if clashing:
            raise ConfigurationError(
                f"router= already holds the models and the policy; do not also set "
                f"{', '.join(clashing)}. Configure them on the ConfRouter instead."
            )
    chosen = [
        name
        for name in ("threshold", "escalation_rate", "policy")
        if getattr(model, name) is not None
    ]
    if len(chosen) > 1:
        raise ConfigurationError(
            f"Give one of threshold, escalation_rate or policy, not {' and '.join(chosen)}."
        )
    if model.calibration_profile is not None and model.escalation_rate is None:
        raise ConfigurationError("calibration_profile is only used with escalation_rate; set both.")


def router_settings(model: ChatConfRoute) -> RouterSettings:
    """The :class:`RouterSettings` that the model's fields hold.

    Raises:
        ConfigurationError: A value is out of its bounds.
    """
    fields = type(model).model_fields
    values: dict[str, Any] = {
        name: getattr(model, name)
        for name in RouterSettings.model_fields
        if name in fields and name not in MODEL_SETTINGS
    }
    if model.max_tokens is not None:
        values["max_new_tokens"] = model.max_tokens
    return settings_from(None, **values)


def build_router(model: ChatConfRoute) -> ConfRouter:
    """A :class:`ConfRouter` for the model's fields (loads the local model when named).

    Raises:
        ConfigurationError: A setting is invalid (``escalation_rate`` without a profile for a
            model and estimator that ship none).
    """
    local = model.local_model
    profile = model.calibration_profile if model.escalation_rate is not None else None
    return ConfRouter(
        local if isinstance(local, LocalBackend) else str(local),
        model.strong_model,
        settings=router_settings(model),
        estimator=model.estimator,
        policy=model.policy,
        profile=profile,
    )


def local_name(model: ChatConfRoute) -> str:
    """Name of the local model, without loading it."""
    if model.router is not None:
        name: str = model.router.local.name
        return name
    local = model.local_model
    return local.name if isinstance(local, LocalBackend) else str(local)


def _strong_name(strong: object) -> str | None:
    """The strong model's name: a string, a target's ``model``, a cascade's tiers joined."""
    if strong is None or isinstance(strong, str):
        return strong
    if isinstance(strong, list):
        return " -> ".join(str(_strong_name(t) or getattr(t, "name", t)) for t in strong)
    return str(getattr(strong, "model", strong))


def identifying_params(model: ChatConfRoute) -> dict[str, Any]:
    """What distinguishes this chat model in traces and caches; never the key."""
    strong = model.router.escalation if model.router is not None else model.strong_model
    return {
        "local_model": local_name(model),
        "strong_model": _strong_name(strong),
        "estimator": getattr(model.estimator, "name", model.estimator),
        "threshold": model.threshold,
        "escalation_rate": model.escalation_rate,
        "policy": repr(model.policy) if model.policy is not None else None,
        "temperature": model.temperature,
        "max_tokens": model.max_tokens,
        "stop": model.stop,
    }


def tracing_params(
    model: ChatConfRoute, stop: list[str] | None, kwargs: dict[str, Any]
) -> LangSmithParams:
    """LangSmith's standard parameters; ``ls_model_name`` is the local model's name."""
    params = LangSmithParams(
        ls_provider=PROVIDER,
        ls_model_name=str(kwargs.get("model") or local_name(model)),
        ls_model_type="chat",
        ls_temperature=kwargs.get("temperature", model.temperature),
    )
    max_tokens = kwargs.get("max_tokens", model.max_tokens)
    if max_tokens is not None:
        params["ls_max_tokens"] = max_tokens
    if stop or model.stop:
        params["ls_stop"] = list(stop_sequences(stop or model.stop))
    return params
