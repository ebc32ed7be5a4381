from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from confroute.bench.cache import (
    RecordFile,
    decode_hidden,
    encode_hidden,
    generation_from_record,
    generation_to_record,
    model_slug,
)
from tests.fakes import scripted_generation


def test_generation_round_trips_through_a_record() -> None:
    generation = replace(
        scripted_generation("B", (0.4,), finish_reason="length"),
        hidden_state=np.array([0.5, -1.25, 3.0], dtype=np.float32),
        hidden_layer=-8,
    )
    back = generation_from_record(generation_to_record(generation), "m")
    assert back.text == "B" and back.finish_reason == "length"
    assert back.tokens == generation.tokens
    np.testing.assert_allclose(back.logprobs, generation.logprobs, atol=1e-6)  # stored rounded
    assert back.top_logprobs[0][0].token == "B"
    assert back.hidden_state is not None
    np.testing.assert_array_equal(back.hidden_state, [0.5, -1.25, 3.0])
    assert decode_hidden(encode_hidden(None)) is None


def test_record_file_keeps_the_latest_record_per_item(tmp_path: Path) -> None:
    records = RecordFile(tmp_path / "a" / "b.jsonl")
    assert records.load() == {}
    records.append([{"item_id": "1", "v": 1}, {"item_id": "2", "v": 2}])
    records.append([{"item_id": "1", "v": 3}])
    assert records.load() == {"1": {"item_id": "1", "v": 3}, "2": {"item_id": "2", "v": 2}}


def test_model_slug_is_a_safe_folder_name() -> None:
    assert model_slug("confroute/qwen2.5-coder-1.5b-instruct") == (
        "confroute__qwen2.5-coder-1.5b-instruct"
    )
    assert model_slug("a b:c") == "a__b__c"
