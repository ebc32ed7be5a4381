"""The ``confroute_decision`` custom event, and a callback handler that logs it to a file.

Every call of :class:`~langchain_confroute.ChatConfRoute` dispatches one custom event named
:data:`DECISION_EVENT` through LangChain's callback manager, attached to the chat model's run.
Callback handlers receive it in ``on_custom_event``; ``astream_events(version="v2")`` yields it
as an ``on_custom_event`` event. Its data is the routing decision as a JSON-ready dict.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any
from uuid import UUID

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    BaseCallbackHandler,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from pydantic import BaseModel, ConfigDict

from confroute.decision import RoutingDecision

__all__ = [
    "DECISION_EVENT",
    "DecisionCollector",
    "EscalationLogSummary",
    "EscalationLogger",
    "adispatch_decision",
    "claim_failure",
    "dispatch_decision",
    "summarize_escalation_log",
]

logger = logging.getLogger(__name__)

DECISION_EVENT = "confroute_decision"
"""Name of the custom event that carries each routing decision."""


def _parent_of(
    run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun,
) -> dict[str, Any]:
    """The handlers, tags and metadata of the chat model's run, for a child callback manager."""
    return {
        "handlers": run_manager.handlers,
        "inheritable_handlers": run_manager.inheritable_handlers,
        "parent_run_id": run_manager.parent_run_id,
        "tags": run_manager.tags,
        "inheritable_tags": run_manager.inheritable_tags,
        "metadata": run_manager.metadata,
        "inheritable_metadata": run_manager.inheritable_metadata,
    }


def claim_failure(error: BaseException, reporter: object | None) -> RoutingDecision | None:
    """The decision a failed escalation carries, for ``reporter`` to send (once per error).

    Returns None when there is no reporter, no decision, or the decision was claimed before;
    otherwise marks ``error`` so that no outer layer (``ChatConfRoute.stream``) sends it again.
    """
    decision = getattr(error, "decision", None)
    if reporter is None or decision is None or getattr(error, "confroute_dispatched", False):
        return None
    error.confroute_dispatched = True  # type: ignore[attr-defined]
    return RoutingDecision.model_validate(decision)


def dispatch_decision(
    run_manager: CallbackManagerForLLMRun | None, decision: RoutingDecision | None
) -> None:
    """Send the decision to the handlers of the chat model's run (sync form; None: nothing)."""
    if decision is None or run_manager is None or not run_manager.handlers:
        return
    manager = CallbackManager(**_parent_of(run_manager))
    manager.on_custom_event(
        DECISION_EVENT, decision.model_dump(mode="json"), run_id=run_manager.run_id
    )


async def adispatch_decision(
    run_manager: AsyncCallbackManagerForLLMRun | None, decision: RoutingDecision | None
) -> None:
    """Send the decision to the handlers of the chat model's run (async form; None: nothing)."""
    if decision is None or run_manager is None or not run_manager.handlers:
        return
    manager = AsyncCallbackManager(**_parent_of(run_manager))
    await manager.on_custom_event(
        DECISION_EVENT, decision.model_dump(mode="json"), run_id=run_manager.run_id
    )


class EscalationLogger(BaseCallbackHandler):
    """Append one JSON line per routing decision to a file.

    Each line is the :class:`~confroute.decision.RoutingDecision` (re-validated, so only its
    fields are written: models, confidence, threshold, reason, latencies, tokens, cost; never a
    prompt, an answer or a key) plus the LangChain ``run_id``. Safe to share between threads.

    Example:
        >>> handler = EscalationLogger("decisions.jsonl")  # doctest: +SKIP
        >>> llm.invoke("2+2?", config={"callbacks": [handler]})  # doctest: +SKIP
        >>> summarize_escalation_log("decisions.jsonl").escalated  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str], *, only_escalated: bool = False) -> None:
        """Log to ``path`` (created with its parent folders when missing).

        Args:
            path: The JSON Lines file to append to.
            only_escalated: Write only decisions that escalated.
        """
        super().__init__()
        self.path = Path(path)
        self.only_escalated = only_escalated
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        """The file it writes to."""
        return f"EscalationLogger(path={str(self.path)!r}, only_escalated={self.only_escalated})"

    def on_custom_event(
        self,
        name: str,
        data: Any,
        *,
        run_id: UUID,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Write the decision carried by a ``confroute_decision`` event; ignore other events."""
        if name != DECISION_EVENT:
            return
        decision = RoutingDecision.model_validate(data)
        if self.only_escalated and not decision.escalated:
            return
        record = {"run_id": str(run_id), **decision.model_dump(mode="json")}
        line = json.dumps(record, sort_keys=True)
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        logger.debug("Logged decision %s to %s", decision.id, self.path)


class DecisionCollector(BaseCallbackHandler):
    """Keep the routing decision of every ChatConfRoute call of a run, in order.

    Example:
        >>> collector = DecisionCollector()
        >>> agent.invoke(inputs, config={"callbacks": [collector]})  # doctest: +SKIP
        >>> [d["escalated"] for d in collector.decisions]  # doctest: +SKIP
    """

    def __init__(self) -> None:
        """Start with no decisions."""
        super().__init__()
        self.decisions: list[dict[str, Any]] = []
        """The ``confroute_decision`` data (the decision dicts), as they arrived."""

    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        """Keep the decision carried by a ``confroute_decision`` event; ignore other events."""
        if name == DECISION_EVENT:
            self.decisions.append(data)


class EscalationLogSummary(BaseModel):
    """Totals over a decision log written by :class:`EscalationLogger`."""

    model_config = ConfigDict(frozen=True)

    calls: int
    """Decisions in the log."""
    escalated: int
    """Decisions that escalated."""
    escalation_rate: float
    """``escalated / calls`` (0 for an empty log)."""
    failed_escalations: int
    """Escalations that failed (the local answer was returned or an error raised)."""
    cost_usd: float
    """Summed escalation cost; unknown costs count as 0."""
    unknown_cost: int
    """Escalations whose cost LiteLLM's cost map did not know."""
    reasons: dict[str, int]
    """How many decisions had each reason."""


def summarize_escalation_log(path: str | os.PathLike[str]) -> EscalationLogSummary:
    """Count calls, escalations and cost in a log written by :class:`EscalationLogger`."""
    records = [
        json.loads(line)
        for line in Path(path).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    escalated = [r for r in records if r.get("escalated")]
    return EscalationLogSummary(
        calls=len(records),
        escalated=len(escalated),
        escalation_rate=len(escalated) / len(records) if records else 0.0,
        failed_escalations=sum(1 for r in escalated if r.get("error")),
        cost_usd=sum(float(r.get("cost_usd") or 0.0) for r in escalated),
        unknown_cost=sum(1 for r in escalated if r.get("cost_usd") is None),
        reasons=dict(Counter(str(r.get("reason")) for r in records)),
    )
