"""Every prompt the estimators add to a conversation, in one place.

Changing a template changes the estimator's output: calibration profiles record the estimator's
parameters, and these strings are part of them through :meth:`Estimator.params`.
"""

from __future__ import annotations

__all__ = [
    "P_TRUE_FALSE_WORDS",
    "P_TRUE_QUESTION",
    "P_TRUE_TRUE_WORDS",
    "VERBALIZED_1S_INSTRUCTION",
    "VERBALIZED_2S_QUESTION",
]

P_TRUE_QUESTION = "Is your answer above true or false? Reply with one word: True or False."
"""Follow-up turn of ``p_true``: the next token's distribution is read, nothing is generated."""

P_TRUE_TRUE_WORDS: frozenset[str] = frozenset({"true"})
"""Words (case-folded, whitespace stripped) whose tokens count as "True" in ``p_true``."""

P_TRUE_FALSE_WORDS: frozenset[str] = frozenset({"false"})
"""Words (case-folded, whitespace stripped) whose tokens count as "False" in ``p_true``."""

VERBALIZED_1S_INSTRUCTION = (
    "\n\nAnswer the question. Then, on a new last line, write 'Confidence: N' where N is a "
    "number from 0 to 100 saying how likely your answer is to be correct."
)
"""Appended to the last user message by ``verbalized_1s``; its line is stripped from the answer."""

VERBALIZED_2S_QUESTION = (
    "How confident are you that your answer above is correct? Reply with only a number from "
    "0 to 100."
)
"""Follow-up turn of ``verbalized_2s``; a few tokens are generated and parsed."""
