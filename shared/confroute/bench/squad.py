"""SQuAD v1.1 for the benchmark: the loader, the RAG prompt and the official grading.

The grader follows the official SQuAD v1.1 evaluation script (``evaluate-v1.1.py``):
answers are normalised (lower-case, punctuation removed, the articles *a*, *an*, *the*
removed, whitespace collapsed), then exact match and token F1 are taken against every
reference and the best counts. An answer is *correct* when its F1 is at least
:data:`CORRECT_F1`. The official script is a standalone file, not a package; the Hugging Face
``evaluate`` metric downloads its code from the hub, which the kit may not use, so the few
lines are written out here.

>>> squad_scores("The Denver Broncos.", ["Denver Broncos"])
(1.0, 1.0)
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from confroute.bench.items import BenchItem

__all__ = [
    "CORRECT_F1",
    "RAG_SYSTEM",
    "exact_match",
    "load_squad",
    "normalize_answer",
    "rag_messages",
    "squad_correct",
    "squad_scores",
    "token_f1",
]

CORRECT_F1 = 0.5
"""An answer is graded correct when its best token F1 reaches this value."""

RAG_SYSTEM = (
    "Answer the question using only the context. Reply briefly with just the answer "
    "(a few words copied from the context), no explanation."
)
"""The system message of the RAG prompt."""

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def load_squad(root: Path) -> Iterator[BenchItem]:
    """The SQuAD v1.1 dev questions from ``root/SQuAD/dev-v1.1.json``, in file order.

    Each item's ``passage`` is its context paragraph, ``answer`` the first reference and
    ``aliases`` the other distinct references; ``item_id`` is SQuAD's question id.
    """
    with (root / "SQuAD" / "dev-v1.1.json").open(encoding="utf-8") as handle:
        data: dict[str, Any] = json.load(handle)
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                references = list(dict.fromkeys(a["text"].strip() for a in qa["answers"]))
                yield BenchItem(
                    item_id=qa["id"],
                    dataset="squad",
                    question=qa["question"].strip(),
                    answer=references[0],
                    answer_format="text",
                    passage=paragraph["context"],
                    aliases=tuple(references[1:]),
                )


def rag_messages(item: BenchItem) -> list[dict[str, Any]]:
    """The RAG conversation for ``item``: the system instruction, then context and question."""
    user = f"Context: {item.passage.strip()}\n\nQuestion: {item.question}"
    return [{"role": "system", "content": RAG_SYSTEM}, {"role": "user", "content": user}]


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower-case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised texts are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """Token F1 of the normalised texts (0.0 when they share no token, as in SQuAD v1.1)."""
    predicted = normalize_answer(prediction).split()
    gold = normalize_answer(reference).split()
    same = sum((Counter(predicted) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision = same / len(predicted)
    recall = same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_scores(prediction: str, references: Sequence[str]) -> tuple[float, float]:
    """``(exact match, F1)`` of ``prediction``, each the best over ``references``."""
    if not references:
        return 0.0, 0.0
    return (
        max(exact_match(prediction, r) for r in references),
        max(token_f1(prediction, r) for r in references),
    )


def squad_correct(prediction: str, item: BenchItem) -> bool:
    """Whether ``prediction`` reaches :data:`CORRECT_F1` against any of ``item``'s answers."""
    return squad_scores(prediction, (item.answer, *item.aliases))[1] >= CORRECT_F1
