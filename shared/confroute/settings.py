"""Every default of the router, written once, and the one place environment variables are read.

:class:`RouterSettings` is a frozen pydantic model: each setting carries its bounds, so a bad
value fails at construction with a message that names it. The core
(:class:`~confroute.router.ConfRouter`), both adapters, the CLI and the server build from it.
:class:`Environment` reads the ``CONFROUTE_*`` variables (and nothing else in confroute does).

Example:
    >>> RouterSettings(timeout=30).timeout
    30.0
    >>> RouterSettings(max_new_tokens=0)  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    pydantic_core._pydantic_core.ValidationError: ...
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from confroute.errors import ConfigurationError
from confroute.redaction import SecretURL

__all__ = [
    "DEFAULT_ESCALATION_RATE",
    "DEFAULT_LLM",
    "DEFAULT_SLM",
    "DEFAULT_THRESHOLD",
    "DEFAULT_TOOL_THRESHOLD",
    "LOCAL_PROVIDER",
    "MAX_ANSWER_TOKENS",
    "STICKY_CONVERSATIONS",
    "STICKY_RELEASE_CONFIDENCE",
    "STICKY_TTL_S",
    "STICKY_TURNS",
    "BackendName",
    "Environment",
    "RouterSettings",
    "environment",
    "from_environment",
    "settings_from",
]

DEFAULT_SLM = "qwen2.5-coder-0.5b-instruct"
"""The bundled small model that answers first."""
DEFAULT_LLM = "qwen2.5-coder-1.5b-instruct"
"""The bundled stronger model that takes escalations by default (in process)."""
LOCAL_PROVIDER = "confroute"
"""LiteLLM provider prefix of the in-process bundled models (see :mod:`confroute.provider`)."""
DEFAULT_THRESHOLD = 0.8
"""Fixed threshold when no rate, threshold or policy is chosen and no shipped profile fits."""
DEFAULT_ESCALATION_RATE = 0.3
"""Escalation rate when no rate, threshold or policy is chosen and a shipped calibration
profile matches the local model and estimator (the bundled models)."""
DEFAULT_TOOL_THRESHOLD = 0.44
"""Threshold of the tool estimator (``tool_call``, product of the parts) for an answer that is a
tool call: on BFCL's development split (40 items, 33 calls, bundled 0.5B) it escalates the least
confident 30% of the calls (``DEFAULT_ESCALATION_RATE``); on the report split (92 calls) it
escalated 26% of them, 20 of the 31 wrong ones, and the kept calls were right 84% of the time
against 66% for all calls. On the full set's report split (720 items, 592 calls, disjoint from
those 40) it escalated 31% of the calls, 137 of the 216 wrong ones, kept calls right 81% against
64% (``benchmarks/tool_threshold.py``, BENCHMARKS.md)."""
BackendName = Literal["auto", "transformers", "llama.cpp", "server"]
"""The local engines by name (``"auto"`` chooses by the rule in :mod:`confroute.backend_choice`)."""
MAX_ANSWER_TOKENS = 1 << 20
"""The largest answer length cap accepted (1,048,576 tokens: above any model's output limit
and context window in use), for the setting and for each call."""
STICKY_TURNS = 3
"""User turns a conversation stays escalated after an escalation (``sticky_turns``)."""
STICKY_RELEASE_CONFIDENCE = 0.95
"""A sticky conversation returns to the local model early when a turn's local confidence is at
least this (``sticky_release_confidence``)."""
STICKY_CONVERSATIONS = 10_000
"""Conversations a sticky policy remembers; the least recently seen are forgotten first."""
STICKY_TTL_S = 3600.0
"""Seconds a conversation nobody continued is remembered by a sticky policy."""


class RouterSettings(BaseModel):
    """The router's settings; every default lives here and nowhere else.

    Models, estimator and policy objects (which are not plain values) are passed to
    :class:`~confroute.router.ConfRouter` beside these.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    local_model: str = DEFAULT_SLM
    """The local model to load: a bundled name, a directory, a ``.gguf`` file, a hub id, or a
    LiteLLM model string of a server with log-probs (see :mod:`confroute.backend_choice`)."""
    local_backend: BackendName = "auto"
    """Which engine runs ``local_model``: ``"auto"`` (the rule in
    :func:`confroute.backend_choice.choose_backend`), ``"transformers"``, ``"llama.cpp"`` or
    ``"server"``."""
    local_api_base: SecretURL | None = None
    """Base URL of the SLM's server (``local_backend="server"``); its userinfo is a secret."""
    local_api_key: SecretStr | None = None
    """Key of the SLM's server; never logged or reported."""
    strong_model: str | list[str] | None = f"{LOCAL_PROVIDER}/{DEFAULT_LLM}"
    """The LiteLLM model string escalations go to; None keeps everything local. A list is a
    cascade of tiers (see :mod:`confroute.cascade`)."""
    estimator: str = "perplexity"
    """Name of the uncertainty estimator whose confidence drives the decision."""
    tool_estimator: str | None = "tool_call"
    """Name of the estimator that decides an answer which is a well-formed tool call (tools
    were offered): computed on the same generation (no extra model call) and compared with
    ``tool_threshold``; other answers keep ``estimator``. None: ``estimator`` decides all."""
    tool_threshold: float = Field(default=DEFAULT_TOOL_THRESHOLD, ge=0.0, le=1.0)
    """Escalate a tool-call answer when the tool estimator's confidence is below it (its own
    threshold: the tool estimator's scale is not the primary one's; see
    :data:`DEFAULT_TOOL_THRESHOLD` for where the default comes from)."""
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    """Escalate when confidence is below it. None, with no rate or policy either: the default
    policy, :data:`DEFAULT_ESCALATION_RATE` held on the traffic when a shipped profile matches
    the local model and estimator, else :data:`DEFAULT_THRESHOLD`."""
    escalation_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    """Escalate this share of requests (the threshold comes from a calibration profile)."""
    strict_profile: bool = True
    """Refuse a calibration profile made for another model or estimator."""
    per_format_thresholds: bool = True
    """With a rate: each answer format gets its own calibration threshold."""
    adapt_to_traffic: bool = True
    """With a rate: hold it on the live traffic (False keeps the profile's fixed threshold)."""
    max_escalation_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    """Hard cap: never escalate more than this share of any ``budget_window`` consecutive
    requests (a refused escalation is kept local, ``reason="budget_exhausted"``)."""
    budget_window: int = Field(default=100, ge=1)
    """Requests per window of ``max_escalation_rate`` and of the rate's window guarantee."""
    sticky_turns: int = Field(default=0, ge=0)
    """Conversation-aware routing: once a conversation escalates, its next this many user turns
    escalate too (``reason="sticky"``) unless the local confidence reaches
    ``sticky_release_confidence``; tool steps of an escalated agent run stay escalated. 0 (the
    default) decides each request alone. :data:`STICKY_TURNS` is the usual choice; see
    :class:`~confroute.policies.ConversationPolicy`."""
    sticky_release_confidence: float | None = Field(
        default=STICKY_RELEASE_CONFIDENCE, ge=0.0, le=1.0
    )
    """With ``sticky_turns``: a turn this confident returns the conversation to the local model
    (None: only the turn count releases it)."""
    api_base: SecretURL | None = None
    """Base URL of the strong model's OpenAI-compatible server (its userinfo is a secret)."""
    api_key: SecretStr | None = None
    """Key of the strong model; never logged or reported."""
    timeout: float = Field(default=120.0, gt=0, allow_inf_nan=False)
    """Seconds per escalation call."""
    max_retries: int = Field(default=2, ge=0)
    """Retries per strong model, with back-off."""
    fallbacks: tuple[str, ...] = ()
    """LiteLLM models tried in order when ``strong_model`` fails."""
    on_escalation_error: Literal["return_local", "raise"] = "return_local"
    """When escalation fails: answer with the local answer, or raise ``EscalationError``."""
    max_new_tokens: int = Field(default=256, ge=1, le=MAX_ANSWER_TOKENS)
    """Default answer length cap (both models)."""
    temperature: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    """Default temperature of both models (0 = greedy)."""
    device: str = "auto"
    """Device of a local model loaded by name: ``"auto"``, ``"cpu"``, ``"cuda"``..."""

    def with_env(self, env: Environment | None = None) -> RouterSettings:
        """These settings with ``CONFROUTE_API_KEY`` / ``CONFROUTE_API_BASE`` filling unset ones."""
        env = env or environment()
        updates: dict[str, Any] = {}
        if self.api_key is None and env.api_key is not None:
            updates["api_key"] = env.api_key
        if self.api_base is None and env.api_base is not None:
            updates["api_base"] = env.api_base
        if self.local_api_key is None and env.slm_api_key is not None:
            updates["local_api_key"] = env.slm_api_key
        if self.local_api_base is None and env.slm_api_base is not None:
            updates["local_api_base"] = env.slm_api_base
        return self.model_copy(update=updates) if updates else self


def settings_from(base: RouterSettings | None = None, **changes: Any) -> RouterSettings:
    """``base`` (default: the defaults) with ``changes`` applied and validated.

    Raises:
        ConfigurationError: An unknown setting, or a value out of its bounds; the message
            names each one.
    """
    data = (base or RouterSettings()).model_dump()
    unknown = sorted(set(changes) - set(RouterSettings.model_fields))
    if unknown:
        raise ConfigurationError(
            f"Unknown setting(s) {unknown}; the settings are {sorted(RouterSettings.model_fields)}."
        )
    data.update(changes)
    try:
        return RouterSettings(**data)
    except ValidationError as error:
        problems = "; ".join(_problem(e) for e in error.errors())
        raise ConfigurationError(f"Invalid router settings: {problems}.") from None


_REQUIREMENTS = {
    "threshold": "in [0, 1]",
    "tool_threshold": "in [0, 1]",
    "escalation_rate": "in [0, 1]",
    "max_escalation_rate": "in [0, 1] (a share of budget_window requests)",
    "budget_window": "an integer >= 1 (requests)",
    "sticky_turns": "an integer >= 0 (user turns; 0 turns stickiness off)",
    "sticky_release_confidence": "in [0, 1], or None",
    "timeout": "a finite number of seconds > 0",
    "max_retries": "an integer >= 0",
    "fallbacks": "a list of LiteLLM model strings",
    "on_escalation_error": "'return_local' or 'raise'",
    "max_new_tokens": f"an integer in [1, {MAX_ANSWER_TOKENS}]",
    "temperature": "a finite number >= 0",
    "local_backend": "'auto', 'transformers', 'llama.cpp' or 'server'",
}
"""How each bounded setting is described in an error message."""


def _problem(error: Mapping[str, Any]) -> str:
    """One setting's problem as "NAME must be ..., got VALUE" (never a key's value)."""
    name = str(error["loc"][0]) if error["loc"] else "settings"
    if name in ("api_key", "api_base", "local_api_key", "local_api_base"):
        return f"{name} must be a string or a SecretStr"
    requirement = _REQUIREMENTS.get(name)
    if requirement is None:
        return f"{name}: {error['msg']} (got {error.get('input')!r})"
    return f"{name} must be {requirement}, got {error.get('input')!r}"


class Environment(BaseModel):
    """The ``CONFROUTE_*`` environment variables, read in one place (:func:`environment`)."""

    model_config = ConfigDict(frozen=True)

    slm: str = DEFAULT_SLM
    """``CONFROUTE_SLM``: the local model of the CLI and the server."""
    slm_backend: BackendName = "auto"
    """``CONFROUTE_SLM_BACKEND``: the engine of ``slm`` (CLI and server)."""
    slm_api_base: SecretURL | None = None
    """``CONFROUTE_SLM_API_BASE``: the SLM server's base URL (``slm_backend="server"``)."""
    slm_api_key: SecretStr | None = None
    """``CONFROUTE_SLM_API_KEY``: the SLM server's key."""
    llm: str = f"{LOCAL_PROVIDER}/{DEFAULT_LLM}"
    """``CONFROUTE_LLM``: the strong model of the CLI and the server."""
    api_base: SecretURL | None = None
    """``CONFROUTE_API_BASE``: the strong model's base URL (both adapters, CLI, server); its
    userinfo is a secret."""
    api_key: SecretStr | None = None
    """``CONFROUTE_API_KEY``: the strong model's key (both adapters, CLI, server)."""
    cache_dir: Path = Path.home() / ".cache" / "confroute"
    """``CONFROUTE_CACHE``: where assembled and converted weights are kept."""
    quiet: bool = False
    """``CONFROUTE_QUIET=1``: no progress messages while weights are assembled."""
    verify_full: bool = False
    """``CONFROUTE_VERIFY=full``: re-hash the weights on every load."""
    profile_dir: Path | None = None
    """``CONFROUTE_PROFILE_DIR``: an extra directory searched for calibration profiles."""
    probe_dir: Path | None = None
    """``CONFROUTE_PROBE_DIR``: an extra directory searched for probe files."""
    data_dir: Path | None = None
    """``CONFROUTE_DATA_DIR``: the benchmark data directory."""


def environment(environ: Mapping[str, str] | None = None) -> Environment:
    """The ``CONFROUTE_*`` variables as they are now (read at each call; nothing is cached)."""
    env = os.environ if environ is None else environ

    def text(name: str) -> str | None:
        value = env.get(name)
        return value if value else None

    values: dict[str, Any] = {
        "slm": text("CONFROUTE_SLM"),
        "slm_backend": text("CONFROUTE_SLM_BACKEND"),
        "slm_api_base": text("CONFROUTE_SLM_API_BASE"),
        "slm_api_key": text("CONFROUTE_SLM_API_KEY"),
        "llm": text("CONFROUTE_LLM"),
        "api_base": text("CONFROUTE_API_BASE"),
        "api_key": text("CONFROUTE_API_KEY"),
        "cache_dir": text("CONFROUTE_CACHE"),
        "profile_dir": text("CONFROUTE_PROFILE_DIR"),
        "probe_dir": text("CONFROUTE_PROBE_DIR"),
        "data_dir": text("CONFROUTE_DATA_DIR"),
    }
    values = {k: v for k, v in values.items() if v is not None}
    values["quiet"] = env.get("CONFROUTE_QUIET") == "1"
    values["verify_full"] = env.get("CONFROUTE_VERIFY") == "full"
    try:
        return Environment(**values)
    except ValidationError as error:
        names = sorted({str(e["loc"][0]) for e in error.errors() if e["loc"]})
        variables = ", ".join(f"CONFROUTE_{n.upper()}" for n in names)
        raise ConfigurationError(
            f"Invalid environment variable(s) {variables}: CONFROUTE_SLM_BACKEND must be "
            "'auto', 'transformers', 'llama.cpp' or 'server'; the URLs must be http(s) URLs."
        ) from None


def from_environment(
    name: Literal["api_base", "api_key", "slm_api_base", "slm_api_key"],
) -> Callable[[], Any]:
    """A field default factory reading one ``CONFROUTE_*`` value when the object is built.

    ``api_base`` / ``api_key`` are the strong model's (``CONFROUTE_API_BASE`` /
    ``CONFROUTE_API_KEY``), ``slm_api_base`` / ``slm_api_key`` the SLM server's. Both
    adapters' models use it for their fields of the same meaning.
    """

    def read() -> Any:
        return getattr(environment(), name)

    return read
