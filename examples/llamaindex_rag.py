"""Retrieval-augmented answers with LlamaIndex and confroute, fully offline.

A ``VectorStoreIndex`` over a few local documents (embedded with the bundled all-MiniLM-L6-v2),
queried through ``as_query_engine``; the bundled 0.5B model answers and escalates to the bundled
1.5B model only when unsure. Each routing decision is printed from a ``RoutingDecisionEvent``.

Run: python examples/llamaindex_rag.py
"""

from __future__ import annotations

from typing import Any

from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.instrumentation import (  # type: ignore[attr-defined]
    get_dispatcher,  # re-exported without __all__, which strict mypy treats as private
)
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent

from llamaindex_confroute import ConfRouteLLM, RoutingDecisionEvent, TransformersEmbedding

DOCUMENTS = [
    "The Harbor Street bakery opens at 6:30 every morning and closes at 14:00. "
    "It is closed on Mondays.",
    "The city library lends up to 12 books at a time, for 21 days each. "
    "Late returns cost 0.20 euro per book per day.",
    "Bus line 42 runs from the central station to the airport every 15 minutes, "
    "between 5:00 and 23:30. The trip takes 35 minutes.",
    "The municipal swimming pool is 50 metres long and has 8 lanes. "
    "Entry costs 4.50 euro for adults and 2 euro for children.",
]

QUESTIONS = [
    "At what time does the Harbor Street bakery open?",
    "How many books can I borrow from the city library at a time?",
]


class PrintDecisions(BaseEventHandler):
    """Print every routing decision."""

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, RoutingDecisionEvent):
            d = event.decision
            route = f"escalated to {d.answered_by}" if d.escalated else "kept local"
            confidence = "n/a" if d.confidence is None else f"{d.confidence:.3f}"
            print(f"   [{route}] {d.estimator} confidence={confidence} threshold={d.threshold}")


def build_query_engine(llm: ConfRouteLLM, embed_model: TransformersEmbedding) -> BaseQueryEngine:
    """Index the documents and return a query engine that answers from the best two."""
    documents = [Document(text=text) for text in DOCUMENTS]
    index = VectorStoreIndex.from_documents(documents, embed_model=embed_model)
    return index.as_query_engine(llm=llm, similarity_top_k=2)


def main() -> None:
    get_dispatcher().add_event_handler(PrintDecisions())
    # grounded_answer scores a free-text answer against the retrieved passages in the prompt:
    # the share of the answer copied from them, how sure the 0.5B was where it copied from,
    # and how sure it was of the words it did not copy. "confident" means the answer is
    # mostly copied from the passages with sure choices; an answer the model made up (low
    # probability, not in the passages) falls below the threshold and goes to the 1.5B.
    llm = ConfRouteLLM(max_tokens=48, estimator="grounded_answer")
    Settings.llm, Settings.embed_model = llm, TransformersEmbedding()
    engine = build_query_engine(llm, Settings.embed_model)
    for question in QUESTIONS:
        print(f"Q: {question}")
        response = engine.query(question)
        print(f"A: {str(response).strip()}")
        print(f"   from: {response.source_nodes[0].node.get_content()[:50]}...")


if __name__ == "__main__":
    main()
