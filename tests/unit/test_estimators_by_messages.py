"""Follow-up and sampling estimators on a backend without a tokenizer (asked by messages).

The tokenizer path (token ids, kept cache, the whole vocabulary) is tested in
test_estimators_engine.py; these fakes have ``capabilities.tokenizer`` False.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from confroute.backend import Capabilities
from confroute.errors import ConfigurationError
from confroute.estimators import EstimationContext, JaccardDegree, PTrue, Verbalized2S
from confroute.estimators.follow_up import p_true_from_alternatives
from confroute.generation import Generation, GenerationConfig, TokenAlternative
from tests.fakes import scripted_generation

QUESTION = [{"role": "user", "content": "What is 2+2?"}]
NO_TOKENIZER = Capabilities(backend="fake-api", tokenizer=False, entropies=False)


def alts(*pairs: tuple[str, float]) -> tuple[TokenAlternative, ...]:
    return tuple(TokenAlternative(token, -1, math.log(p)) for token, p in pairs)


class ByMessages:
    """A backend reached by messages: scripted follow-up answers and samples."""

    name = "fake-api"
    fingerprint = "fake"
    context_window = 4096
    capabilities = NO_TOKENIZER

    def __init__(self, alternatives: tuple[TokenAlternative, ...] = (), reply: str = "") -> None:
        self.alternatives = alternatives
        self.reply = reply
        self.asked: list[tuple[list[dict[str, Any]], Any]] = []
        self.generated: list[tuple[list[Any], GenerationConfig, Any]] = []

    def follow_up_alternatives(
        self, messages: Sequence[Mapping[str, Any]], tools: Any = None
    ) -> tuple[TokenAlternative, ...]:
        self.asked.append(([dict(m) for m in messages], tools))
        return self.alternatives

    def follow_up_reply(
        self, messages: Sequence[Mapping[str, Any]], tools: Any = None, max_new_tokens: int = 8
    ) -> str:
        self.asked.append(([dict(m) for m in messages], max_new_tokens))
        return self.reply

    def generate(
        self, conversations: Any, config: GenerationConfig | None = None, *, tools: Any = None
    ) -> list[Generation]:
        assert config is not None
        self.generated.append((list(conversations), config, tools))
        texts = ["four", "four", "4", "four", "four"][: config.num_samples]
        return [scripted_generation(t, (0.5,)) for t in texts]


def test_every_spelling_of_the_words_counts_and_the_rest_is_ignored() -> None:
    value, seen, bounded = p_true_from_alternatives(
        alts(("True", 0.4), (" true", 0.1), ("FALSE.", 0.2), ("\u0120false", 0.05), ("Yes", 0.2))
    )
    assert value == pytest.approx(0.5 / 0.75)
    assert seen == pytest.approx(0.75) and bounded is None


def test_a_word_outside_the_top_k_gets_the_least_likely_alternatives_mass() -> None:
    # "False" ranks below every listed alternative, so its probability is at most 0.01
    value, seen, bounded = p_true_from_alternatives(alts(("True", 0.9), ("Yes", 0.05), ("A", 0.01)))
    assert value == pytest.approx(0.9 / 0.91) and seen == pytest.approx(0.9)
    assert bounded == "false"
    value, _, bounded = p_true_from_alternatives(alts(("False", 0.6), ("No", 0.3), ("B", 0.02)))
    assert value == pytest.approx(0.02 / 0.62) and bounded == "true"


def test_no_word_among_the_alternatives_gives_no_confidence() -> None:
    assert p_true_from_alternatives(alts(("Yes", 0.7), ("No", 0.2))) == (None, 0.0, None)
    assert p_true_from_alternatives(()) == (None, 0.0, None)


def test_p_true_asks_the_follow_up_turn_by_messages() -> None:
    model = ByMessages(alts(("True", 0.6), ("False", 0.2)))
    tools = [{"type": "function", "function": {"name": "f"}}]
    context = EstimationContext(messages=QUESTION, local_model=model, tools=tools)  # type: ignore[arg-type]
    estimator = PTrue()
    estimator.prepare(model)  # type: ignore[arg-type]
    assert estimator.confidence(scripted_generation("4", (0.9,)), context) == pytest.approx(0.75)
    assert context.extras["p_true_mass"] == pytest.approx(0.8)
    [(messages, sent_tools)] = model.asked
    assert messages[0] == QUESTION[0] and messages[1] == {"role": "assistant", "content": "4"}
    assert messages[2]["role"] == "user" and "True or False" in messages[2]["content"]
    assert sent_tools == tools


def test_verbalized_2s_parses_the_reply_by_messages() -> None:
    model = ByMessages(reply="I'd say 70")
    context = EstimationContext(messages=QUESTION, local_model=model)  # type: ignore[arg-type]
    value = Verbalized2S(max_new_tokens=5).confidence(scripted_generation("4", (0.9,)), context)
    assert value == pytest.approx(0.7)
    assert model.asked[0][1] == 5


def test_jaccard_degree_samples_by_messages_without_token_ids() -> None:
    model = ByMessages()
    context = EstimationContext(
        messages=QUESTION,
        local_model=model,  # type: ignore[arg-type]
        config=GenerationConfig(max_new_tokens=9, keep_cache=True),
    )
    value = JaccardDegree(num_samples=5, seed=1).confidence(
        scripted_generation("4", (0.9,)), context
    )
    [(conversations, config, _)] = model.generated
    assert conversations == [QUESTION]
    assert (config.num_samples, config.temperature, config.seed) == (5, 1.0, 1)
    assert (config.max_new_tokens, config.keep_cache) == (9, False)
    # W: the 4x4 block of the four "four" samples is all ones, "4" matches only itself
    assert value == pytest.approx((16 + 1) / 25)


def test_a_backend_without_tokenizer_or_message_follow_ups_is_refused() -> None:
    class Bare:
        name = "bare"
        capabilities = NO_TOKENIZER

    context = EstimationContext(messages=QUESTION, local_model=Bare())  # type: ignore[arg-type]
    for estimator in (PTrue(), Verbalized2S()):
        with pytest.raises(ConfigurationError, match="MessageFollowUp"):
            estimator.confidence(scripted_generation("4", (0.9,)), context)
    with pytest.raises(ConfigurationError, match="MessageFollowUp"):
        PTrue().prepare(Bare())  # type: ignore[arg-type]
