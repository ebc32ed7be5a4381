"""LocalModel on a tiny random Qwen2: the decoding loop's statistics match a plain forward pass."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from confroute.errors import ContextOverflowError
from confroute.local import GenerationConfig, LocalModel

PROMPTS = [
    [{"role": "user", "content": "What is 17*23?"}],
    [{"role": "user", "content": "The capital of France is"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "yes or no?"}],
]


def _teacher_forced(lm: LocalModel, prompt_ids: list[int], answer_ids: list[int], layer: int):
    ids = torch.tensor([prompt_ids + answer_ids])
    with torch.inference_mode():
        out = lm.model(input_ids=ids, output_hidden_states=True)
    logprobs = torch.log_softmax(out.logits[0].float(), dim=-1)
    start = len(prompt_ids) - 1
    chosen = [logprobs[start + i, t].item() for i, t in enumerate(answer_ids)]
    steps = logprobs[start : start + len(answer_ids)]
    entropy = (-(steps.exp() * steps).sum(-1)).tolist()
    hidden = out.hidden_states[layer][0].float()
    return chosen, entropy, hidden


def test_statistics_match_a_teacher_forced_pass(tiny_lm: LocalModel) -> None:
    [gen] = tiny_lm.generate([PROMPTS[0]], GenerationConfig(max_new_tokens=6, hidden_layer=-8))
    prompt_ids = tiny_lm.encode(tiny_lm.render(PROMPTS[0]))
    chosen, entropy, hidden = _teacher_forced(tiny_lm, prompt_ids, list(gen.token_ids), -8)
    assert gen.finish_reason == "length"
    assert gen.completion_tokens == 6
    assert gen.prompt_tokens == len(prompt_ids)
    np.testing.assert_allclose(gen.logprobs, chosen, atol=1e-4)
    np.testing.assert_allclose(gen.entropies, entropy, atol=1e-4)
    # greedy: the chosen token is the top alternative, and alternatives are sorted
    for token_id, alternatives in zip(gen.token_ids, gen.top_logprobs, strict=True):
        assert alternatives[0].token_id == token_id
        lps = [a.logprob for a in alternatives]
        assert lps == sorted(lps, reverse=True)
        assert len(alternatives) == tiny_lm.top_k
    # length-capped: the hidden state is the last forward's input position (second-to-last token)
    position = len(prompt_ids) + gen.completion_tokens - 2
    assert gen.hidden_state is not None
    np.testing.assert_allclose(gen.hidden_state, hidden[position].numpy(), atol=1e-4)
    assert gen.text == tiny_lm.tokenizer.decode(list(gen.token_ids))


def test_batch_with_left_padding_equals_one_at_a_time(tiny_lm: LocalModel) -> None:
    config = GenerationConfig(max_new_tokens=5)
    batched = tiny_lm.generate(PROMPTS, config)
    single = [tiny_lm.generate([p], config)[0] for p in PROMPTS]
    for b, s in zip(batched, single, strict=True):
        assert b.token_ids == s.token_ids
        np.testing.assert_allclose(b.logprobs, s.logprobs, atol=1e-4)


def test_stop_sequence_cuts_text_and_tokens(tiny_lm: LocalModel) -> None:
    [full] = tiny_lm.generate([PROMPTS[1]], GenerationConfig(max_new_tokens=8))
    stop = full.tokens[3].strip() or full.tokens[3]
    [cut] = tiny_lm.generate([PROMPTS[1]], GenerationConfig(max_new_tokens=8, stop=(stop,)))
    assert stop not in cut.text
    assert full.text.startswith(cut.text)
    assert cut.finish_reason == "stop"
    assert cut.completion_tokens < full.completion_tokens
    assert len(cut.logprobs) == cut.completion_tokens


def test_sampling_is_reproducible_with_a_seed(tiny_lm: LocalModel) -> None:
    config = GenerationConfig(max_new_tokens=5, temperature=1.0, num_samples=3, seed=7)
    first = tiny_lm.generate([PROMPTS[0]], config)
    second = tiny_lm.generate([PROMPTS[0]], config)
    assert len(first) == 3
    assert [g.token_ids for g in first] == [g.token_ids for g in second]


def test_samples_share_one_prefill_and_match_separate_rows(tiny_lm: LocalModel) -> None:
    """num_samples prefills each prompt once and fans its cache out; the draws equal decoding
    the same prompt repeated as separate rows with the same seed."""
    config = GenerationConfig(max_new_tokens=5, temperature=1.0, num_samples=3, seed=11)
    ids = [tiny_lm.encode(tiny_lm.render(p)) for p in PROMPTS[:2]]
    shared = tiny_lm.generate_from_ids(ids, config)
    separate = tiny_lm._decode([i for i in ids for _ in range(3)], config)
    assert len(shared) == 6
    assert [g.token_ids for g in shared] == [g.token_ids for g in separate]
    assert [g.prompt_tokens for g in shared] == [len(ids[0])] * 3 + [len(ids[1])] * 3
    for a, b in zip(shared, separate, strict=True):
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)


def test_greedy_samples_all_equal_the_single_answer(tiny_lm: LocalModel) -> None:
    [single] = tiny_lm.generate([PROMPTS[1]], GenerationConfig(max_new_tokens=5, hidden_layer=-2))
    many = tiny_lm.generate(
        [PROMPTS[1]], GenerationConfig(max_new_tokens=5, num_samples=4, hidden_layer=-2)
    )
    assert [g.token_ids for g in many] == [single.token_ids] * 4
    for g in many:
        assert g.hidden_state is not None and single.hidden_state is not None
        np.testing.assert_allclose(g.hidden_state, single.hidden_state, atol=1e-4)


def test_context_overflow_is_reported(tiny_lm: LocalModel) -> None:
    long_prompt = [{"role": "user", "content": "yes no " * 400}]
    with pytest.raises(ContextOverflowError) as info:
        tiny_lm.generate([long_prompt], GenerationConfig(max_new_tokens=4))
    assert info.value.context_window == tiny_lm.context_window
    assert "max_new_tokens" in str(info.value)


def test_concurrent_callers_get_their_own_answers(tiny_lm: LocalModel) -> None:
    config = GenerationConfig(max_new_tokens=4)
    expected = {i: tiny_lm.generate([p], config)[0].token_ids for i, p in enumerate(PROMPTS)}
    results: dict[int, tuple[int, ...]] = {}

    def work(index: int) -> None:
        results[index] = tiny_lm.generate([PROMPTS[index]], config)[0].token_ids

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(PROMPTS))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == expected


async def test_agenerate_matches_generate(tiny_lm: LocalModel) -> None:
    config = GenerationConfig(max_new_tokens=4)
    [sync] = tiny_lm.generate([PROMPTS[2]], config)
    [asynchronous] = await tiny_lm.agenerate([PROMPTS[2]], config)
    assert sync.token_ids == asynchronous.token_ids


def test_openai_logprobs_shape(tiny_lm: LocalModel) -> None:
    [gen] = tiny_lm.generate([PROMPTS[0]], GenerationConfig(max_new_tokens=3))
    content = gen.openai_logprobs()["content"]
    assert [c["logprob"] for c in content] == list(gen.logprobs)
    assert all(len(c["top_logprobs"]) == tiny_lm.top_k for c in content)
