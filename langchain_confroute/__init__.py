"""LangChain adapter of confroute: a chat model that answers locally and escalates when unsure.

>>> from langchain_confroute import ChatConfRoute, EscalationLogger  # doctest: +SKIP
>>> llm = ChatConfRoute(max_tokens=64)  # doctest: +SKIP
"""

from __future__ import annotations

from langchain_confroute.chat_model import ChatConfRoute
from langchain_confroute.events import (
    DECISION_EVENT,
    DecisionCollector,
    EscalationLogger,
    EscalationLogSummary,
    summarize_escalation_log,
)
from langchain_confroute.messages import DECISION_KEY
from langchain_confroute.tool import ConfRouteTool, ToolInputError

__all__ = [
    "DECISION_EVENT",
    "DECISION_KEY",
    "ChatConfRoute",
    "ConfRouteTool",
    "DecisionCollector",
    "EscalationLogSummary",
    "EscalationLogger",
    "ToolInputError",
    "summarize_escalation_log",
]
