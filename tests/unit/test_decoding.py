"""The decoding loop's stop-string check: a tail window gives the whole answer's verdict."""

from __future__ import annotations

import random
from typing import Any

import pytest

from confroute.stops import StopScanner, TokenTexts
from tests.fakes import tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return tiny_tokenizer()


@pytest.mark.parametrize("seed", range(6))
def test_the_window_finds_a_stop_when_a_whole_decode_does(tokenizer: Any, seed: int) -> None:
    """Random answers mix whole words, single bytes of UTF-8 characters and special tokens;
    stop strings are cut from their text at every place. The first step at which the tail
    window sees a stop string is the first at which decoding the whole answer does."""
    rng = random.Random(seed)
    texts = TokenTexts(tokenizer)
    answer = [rng.randrange(len(tokenizer)) for _ in range(120)]
    whole = texts.decode(answer)
    stops = {whole[i : i + n] for i in range(0, len(whole), 7) for n in (1, 3, 6, 11)}
    for stop in sorted(s for s in stops if s):
        scanner = StopScanner((stop, "never said"), texts)
        expected = next(
            (n for n in range(1, len(answer) + 1) if stop in texts.decode(answer[:n])), None
        )
        found = next((n for n in range(1, len(answer) + 1) if scanner.hit(0, answer[:n])), None)
        assert found == expected, stop


def test_a_short_answer_is_decoded_whole(tokenizer: Any) -> None:
    texts = TokenTexts(tokenizer)
    ids = tokenizer("The capital of France is Paris.", add_special_tokens=False)["input_ids"]
    scanner = StopScanner(("Paris",), texts)
    verdicts = [scanner.hit(0, ids[:n]) for n in range(1, len(ids) + 1)]
    first = verdicts.index(True)
    assert "Paris" in texts.decode(ids[: first + 1])
    assert "Paris" not in texts.decode(ids[:first])
