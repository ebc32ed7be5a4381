"""The llama.cpp backend's Protocol contract, run on a fake ``llama_cpp.Llama`` and module.

The fake keeps llama.cpp's cache rules (``eval`` keeps the first ``n_tokens`` positions and
drops the rest; ``reset`` sets ``n_tokens`` to 0; sequence state can be saved and restored)
and computes each step's logits from exactly the tokens its cache holds, so a wrong reuse of
the cache gives wrong numbers. The low-level functions the backend calls are installed as a
fake ``llama_cpp`` module: these tests never need llama-cpp-python.
"""

from __future__ import annotations

import asyncio
import ctypes
import sys
import types
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from confroute import ConfRouter
from confroute.backend import LocalBackend
from confroute.errors import ConfigurationError, ContextOverflowError
from confroute.generation import GenerationConfig
from confroute.llamacpp import LlamaCppModel
from confroute.llamacpp_decode import sample

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
WORDS = ["Paris", "True", "False", "STOP", "\n"]
TOKENS = SPECIAL + [chr(c) for c in range(32, 127)] + WORDS
ID = {t: i for i, t in enumerate(TOKENS)}
EOT, START, END = ID["<|endoftext|>"], ID["<|im_start|>"], ID["<|im_end|>"]
CONTROL = 1 << 3
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QUESTION = [{"role": "user", "content": "Capital of France?"}]


class FakeLlama:
    """A llama_cpp.Llama-like object: logits are a function of the cached tokens."""

    def __init__(self, transitions: dict[int, int] | None = None, n_ctx: int = 512) -> None:
        self.transitions = transitions or {}
        self._n_ctx = n_ctx
        self.n_tokens = 0
        self.input_ids = np.zeros(n_ctx, dtype=np.intc)
        self.kv: list[int] = []
        self.evaluated = 0
        self.batches: list[tuple[int, ...]] = []
        """Each eval's (start position, *tokens): which batches computed which positions."""
        self.metadata = {"tokenizer.chat_template": TEMPLATE}
        self.model = self
        self.ctx = self
        self.model_path = "/models/fake.gguf"
        self._logits = (ctypes.c_float * len(TOKENS))()

    # -- what the backend calls ----------------------------------------------------------
    def n_vocab(self) -> int:
        return len(TOKENS)

    def n_ctx(self) -> int:
        return self._n_ctx

    def token_bos(self) -> int:
        return EOT

    def token_eos(self) -> int:
        return END

    def reset(self) -> None:
        self.n_tokens = 0

    def eval(self, tokens: Sequence[int]) -> None:
        self.kv = self.kv[: self.n_tokens] + list(tokens)
        self.batches.append((self.n_tokens, *tokens))
        self.input_ids[self.n_tokens : self.n_tokens + len(tokens)] = tokens
        self.n_tokens += len(tokens)
        self.evaluated += len(tokens)
        self._logits[:] = list(logits_after(self.kv, self.transitions))

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        source, ids = text.decode(), []
        while source:
            match = max(
                (t for t in TOKENS if source.startswith(t) and (special or t not in SPECIAL)),
                key=len,
            )
            ids.append(ID[match])
            source = source[len(match) :]
        return ([EOT] if add_bos else []) + ids

    def detokenize(self, tokens: list[int], special: bool = False) -> bytes:
        text = "".join(TOKENS[t] for t in tokens if special or TOKENS[t] not in SPECIAL)
        return text.encode()


def logits_after(tokens: Sequence[int], transitions: dict[int, int]) -> np.ndarray:
    """The fake model: noise seeded by the whole sequence, plus a boost of the scripted token."""
    seed = zlib.crc32(np.asarray(tokens, dtype=np.int64).tobytes())
    logits = np.random.default_rng(seed).standard_normal(len(TOKENS)) * 2.0
    favoured = transitions.get(tokens[-1])
    if favoured is not None:
        logits[favoured] += 12.0
    return logits.astype(np.float32)


def _fake_module() -> types.ModuleType:
    lib = types.ModuleType("llama_cpp")
    ns: Any = lib
    ns.LLAMA_TOKEN_ATTR_CONTROL = CONTROL
    ns.llama_get_logits_ith = lambda ctx, i: ctypes.cast(
        ctx._logits, ctypes.POINTER(ctypes.c_float)
    )
    ns.llama_model_is_recurrent = lambda model: False
    ns.llama_model_is_hybrid = lambda model: False
    ns.llama_model_get_vocab = lambda model: model
    ns.llama_vocab_is_eog = lambda vocab, i: i in (EOT, END)
    ns.llama_vocab_get_attr = lambda vocab, i: CONTROL if TOKENS[i] in SPECIAL else 4
    ns.llama_vocab_get_text = lambda vocab, i: TOKENS[i].encode()
    ns.llama_model_n_ctx_train = lambda model: 512

    def get_size(ctx: FakeLlama, seq: int) -> int:
        return 8 * len(ctx.kv)

    def get_data(ctx: FakeLlama, buffer: Any, size: int, seq: int) -> int:
        data = np.asarray(ctx.kv, dtype=np.int64).tobytes()
        ctypes.memmove(buffer, data, len(data))
        return len(data)

    def set_data(ctx: FakeLlama, buffer: Any, size: int, seq: int) -> int:
        ctx.kv = [int(t) for t in np.frombuffer(bytes(buffer)[:size], dtype=np.int64)]
        return size

    ns.llama_state_seq_get_size = get_size
    ns.llama_state_seq_get_data = get_data
    ns.llama_state_seq_set_data = set_data
    return lib


@pytest.fixture(autouse=True)
def fake_llama_cpp(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(sys.modules, "llama_cpp", _fake_module())
    yield


ANSWER = {ID["\n"]: ID["Paris"], ID["Paris"]: ID["."], ID["."]: END}


def backend(transitions: dict[int, int] | None = None, **kwargs: Any) -> LlamaCppModel:
    llama = FakeLlama(ANSWER if transitions is None else transitions, **kwargs)
    return LlamaCppModel.from_llama(llama, name="fake", fingerprint="f" * 64)


def reference(tokens: Sequence[int], transitions: dict[int, int]) -> np.ndarray:
    """float64 log-softmax of the fake's logits after ``tokens``."""
    logits = logits_after(tokens, transitions).astype(np.float64)
    return logits - np.logaddexp.reduce(logits)


# -- the Protocol and the prompt --------------------------------------------------------------


def test_it_is_a_local_backend_without_hidden_states() -> None:
    model = backend()
    assert isinstance(model, LocalBackend)
    caps = model.capabilities
    assert (caps.backend, caps.tokenizer, caps.hidden_state, caps.top_logprobs) == (
        "llama.cpp",
        True,
        False,
        5,
    )
    assert caps.missing({"follow_up", "samples", "entropies", "hidden_state"}) == ["hidden_state"]
    assert repr(model) == "LlamaCppModel(name='fake', path='/models/fake.gguf')"
    assert model.context_window == 512 and model.fingerprint == "f" * 64


def test_render_encode_vocabulary_and_special_tokens() -> None:
    model = backend()
    text = model.render(QUESTION)
    assert text == "<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n"
    ids = model.encode(text)
    assert ids[0] == START and ids[-1] == ID["\n"] and EOT not in ids
    assert model.count_tokens(QUESTION) == len(ids)
    assert ("Paris", ID["Paris"]) in model.vocabulary()
    assert model.special_token_ids() == frozenset({EOT, START, END})


# -- decoding ------------------------------------------------------------------------------------


def test_greedy_answer_stops_at_end_of_turn_with_numpy_statistics() -> None:
    model = backend()
    prompt = model.encode(model.render(QUESTION))
    [gen] = model.generate_from_ids([prompt], GenerationConfig(max_new_tokens=10, keep_cache=True))
    assert gen.text == "Paris." and gen.finish_reason == "stop"
    assert gen.token_ids == (ID["Paris"], ID["."])
    assert gen.tokens == ("Paris", ".") and gen.prompt_tokens == len(prompt)
    history = list(prompt)
    for i, token in enumerate(gen.token_ids):
        expected = reference(history, ANSWER)
        p = np.exp(expected)
        assert gen.logprobs[i] == pytest.approx(expected[token], abs=1e-5)
        assert gen.entropies[i] == pytest.approx(float(-(p * expected).sum()), abs=1e-5)
        order = np.argsort(-expected, kind="stable")[:5]
        alternatives = gen.top_logprobs[i]
        assert [a.token_id for a in alternatives] == [int(t) for t in order]
        assert [a.token for a in alternatives] == [TOKENS[t] for t in order]
        assert [a.logprob for a in alternatives] == pytest.approx(expected[order], abs=1e-5)
        history.append(token)
    assert gen.extras["prefix"].token_ids == (*prompt, ID["Paris"], ID["."])


def test_max_new_tokens_gives_length() -> None:
    [gen] = backend().generate([QUESTION], GenerationConfig(max_new_tokens=1))
    assert gen.text == "Paris" and gen.finish_reason == "length" and len(gen.logprobs) == 1


def test_stop_string_ends_the_answer_and_is_not_part_of_it() -> None:
    [gen] = backend().generate([QUESTION], GenerationConfig(max_new_tokens=10, stop=(".",)))
    assert gen.text == "Paris" and gen.finish_reason == "stop"
    assert gen.token_ids == (ID["Paris"],) and len(gen.entropies) == 1


def test_special_tokens_are_never_part_of_the_answer() -> None:
    script = {ID["\n"]: ID["Paris"], ID["Paris"]: START, START: ID["."], ID["."]: END}
    [gen] = backend(script).generate([QUESTION], GenerationConfig(max_new_tokens=10))
    assert gen.text == "Paris." and gen.token_ids == (ID["Paris"], ID["."])
    assert len(gen.logprobs) == len(gen.top_logprobs) == len(gen.entropies) == 2


def test_the_step_monitor_sees_each_step_and_can_stop_the_answer() -> None:
    seen: list[tuple[int, list[int]]] = []
    rows: list[int] = []

    def factory(batch: int) -> Any:
        rows.append(batch)

        def monitor(
            step: int, chosen: Sequence[int], lps: Sequence[float], ents: Sequence[float]
        ) -> list[bool]:
            seen.append((step, list(chosen)))
            return [step == 0]

        return monitor

    config = GenerationConfig(max_new_tokens=10, step_monitor=factory)
    [gen] = backend().generate([QUESTION], config)
    assert rows == [1] and seen == [(0, [ID["Paris"]])]
    assert gen.text == "Paris" and gen.finish_reason == "length"
    assert gen.extras["stopped_early_at"] == 1


def test_seeded_samples_are_reproducible_and_share_one_prefill() -> None:
    model = backend({})
    config = GenerationConfig(max_new_tokens=6, temperature=1.0, num_samples=4, seed=7)
    first = model.generate([QUESTION], config)
    llama = model.llama
    prompt_len = first[0].prompt_tokens
    before = llama.evaluated
    again = model.generate([QUESTION], config)
    assert [g.text for g in again] == [g.text for g in first]
    assert len({g.text for g in first}) > 1
    decoded = sum(g.completion_tokens - 1 for g in again)
    assert llama.evaluated - before <= prompt_len + decoded + len(again)
    other = model.generate([QUESTION], GenerationConfig(max_new_tokens=6, temperature=1.0, seed=8))
    assert other[0].text != first[0].text


def test_sampling_follows_the_tempered_distribution_and_the_nucleus() -> None:
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))
    rng = np.random.default_rng(0)
    draws = np.bincount([sample(logits, 1.0, 1.0, rng) for _ in range(20000)], minlength=4)
    assert draws / draws.sum() == pytest.approx([0.5, 0.3, 0.15, 0.05], abs=0.015)
    nucleus = {sample(logits, 1.0, 0.7, rng) for _ in range(2000)}
    assert nucleus == {0, 1}


def test_batches_run_one_prompt_after_another() -> None:
    model = backend()
    other = [{"role": "user", "content": "Again?"}]
    both = model.generate([QUESTION, other], GenerationConfig(max_new_tokens=4))
    alone = [model.generate([c], GenerationConfig(max_new_tokens=4))[0] for c in (QUESTION, other)]
    assert [g.logprobs for g in both] == [g.logprobs for g in alone]


async def test_agenerate_matches_generate() -> None:
    model = backend()
    config = GenerationConfig(max_new_tokens=4)
    [sync] = model.generate([QUESTION], config)
    [asynchronous] = await model.agenerate([QUESTION], config)
    assert asynchronous.text == sync.text and asynchronous.logprobs == sync.logprobs
    results = await asyncio.gather(*(model.agenerate([QUESTION], config) for _ in range(3)))
    assert all(r[0].logprobs == sync.logprobs for r in results)


def _batches_behind(llama: FakeLlama) -> list[tuple[int, ...]]:
    """The evals whose positions the cache still holds, each cut to what it still holds."""
    held: list[tuple[int, ...]] = []
    for start, *tokens in llama.batches:
        held = [b for b in held if b[0] < start]
        held = [(b[0], *b[1 : 1 + start - b[0]]) for b in held]
        held.append((start, *tokens))
    return [b for b in held if len(b) > 1 and b[0] < llama.n_tokens]


def test_answers_reuse_a_shared_system_turn_computed_as_when_alone() -> None:
    system = {"role": "system", "content": "Be brief."}
    first, second = [system, *QUESTION], [system, {"role": "user", "content": "Again?"}]
    model = backend()
    config = GenerationConfig(max_new_tokens=4)
    model.generate([first], config)
    ids = model.encode(model.render(second))
    header = model.encode("\n<|im_start|>user\n")  # the user turn's header, from the template
    split = ids.index(END) + 1 + len(header)  # after the system turn and the next header
    assert ids[split - len(header) : split] == header
    before = model.llama.evaluated
    [after_other] = model.generate([second], config)
    prompt_batches = [b for b in _batches_behind(model.llama) if b[0] < len(ids)]
    fresh = backend()
    [alone] = fresh.generate([second], config)
    assert model.llama.evaluated - before == fresh.llama.evaluated - split  # the turn reused
    assert prompt_batches == [b for b in _batches_behind(fresh.llama) if b[0] < len(ids)]
    assert prompt_batches[:2] == [(0, *ids[:split]), (split, *ids[split:])]
    assert after_other.logprobs == alone.logprobs and after_other.text == alone.text


def test_without_a_system_turn_the_split_is_the_first_turn_end() -> None:
    model = backend()
    ids = model.encode(model.render(QUESTION))  # the first turn end closes the user's turn
    model.generate_from_ids([ids], GenerationConfig(max_new_tokens=2))
    split = ids.index(END) + 1
    assert model.llama.batches[:2] == [(0, *ids[:split]), (split, *ids[split:])]


def test_a_prompt_without_a_turn_end_is_prefilled_in_one_batch() -> None:
    model = backend()
    ids = model.encode("Capital?")
    assert END not in ids
    model.generate_from_ids([ids], GenerationConfig(max_new_tokens=2))
    model.generate_from_ids([ids], GenerationConfig(max_new_tokens=2))
    assert sum(1 for b in model.llama.batches if b == (0, *ids)) == 2


def test_a_prompt_that_does_not_fit_is_refused() -> None:
    model = backend(n_ctx=16)
    with pytest.raises(ContextOverflowError, match="context window of 16"):
        model.generate([QUESTION], GenerationConfig(max_new_tokens=8))


# -- follow-ups from the kept prefix -----------------------------------------------------------


def _follow_up(model: LlamaCppModel, answer: str) -> list[int]:
    turn = [*QUESTION, {"role": "assistant", "content": answer}, {"role": "user", "content": "T?"}]
    return model.encode(model.render(turn))


def test_a_follow_up_evaluates_only_the_new_tokens() -> None:
    model = backend()
    config = GenerationConfig(max_new_tokens=10, keep_cache=True)
    [gen] = model.generate([QUESTION], config)
    ids = _follow_up(model, gen.text)
    before = model.llama.evaluated
    logprobs = model.next_token_logprobs(ids, gen.extras["prefix"])
    kept = len(gen.extras["prefix"].token_ids)
    assert model.last_follow_up_reused == kept
    assert model.llama.evaluated - before == len(ids) - kept
    assert logprobs == pytest.approx(reference(ids, ANSWER), abs=1e-5)


def test_a_kept_prefix_survives_other_generations() -> None:
    model = backend()
    config = GenerationConfig(max_new_tokens=10, keep_cache=True)
    other = [{"role": "user", "content": "Something else entirely"}]
    [first, second] = model.generate([QUESTION, other], config)
    assert first.extras["prefix"].state is not None  # saved before the second overwrote it
    ids = _follow_up(model, first.text)
    before = model.llama.evaluated
    logprobs = model.next_token_logprobs(ids, first.extras["prefix"])
    kept = len(first.extras["prefix"].token_ids)
    assert model.last_follow_up_reused == kept
    assert model.llama.evaluated - before == len(ids) - kept
    assert logprobs == pytest.approx(reference(ids, ANSWER), abs=1e-5)
    turn = [*other, {"role": "assistant", "content": second.text}, {"role": "user", "content": "?"}]
    ids_b = model.encode(model.render(turn))
    model.next_token_logprobs(ids_b, second.extras["prefix"])
    assert model.last_follow_up_reused == len(second.extras["prefix"].token_ids)


def test_continue_greedy_reuses_the_prefix_and_drops_special_tokens() -> None:
    script = {**ANSWER, ID["?"]: ID["T"], ID["T"]: START, START: ID["r"], ID["r"]: END}
    model = backend(script)
    [gen] = model.generate([QUESTION], GenerationConfig(max_new_tokens=10, keep_cache=True))
    ids = model.encode(model.render([*QUESTION, {"role": "assistant", "content": gen.text}]))
    ids = [*ids[:-1], ID["?"]]
    assert model.continue_greedy(ids, 8, gen.extras["prefix"]) == "Tr"
    assert model.last_follow_up_reused > 0
    assert model.continue_greedy(ids, 1) == "T"


def test_p_true_routes_through_the_router_with_the_kept_prefix() -> None:
    script = {**ANSWER, ID["\n"]: ID["Paris"]}
    model = backend(script)
    router = ConfRouter(model, None, estimator="p_true", max_new_tokens=8)
    response = router.route("Capital of France?")
    assert response.text == "Paris."
    assert 0.0 <= (response.decision.confidence or 0.0) <= 1.0
    assert model.last_follow_up_reused > 0


def test_the_router_refuses_a_probe_on_this_backend() -> None:
    with pytest.raises(ConfigurationError, match="hidden_state"):
        ConfRouter(backend(), None, estimator="trained_probe")


# -- construction errors -------------------------------------------------------------------------


def test_a_missing_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'confroute\[llamacpp\]'"):
        LlamaCppModel("qwen2.5-coder-0.5b-instruct")


@pytest.mark.parametrize("name", ["not-a-model", "Qwen/Qwen2.5-0.5B-Instruct", "missing.gguf"])
def test_a_bad_model_argument_names_what_is_accepted(name: str) -> None:
    with pytest.raises(ConfigurationError, match=r"bundled model .*\.gguf file"):
        LlamaCppModel(name)


def test_a_directory_is_refused(tmp_path: Any) -> None:
    with pytest.raises(ConfigurationError, match="LocalModel"):
        LlamaCppModel(tmp_path)


# -- lifetime ------------------------------------------------------------------------------------


def test_close_frees_the_model_once_and_later_calls_are_refused() -> None:
    llama = FakeLlama(ANSWER)
    closed: list[int] = []
    llama.close = lambda: closed.append(1)  # type: ignore[attr-defined]
    with LlamaCppModel.from_llama(llama, name="fake", fingerprint="f" * 64) as model:
        [answer] = model.generate([QUESTION], GenerationConfig(max_new_tokens=4))
        assert answer.text == "Paris."
    assert closed == [1]
    model.close()  # idempotent
    assert closed == [1]
    with pytest.raises(ConfigurationError, match="was closed; create a new LlamaCppModel"):
        model.generate([QUESTION])
    with pytest.raises(ConfigurationError, match="was closed"):
        model.next_token_logprobs([START])


def test_a_collected_model_frees_its_llama() -> None:
    import gc

    llama = FakeLlama(ANSWER)
    closed: list[int] = []
    llama.close = lambda: closed.append(1)  # type: ignore[attr-defined]
    model = LlamaCppModel.from_llama(llama, name="fake", fingerprint="f" * 64)
    del model
    gc.collect()
    assert closed == [1]


def test_thread_counts_follow_the_argument_then_omp_num_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from confroute.llamacpp_binding import thread_counts

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert thread_counts(None) == {}  # llama-cpp-python's defaults
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what Ray sets in a one-CPU task
    assert thread_counts(None) == {"n_threads": 1, "n_threads_batch": 1}
    assert thread_counts(3) == {"n_threads": 3, "n_threads_batch": 3}
    monkeypatch.setenv("OMP_NUM_THREADS", "auto")
    assert thread_counts(None) == {}
    with pytest.raises(ConfigurationError, match="n_threads must be >= 1"):
        thread_counts(0)
