"""LlamaIndex adapter of confroute.

``ConfRouteLLM`` is a ``FunctionCallingLLM`` that answers with a small local model and escalates
to a strong model only when unsure.

>>> from llama_index.core import Settings
>>> from llamaindex_confroute import ConfRouteLLM
>>> Settings.llm = ConfRouteLLM()  # doctest: +SKIP  (bundled 0.5B -> bundled 1.5B, offline)
"""

from __future__ import annotations

from llamaindex_confroute.embedding import TransformersEmbedding
from llamaindex_confroute.events import RoutingDecisionEvent
from llamaindex_confroute.llm import DEFAULT_STRONG_MODEL, ConfRouteLLM
from llamaindex_confroute.responses import DECISION_KEY, routing_decision
from llamaindex_confroute.tool import ConfRouteQueryTool, confroute_tool

__all__ = [
    "DECISION_KEY",
    "DEFAULT_STRONG_MODEL",
    "ConfRouteLLM",
    "ConfRouteQueryTool",
    "RoutingDecisionEvent",
    "TransformersEmbedding",
    "confroute_tool",
    "routing_decision",
]
