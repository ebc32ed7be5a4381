"""One question asked as a tool call: what the agent tools and the MCP server share.

An agent hands the router a ``question`` and, optionally, a ``context`` the answer must rest on
(put in a system message, as the RAG examples do). In ``"route"`` mode the router answers and
escalates when unsure; in ``"local"`` mode only the local model answers and the result says how
sure it was and whether the policy would have escalated: the calling agent decides. The result
is the answer text and a :class:`ToolDecision`, which never holds a secret.

The LangChain tool (``langchain_confroute.ConfRouteTool``), the LlamaIndex tool
(``llamaindex_confroute.confroute_tool``) and ``confroute mcp`` are thin wrappers over
:func:`ask` / :func:`aask`.

Example:
    >>> messages = tool_messages("How long does the battery last?", "It lasts 14 hours.")
    >>> [m["role"] for m in messages], messages[0]["content"].endswith("It lasts 14 hours.")
    (['system', 'user'], True)
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from confroute.decision import DecisionReason, RoutingDecision
from confroute.errors import ConfigurationError, InvalidRequestError
from confroute.redaction import mask_secret
from confroute.response import RoutedResponse
from confroute.router import ConfRouter

__all__ = [
    "CONTEXT_INSTRUCTION",
    "AskArguments",
    "ToolDecision",
    "ToolMode",
    "aask",
    "as_json",
    "ask",
    "check_mode",
    "local_only",
    "masked",
    "tool_decision",
    "tool_messages",
]

ToolMode = Literal["route", "local"]
"""``"route"``: answer and escalate when unsure; ``"local"``: the local model only."""

CONTEXT_INSTRUCTION = "Answer the question using only this context:\n{context}"
"""The system message that carries a tool call's ``context`` (the RAG examples' wording)."""


class AskArguments(BaseModel):
    """The arguments of every confroute tool: the same names in LangChain, LlamaIndex and MCP."""

    question: str = Field(min_length=1, description="The question to answer.")
    context: str | None = Field(
        default=None,
        description="Text the answer must rest on (for example retrieved passages); optional.",
    )

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("question must not be blank: pass the question to answer")
        return value


class ToolDecision(BaseModel):
    """The routing decision as an agent tool reports it (JSON-ready; never a secret).

    ``escalated`` says whether the strong model was asked; ``would_escalate`` whether the
    policy found the local answer unsure (in ``"local"`` mode the agent decides what to do with
    that: the answer is the local model's either way).
    """

    model_config = ConfigDict(frozen=True)

    mode: ToolMode
    """The mode the call ran in."""
    confidence: float | None
    """Confidence of the local answer in [0, 1]; None when it could not be computed."""
    threshold: float
    """The threshold the confidence was compared with."""
    escalated: bool
    """Whether the strong model was asked."""
    would_escalate: bool
    """Whether the policy would escalate the local answer (True whenever ``escalated``)."""
    answered_by: str
    """The model whose answer was returned."""
    reason: DecisionReason
    """Why it was kept or escalated (``local_only``: unsure, but kept local)."""
    estimator: str
    """The uncertainty estimator whose confidence was used."""
    cost: float | None
    """Cost in USD of the escalation (0 for local models; None when unknown)."""
    local_model: str
    """Name of the local model."""
    remote_model: str | None = None
    """The strong model asked, when escalated."""
    error: str | None = None
    """What went wrong with the escalation, when it failed (the local answer is returned)."""
    decision_id: str
    """The id of the :class:`~confroute.decision.RoutingDecision` (the one the hooks saw)."""


def check_mode(mode: str) -> ToolMode:
    """``mode`` checked to be ``"route"`` or ``"local"``.

    Raises:
        ConfigurationError: Any other value.
    """
    if mode == "route":
        return "route"
    if mode == "local":
        return "local"
    raise ConfigurationError(
        f"mode must be 'route' (answer, escalating when unsure) or 'local' (the local model "
        f"only; the result says how sure it is), got {mode!r}."
    )


def tool_messages(question: str, context: str | None = None) -> list[dict[str, str]]:
    """The conversation a tool call asks: the context as a system message, then the question.

    Raises:
        InvalidRequestError: ``question`` is not a string or is blank, or ``context`` is not a
            string.
    """
    if not isinstance(question, str) or not question.strip():
        raise InvalidRequestError(
            f"question must be a non-empty string (the question to answer), got {question!r}."
        )
    if context is not None and not isinstance(context, str):
        raise InvalidRequestError(
            f"context must be a string (the text the answer must rest on) or null, got "
            f"{type(context).__name__}."
        )
    messages = [{"role": "user", "content": question}]
    if context is not None and context.strip():
        system = CONTEXT_INSTRUCTION.format(context=context.strip())
        messages.insert(0, {"role": "system", "content": system})
    return messages


def local_only(router: ConfRouter) -> ConfRouter:
    """A copy of ``router`` that never escalates (models, estimators, policy and hooks shared).

    A would-be escalation is reported with reason ``local_only``.
    """
    # ConfRouter has no public "without escalation" copy yet; with_hooks() is its public copy
    # and ``escalation`` its public attribute (None means local-only, as ConfRouter(..., None)).
    copy = router.with_hooks()
    copy.escalation = None
    return copy


def _secrets(router: ConfRouter) -> tuple[SecretStr | None, ...]:
    """Every secret the router holds: the settings' and the escalation target's key and URL."""
    target = router.escalation
    return (
        router.settings.api_key,
        router.settings.api_base,
        getattr(target, "api_key", None),
        getattr(target, "api_base", None),
    )


def masked(text: str, router: ConfRouter) -> str:
    """``text`` with every secret of ``router`` masked (a last guard on what a tool returns)."""
    secrets = [s for s in _secrets(router) if isinstance(s, SecretStr)]
    return mask_secret(text, *secrets)


def tool_decision(decision: RoutingDecision, mode: ToolMode, router: ConfRouter) -> ToolDecision:
    """The tool's view of a routing decision (its error text masked once more)."""
    return ToolDecision(
        mode=mode,
        confidence=decision.confidence,
        threshold=decision.threshold,
        escalated=decision.escalated,
        would_escalate=decision.escalated or decision.reason == "local_only",
        answered_by=decision.answered_by,
        reason=decision.reason,
        estimator=decision.estimator,
        cost=decision.cost_usd,
        local_model=decision.local_model,
        remote_model=decision.remote_model,
        error=None if decision.error is None else masked(decision.error, router),
        decision_id=decision.id,
    )


def _finish(
    response: RoutedResponse, mode: ToolMode, router: ConfRouter
) -> tuple[str, ToolDecision]:
    return masked(response.text, router), tool_decision(response.decision, mode, router)


def _engine(router: ConfRouter, mode: str) -> tuple[ConfRouter, ToolMode]:
    checked = check_mode(mode)
    return (local_only(router) if checked == "local" else router), checked


def ask(
    router: ConfRouter,
    question: str,
    context: str | None = None,
    *,
    mode: str = "route",
    max_new_tokens: int | None = None,
) -> tuple[str, ToolDecision]:
    """Answer ``question`` (resting on ``context``) with the router; the answer and decision.

    Raises:
        InvalidRequestError: The question is blank (or the prompt does not fit with no strong
            model to take it).
        ConfigurationError: ``mode`` is neither ``"route"`` nor ``"local"``.
        EscalationError: Escalation failed and the router's ``on_escalation_error="raise"``.
    """
    engine, checked = _engine(router, mode)
    response = engine.route(tool_messages(question, context), max_new_tokens=max_new_tokens)
    return _finish(response, checked, router)


async def aask(
    router: ConfRouter,
    question: str,
    context: str | None = None,
    *,
    mode: str = "route",
    max_new_tokens: int | None = None,
) -> tuple[str, ToolDecision]:
    """Async form of :func:`ask`."""
    engine, checked = _engine(router, mode)
    response = await engine.aroute(tool_messages(question, context), max_new_tokens=max_new_tokens)
    return _finish(response, checked, router)


def as_json(decision: ToolDecision) -> dict[str, Any]:
    """The decision as a JSON-ready dict."""
    return decision.model_dump(mode="json")
