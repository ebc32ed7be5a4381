"""Estimators that ask the local model one more question after its answer.

The follow-up turn is the conversation, the answer, and one new user message. When the answer
was generated with ``GenerationConfig(keep_cache=True)`` (the router does this whenever such an
estimator is chosen), the key/value cache of prompt and answer is reused, so only the new turn
(a few dozen tokens) is prefilled instead of the whole conversation.

A backend without a tokenizer (``capabilities.tokenizer`` False: a model behind an HTTP API)
is asked by messages through :class:`~confroute.backend.MessageFollowUp`: p_true reads the
top-k alternatives of the reply's first token (:func:`p_true_from_alternatives`), verbalized
2-step the greedy reply. On the async routing path that call is awaited where the backend has
:class:`~confroute.backend.AsyncMessageFollowUp` (the server backend does).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from confroute.backend import AsyncMessageFollowUp, MessageFollowUp
from confroute.errors import ConfigurationError, LocalBackendError
from confroute.estimators.base import (
    EstimationContext,
    Estimator,
    Requirement,
    ashared_confidence,
)
from confroute.estimators.prompts import (
    P_TRUE_FALSE_WORDS,
    P_TRUE_QUESTION,
    P_TRUE_TRUE_WORDS,
    VERBALIZED_2S_QUESTION,
)
from confroute.estimators.verbalized import parse_confidence
from confroute.generation import Generation, TokenAlternative

if TYPE_CHECKING:
    from confroute.backend import LocalBackend

__all__ = [
    "PTrue",
    "Verbalized2S",
    "afollow_ups",
    "answer_token_ids",
    "follow_up_messages",
    "p_true_from_alternatives",
    "p_true_from_logprobs",
]

logger = logging.getLogger(__name__)

_STRIP = " \t\n.,!:;'\"*`()"


def answer_token_ids(
    vocabulary: Iterable[tuple[str, int]], words: Collection[str], skip: Collection[int] = ()
) -> list[int]:
    """Ids of every token that spells one of ``words`` (any case, leading space, punctuation).

    Args:
        vocabulary: ``(token string, id)`` pairs, as ``tokenizer.get_vocab().items()`` gives
            them; byte-level (``Ġ``) and SentencePiece (``▁``) space markers are understood.
        words: Lower-case words, for example ``{"true"}``.
        skip: Ids never to count (special tokens).
    """
    ids = []
    for token, token_id in vocabulary:
        if token_id in skip:
            continue
        text = token.replace("\u0120", " ").replace("\u2581", " ").replace("\u010a", "\n")
        if text.strip(_STRIP).lower() in words and text.strip(_STRIP):
            ids.append(token_id)
    return sorted(ids)


def p_true_from_logprobs(
    logprobs: np.ndarray, true_ids: Collection[int], false_ids: Collection[int]
) -> float | None:
    """``p(True) / (p(True) + p(False))``, each summed over all its token variants.

    Renormalising over the variants matters: the mass splits over ``True``, `` True``,
    ``true`` and the like, and only part of it lands on the two words at all.

    Returns:
        The confidence, or None when either list is empty or both words have no mass.
    """
    if not true_ids or not false_ids:
        return None
    values = np.asarray(logprobs, dtype=np.float64)
    log_true = float(np.logaddexp.reduce(values[list(true_ids)]))
    log_false = float(np.logaddexp.reduce(values[list(false_ids)]))
    if not (math.isfinite(log_true) or math.isfinite(log_false)):
        return None
    if not math.isfinite(log_false):
        return 1.0
    if not math.isfinite(log_true):
        return 0.0
    return 1.0 / (1.0 + math.exp(log_false - log_true))


def p_true_from_alternatives(
    alternatives: Sequence[TokenAlternative],
) -> tuple[float | None, float, str | None]:
    """``p(True) / (p(True) + p(False))`` from the top-k alternatives of one token.

    For a backend that reports only the top-k (an HTTP API): each word's variants are found
    among the alternatives' strings by :func:`answer_token_ids`'s rule and their
    probabilities summed. A word with no variant among them ranks below every listed
    alternative, so its probability is at most the least likely one's: that bound stands in
    for it, and a word missing from the list never makes the confidence exactly 0 or 1.

    Returns:
        The confidence (None when neither word is among the alternatives), the probability
        mass seen on both words, and which word was bounded (``"true"``, ``"false"`` or None).
    """
    pairs = [(alt.token, index) for index, alt in enumerate(alternatives)]
    true_mass = math.fsum(
        math.exp(alternatives[i].logprob) for i in answer_token_ids(pairs, P_TRUE_TRUE_WORDS)
    )
    false_mass = math.fsum(
        math.exp(alternatives[i].logprob) for i in answer_token_ids(pairs, P_TRUE_FALSE_WORDS)
    )
    seen = true_mass + false_mass
    if seen <= 0.0:
        return None, 0.0, None
    bound = min(math.exp(alt.logprob) for alt in alternatives)
    bounded: str | None = None
    if false_mass <= 0.0:
        false_mass, bounded = bound, "false"
    elif true_mass <= 0.0:
        true_mass, bounded = bound, "true"
    return true_mass / (true_mass + false_mass), seen, bounded


def _model_of(context: EstimationContext, name: str) -> LocalBackend:
    if context.local_model is None:
        raise ConfigurationError(
            f"The {name!r} estimator asks the local model a follow-up question; pass "
            "EstimationContext(local_model=...) (ConfRouter does this)."
        )
    return context.local_model


def follow_up_messages(
    generation: Generation, context: EstimationContext, question: str
) -> list[dict[str, Any]]:
    """The follow-up turn: the conversation, the answer, and ``question`` as a user message."""
    return [
        *context.messages,
        {"role": "assistant", "content": generation.text},
        {"role": "user", "content": question},
    ]


def _by_messages(model: LocalBackend, name: str) -> MessageFollowUp | None:
    """``model`` when it is asked by messages (no tokenizer), else None.

    Raises:
        ConfigurationError: ``model`` has no tokenizer and no :class:`MessageFollowUp` calls.
    """
    if model.capabilities.tokenizer:
        return None
    if not isinstance(model, MessageFollowUp):
        raise ConfigurationError(
            f"The {name!r} estimator asks a follow-up question, and {model.name!r} has no "
            "tokenizer and no follow_up_alternatives()/follow_up_reply() "
            "(confroute.backend.MessageFollowUp); choose a single-pass estimator."
        )
    return model


def follow_up_ids(
    generation: Generation, context: EstimationContext, question: str, name: str
) -> tuple[LocalBackend, list[int], Any]:
    """The token ids of conversation + answer + ``question``, and the answer's kept cache.

    The cache is the generation's ``extras["prefix"]`` (None when none was kept); only the
    backend that wrote it reads it.
    """
    model = _model_of(context, name)
    messages = follow_up_messages(generation, context, question)
    ids = model.encode(model.render(messages, context.tools))
    prefix = generation.extras.get("prefix")
    return model, ids, prefix


class PTrue(Estimator):
    """Ask the model whether its answer is true; confidence = renormalised ``p(True)``.

    ``p(True) / (p(True) + p(False))`` from the next-token distribution after
    :data:`~confroute.estimators.prompts.P_TRUE_QUESTION`, each word summed over all the
    tokenizer's variants of it (case, leading space, punctuation). One extra prefill of the
    follow-up turn; nothing is generated.
    """

    name: ClassVar[str] = "p_true"
    requires: ClassVar[frozenset[str]] = frozenset({Requirement.FOLLOW_UP})

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str], tuple[list[int], list[int]]] = {}

    def variant_ids(self, model: LocalBackend) -> tuple[list[int], list[int]]:
        """Token ids of the "True" and "False" variants in ``model``'s vocabulary."""
        key = (model.name, model.fingerprint)
        if key not in self._ids:
            vocabulary = model.vocabulary()
            special = model.special_token_ids()
            true_ids = answer_token_ids(vocabulary, P_TRUE_TRUE_WORDS, special)
            false_ids = answer_token_ids(vocabulary, P_TRUE_FALSE_WORDS, special)
            if not true_ids or not false_ids:
                raise ConfigurationError(
                    f"The tokenizer of {model.name!r} has no single token for 'True' or "
                    "'False', so p_true cannot be read; choose another estimator."
                )
            self._ids[key] = (true_ids, false_ids)
        return self._ids[key]

    def prepare(self, local_model: LocalBackend | None) -> None:
        """Find the answer-word tokens once (a backend without a tokenizer has none to find)."""
        if local_model is not None and _by_messages(local_model, self.name) is None:
            self.variant_ids(local_model)

    def confidence(self, generation: Generation, context: EstimationContext) -> float | None:
        """Renormalised probability that the model calls its answer true."""
        asked = _by_messages(_model_of(context, self.name), self.name)
        if asked is not None:
            messages = follow_up_messages(generation, context, P_TRUE_QUESTION)
            return self._read(asked.follow_up_alternatives(messages, context.tools), context)
        model, ids, prefix = follow_up_ids(generation, context, P_TRUE_QUESTION, self.name)
        true_ids, false_ids = self.variant_ids(model)
        logprobs = model.next_token_logprobs(ids, prefix)
        mass = float(np.exp(logprobs[true_ids]).sum() + np.exp(logprobs[false_ids]).sum())
        context.extras["p_true_mass"] = mass
        logger.debug("p_true: mass on True/False variants %.3f", mass)
        return p_true_from_logprobs(logprobs, true_ids, false_ids)

    async def aconfidence(self, generation: Generation, context: EstimationContext) -> float | None:
        """Async form of :meth:`confidence`: a server's follow-up call is awaited."""
        asked = _by_messages(_model_of(context, self.name), self.name)
        if not isinstance(asked, AsyncMessageFollowUp):
            return await super().aconfidence(generation, context)
        messages = follow_up_messages(generation, context, P_TRUE_QUESTION)
        return self._read(await asked.afollow_up_alternatives(messages, context.tools), context)

    @staticmethod
    def _read(alternatives: Sequence[TokenAlternative], context: EstimationContext) -> float | None:
        """p_true from the top-k alternatives of a follow-up reply's first token."""
        value, seen, bounded = p_true_from_alternatives(alternatives)
        context.extras["p_true_mass"] = seen
        if bounded is not None:
            context.extras["p_true_bounded"] = bounded
        logger.debug("p_true: mass on True/False among the top-%d %.3f", len(alternatives), seen)
        return value

    def params(self) -> dict[str, Any]:
        """The question is part of the method."""
        return {"question": P_TRUE_QUESTION}


class Verbalized2S(Estimator):
    """Answer first; a second turn asks for a 0-100 confidence, which is parsed.

    Up to ``max_new_tokens`` tokens of the reply are generated greedily from the kept cache.
    An unparseable reply gives None (lowest confidence).
    """

    name: ClassVar[str] = "verbalized_2s"
    requires: ClassVar[frozenset[str]] = frozenset({Requirement.FOLLOW_UP})

    def __init__(self, max_new_tokens: int = 8) -> None:
        """Args: max_new_tokens: length cap of the confidence reply."""
        if max_new_tokens < 1:
            raise ConfigurationError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
        self.max_new_tokens = max_new_tokens

    def confidence(self, generation: Generation, context: EstimationContext) -> float | None:
        """The confidence the model states in the second turn, or None."""
        asked = _by_messages(_model_of(context, self.name), self.name)
        if asked is not None:
            messages = follow_up_messages(generation, context, VERBALIZED_2S_QUESTION)
            reply = asked.follow_up_reply(messages, context.tools, self.max_new_tokens)
        else:
            model, ids, prefix = follow_up_ids(
                generation, context, VERBALIZED_2S_QUESTION, self.name
            )
            reply = model.continue_greedy(ids, self.max_new_tokens, prefix)
        return self._read(reply, context)

    async def aconfidence(self, generation: Generation, context: EstimationContext) -> float | None:
        """Async form of :meth:`confidence`: a server's follow-up call is awaited."""
        asked = _by_messages(_model_of(context, self.name), self.name)
        if not isinstance(asked, AsyncMessageFollowUp):
            return await super().aconfidence(generation, context)
        messages = follow_up_messages(generation, context, VERBALIZED_2S_QUESTION)
        reply = await asked.afollow_up_reply(messages, context.tools, self.max_new_tokens)
        return self._read(reply, context)

    @staticmethod
    def _read(reply: str, context: EstimationContext) -> float | None:
        """The confidence stated in ``reply`` (None when it states none)."""
        context.extras["verbalized_2s_reply"] = reply
        value = parse_confidence(reply)
        if value is None:
            logger.debug("verbalized_2s: no confidence in reply %r", reply)
        return value

    def params(self) -> dict[str, Any]:
        """Question and reply length."""
        return {"question": VERBALIZED_2S_QUESTION, "max_new_tokens": self.max_new_tokens}


async def afollow_ups(
    estimators: Sequence[Estimator],
    local: LocalBackend,
    answers: Iterable[tuple[Generation | None, EstimationContext]],
) -> None:
    """Await the follow-up calls of every answer at once, on a backend with async follow-ups.

    On a backend with :class:`~confroute.backend.AsyncMessageFollowUp` (a server), each
    follow-up estimator's confidence in each answer is awaited through
    :meth:`Estimator.aconfidence`, concurrently, and kept in the answer's context, where
    :func:`~confroute.estimators.shared_confidence` finds it when the answer is scored. A call
    that fails (:class:`~confroute.errors.LocalBackendError`) is kept as None, the lowest
    confidence, as the synchronous path does. On any other backend nothing is done.
    """
    if not isinstance(local, AsyncMessageFollowUp):
        return
    asking = [e for e in estimators if Requirement.FOLLOW_UP in e.requires]
    await asyncio.gather(
        *(
            ashared_confidence(e, g, c, none_on=(LocalBackendError,))
            for g, c in answers
            if g is not None
            for e in asking
        )
    )
