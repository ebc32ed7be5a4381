"""One benchmark question, as every dataset loader yields it.

>>> BenchItem("0", "demo", "Is it?", "yes", "yes_no").num_options
2
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["LETTERS", "AnswerFormat", "BenchItem"]

AnswerFormat = Literal["letter", "yes_no", "number", "text"]
"""How an answer is written and graded."""

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class BenchItem:
    """One benchmark question.

    Attributes:
        item_id: Stable id, unique within the dataset (from the file, or the row index).
        dataset: Dataset name (a key of :data:`DATASETS`).
        question: The question text (for multiple choice, without the options).
        options: Option texts, in order (empty unless ``answer_format == "letter"``).
        answer: Gold answer: an option letter, ``"yes"``/``"no"``, a number as text, or text.
        answer_format: ``letter``, ``yes_no``, ``number`` or ``text``.
        passage: Context to read before the question (BoolQ), or ``""``.
        aliases: Other accepted answers (free text only).
    """

    item_id: str
    dataset: str
    question: str
    answer: str
    answer_format: AnswerFormat
    options: tuple[str, ...] = ()
    passage: str = ""
    aliases: tuple[str, ...] = field(default=())

    @property
    def num_options(self) -> int:
        """Number of options (2 for yes/no, 0 for numbers and free text)."""
        if self.answer_format == "letter":
            return len(self.options)
        return 2 if self.answer_format == "yes_no" else 0

    @property
    def letters(self) -> str:
        """The option letters in use (``"ABCD"`` for four options)."""
        return LETTERS[: len(self.options)]
