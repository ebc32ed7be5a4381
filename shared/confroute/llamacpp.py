"""The llama.cpp :class:`~confroute.backend.LocalBackend`: GGUF weights run natively, in process.

:class:`LlamaCppModel` runs a bundled model's GGUF file (or any ``.gguf``) through
``llama-cpp-python`` (``pip install 'confroute[llamacpp]'``), with no dequantized copy and no
torch. Its prompts and token ids are the transformers backend's (the same chat template, read
from the GGUF metadata, rendered the way transformers renders it), and its fingerprint is the
same sha256: a calibration profile made on transformers matches these weights, and is used
where :mod:`confroute.calibration_transfer` measured the engine shift small. The decoding loop
is :mod:`confroute.llamacpp_decode`; :meth:`LlamaCppModel.close` frees the model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from confroute.backend import Capabilities, check_prompts_fit
from confroute.errors import CacheCorruptError, ConfigurationError
from confroute.forced import llama_teacher_forced
from confroute.generation import Generation, GenerationConfig
from confroute.llamacpp_binding import (
    LlamaDetokenizer,
    free_llama,
    import_llama_cpp,
    locate_gguf,
    thread_counts,
)
from confroute.llamacpp_cache import KeptLlamaPrefix, LlamaEngine, user_turn_header
from confroute.llamacpp_decode import SequenceDecoder, log_softmax
from confroute.local import FALLBACK_CHAT_TEMPLATE
from confroute.messages import validate_messages
from confroute.models import DEFAULT_SLM, sha256_file
from confroute.stops import TokenTexts
from confroute.tools import normalize_tool_calls_for_template

__all__ = ["DEFAULT_CONTEXT", "KeptLlamaPrefix", "LlamaCppModel"]

DEFAULT_CONTEXT = 4096
"""Context window when none is given: the model's trained context, capped here. llama.cpp
allocates the key/value cache for the whole window up front (the bundled 0.5B's 32,768
trained tokens would take 384 MB, the 1.5B's 896 MB); 4096 holds the router's prompts and
answers, and a longer prompt is escalated as ``context_overflow``. Pass ``n_ctx`` for more."""


class LlamaCppModel:
    """A GGUF model run by llama.cpp in process: answers with per-token statistics.

    It serves every estimator but the probes: ``avg_token_prob``, ``perplexity``,
    ``min_token_prob``, ``mean_token_entropy``, ``p_true``, ``verbalized_1s``,
    ``verbalized_2s``, ``jaccard_degree`` and ``logistic_combination`` of these.
    ``trained_probe`` and ``ood_probe`` read the hidden state of an intermediate layer (the
    8th-to-last), and llama.cpp's API exposes no intermediate layer (only the final embeddings
    and the logits), so ``capabilities.hidden_state`` is False and the router refuses them.

    Prompts run one after another (llama-cpp-python's high-level API holds one sequence); a
    lock makes the object thread-safe, and :meth:`agenerate` runs in a worker thread.

    Example:
        >>> slm = LlamaCppModel("qwen2.5-coder-0.5b-instruct")  # doctest: +SKIP
        >>> [gen] = slm.generate([[{"role": "user", "content": "2+2?"}]])  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_SLM,
        *,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        top_k: int = 5,
        seed: int = 0,
        verbose: bool = False,
    ) -> None:
        """Load a bundled model by short name, or a ``.gguf`` file.

        Args:
            model: A bundled short name or the path of a ``.gguf`` file.
            n_ctx: Context window in tokens (default: the trained one, at most
                :data:`DEFAULT_CONTEXT`).
            n_threads: CPU threads of decoding and prefill (default: ``OMP_NUM_THREADS``
                where set, as in a Ray task, else llama-cpp-python's choice).
            top_k: Alternatives kept per token.
            seed: Seed of llama.cpp and of the sampler used when a call gives no
                ``GenerationConfig.seed`` (each such call then draws fresh numbers from it).
            verbose: Let llama.cpp log to stderr.

        Raises:
            ConfigurationError: llama-cpp-python is missing, or ``model`` is neither a bundled
                name nor a ``.gguf`` file.
            CacheCorruptError: llama.cpp cannot read the file.
        """
        lib = import_llama_cpp()
        path, name, fingerprint = locate_gguf(model)
        if n_ctx is not None and n_ctx < 1:
            raise ConfigurationError(f"n_ctx must be >= 1, got {n_ctx}.")
        threads = thread_counts(n_threads)
        try:
            llama = lib.Llama(
                model_path=str(path),
                n_ctx=n_ctx or DEFAULT_CONTEXT,
                **threads,
                seed=seed,
                logits_all=False,
                verbose=verbose,
            )
        except (ValueError, RuntimeError) as error:
            raise CacheCorruptError(
                f"llama.cpp could not load {path} ({error}); the file is corrupt or not a GGUF "
                "model. Download it again, or use a bundled model."
            ) from error
        trained = int(lib.llama_model_n_ctx_train(llama.model))
        window = n_ctx if n_ctx is not None else min(trained, DEFAULT_CONTEXT)
        self._setup(llama, lib, name, fingerprint or sha256_file(path), window, top_k, seed)
        self.path = str(path)

    @classmethod
    def from_llama(
        cls, llama: Any, *, name: str, fingerprint: str, top_k: int = 5, seed: int = 0
    ) -> LlamaCppModel:
        """Wrap a user's own ``llama_cpp.Llama`` (its context window is its ``n_ctx()``).

        Args:
            llama: The loaded model; create it with ``logits_all=False`` (this backend reads
                only the last row of logits).
            name: The model's name (decisions and profiles are keyed by it).
            fingerprint: A hash of the weights (the GGUF's sha256 matches the other backends).
            top_k: Alternatives kept per token.
            seed: Seed of the sampler used when a call gives no ``GenerationConfig.seed``.
        """
        instance = cls.__new__(cls)
        instance._setup(
            llama, import_llama_cpp(), name, fingerprint, int(llama.n_ctx()), top_k, seed
        )
        instance.path = str(getattr(llama, "model_path", ""))
        return instance

    def _setup(
        self,
        llama: Any,
        lib: Any,
        name: str,
        fingerprint: str,
        context_window: int,
        top_k: int,
        seed: int,
    ) -> None:
        if top_k < 1:
            raise ConfigurationError(f"top_k must be >= 1, got {top_k}.")
        self.llama = llama
        self._finalizer = weakref.finalize(self, free_llama, llama)
        self.name = name
        self.fingerprint = fingerprint
        self.context_window = context_window
        self.top_k = top_k
        self.path = ""
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(seed)
        vocab = lib.llama_model_get_vocab(llama.model)
        count = int(llama.n_vocab())
        control = int(lib.LLAMA_TOKEN_ATTR_CONTROL)
        self._eos_ids = frozenset(i for i in range(count) if lib.llama_vocab_is_eog(vocab, i))
        self._special_ids = self._eos_ids | frozenset(
            i for i in range(count) if int(lib.llama_vocab_get_attr(vocab, i)) & control
        )
        self._vocabulary = [
            (bytes(lib.llama_vocab_get_text(vocab, i)).decode("utf-8", errors="replace"), i)
            for i in range(count)
        ]
        metadata = getattr(llama, "metadata", {}) or {}
        self._template: str = metadata.get("tokenizer.chat_template") or FALLBACK_CHAT_TEMPLATE
        self._bos = self._token_text(lib, vocab, llama.token_bos())
        self._eos = self._token_text(lib, vocab, llama.token_eos())
        header = user_turn_header(lambda m: self.encode(self.render(m)), self._eos_ids)
        self._engine = LlamaEngine(llama, lib, turn_ends=self._eos_ids, turn_header=header)
        self._texts = TokenTexts(LlamaDetokenizer(llama))
        self._decoder = SequenceDecoder(
            self._engine,
            self._texts,
            name=name,
            top_k=top_k,
            eos_ids=self._eos_ids,
            special_ids=self._special_ids,
        )
        self.last_follow_up_reused = 0
        """Prompt tokens the last follow-up read from the cache (0: prefilled in full)."""
        self.capabilities = Capabilities(
            backend="llama.cpp", top_logprobs=top_k, hidden_state=False
        )
        """Log-probs, top-k, entropies, samples, follow-ups from the kept cache and a step
        monitor; no hidden state (llama.cpp exposes no intermediate layer)."""

    @staticmethod
    def _token_text(lib: Any, vocab: Any, token: int) -> str:
        if token < 0:
            return ""
        return bytes(lib.llama_vocab_get_text(vocab, token)).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        """Name and file, never weights."""
        return f"LlamaCppModel(name={self.name!r}, path={self.path!r})"

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Free the llama.cpp model and context now (waits for a running call; idempotent).

        Also done when the object is collected and at interpreter exit, before
        ``llama_cpp``'s modules are torn down, so no traceback is printed at exit. A model
        given to :meth:`from_llama` is owned (and freed) by the wrapper.
        """
        with self._lock:
            self._finalizer()

    def __enter__(self) -> LlamaCppModel:
        """``with LlamaCppModel(...) as slm:`` frees the model at the end of the block."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Free the model (see :meth:`close`)."""
        self.close()

    @contextmanager
    def _open(self) -> Iterator[None]:
        """Hold the lock of a call; refuse a call after :meth:`close`."""
        with self._lock:
            self._check_open()
            yield

    def _check_open(self) -> None:
        if not self._finalizer.alive:
            raise ConfigurationError(
                f"{self!r} was closed; create a new LlamaCppModel to run the model again."
            )

    # -- prompts ---------------------------------------------------------------------------

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        """The prompt text of a conversation, as the transformers backend renders it.

        The GGUF's ``tokenizer.chat_template`` is rendered by transformers' own
        ``render_jinja_template`` (the function behind ``apply_chat_template``; it imports
        jinja2, not torch), with the same message clean-up, so both backends see the same text.
        """
        from transformers.utils.chat_template_utils import render_jinja_template

        clean = [normalize_tool_calls_for_template(m) for m in validate_messages(messages)]
        rendered, _ = render_jinja_template(
            conversations=[clean],
            tools=list(tools) if tools else None,
            chat_template=self._template,
            add_generation_prompt=True,
            bos_token=self._bos,
            eos_token=self._eos,
        )
        return str(rendered[0])

    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt text (special tokens parsed, no BOS added)."""
        self._check_open()
        return list(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def count_tokens(self, messages: Sequence[Mapping[str, Any]]) -> int:
        """Number of prompt tokens of a conversation."""
        return len(self.encode(self.render(messages)))

    def vocabulary(self) -> list[tuple[str, int]]:
        """Every ``(token string, id)`` pair (the GGUF's token texts, as transformers has them)."""
        return list(self._vocabulary)

    def special_token_ids(self) -> frozenset[int]:
        """Control and end-of-generation tokens."""
        return self._special_ids

    # -- generation ------------------------------------------------------------------------

    def generate(
        self,
        conversations: Sequence[Sequence[Mapping[str, Any]]],
        config: GenerationConfig | None = None,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[Generation]:
        """Answer conversations, one after another (``num_samples`` consecutive results each).

        Raises:
            ContextOverflowError: A prompt plus ``max_new_tokens`` exceeds the context window.
        """
        config = config or GenerationConfig()
        prompts = [self.encode(self.render(c, tools)) for c in conversations]
        return self.generate_from_ids(prompts, config)

    async def agenerate(
        self,
        conversations: Sequence[Sequence[Mapping[str, Any]]],
        config: GenerationConfig | None = None,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[Generation]:
        """Async form of :meth:`generate`; runs in a worker thread, never on the event loop."""
        return await asyncio.to_thread(self.generate, conversations, config, tools=tools)

    def generate_from_ids(
        self, prompts: Sequence[Sequence[int]], config: GenerationConfig
    ) -> list[Generation]:
        """Answer already tokenised prompts (see :meth:`generate`).

        Each prompt is prefilled once (:meth:`LlamaEngine.prefill_answer
        <confroute.llamacpp_cache.LlamaEngine.prefill_answer>`: its system turn read from the
        cache when the last prompt shared it, computed the same way either way, so an answer
        and its confidence never depend on what ran before); with ``num_samples`` > 1 every
        sample decodes from that prefill.
        """
        check_prompts_fit(prompts, config.max_new_tokens, self.context_window, self.name)
        started = time.perf_counter()
        results: list[Generation] = []
        with self._open():
            rng = self._rng if config.seed is None else np.random.default_rng(config.seed)
            for ids in prompts:
                prompt = list(ids)
                self._engine.prefill_answer(prompt)
                first = self._engine.logits().copy()
                for sample in range(config.num_samples):
                    if sample and self._engine.truncatable:
                        self._engine.rewind(len(prompt))
                    elif sample:
                        self._engine.prefill_answer(prompt)
                    generation, kept = self._decoder.decode(prompt, first, config, rng, sample)
                    if kept is not None:
                        generation.extras["prefix"] = kept
                    results.append(generation)
        elapsed = time.perf_counter() - started
        return [dataclasses.replace(g, latency_s=elapsed) for g in results]

    def score_answer(
        self, prompt_ids: Sequence[int], answer: str, hidden_layer: int | None = None
    ) -> Generation:
        """Teacher-forced statistics of ``answer`` (see :mod:`confroute.forced`).

        Raises:
            ConfigurationError: The answer is empty or does not fit, or a hidden layer is
                asked for (llama.cpp exposes none).
        """
        if hidden_layer is not None:
            raise ConfigurationError("llama.cpp exposes no hidden layer; score without probes.")
        answer_ids = [t for t in self.encode(answer) if t not in self._special_ids]
        if not answer_ids:
            raise ConfigurationError("The answer to score is empty; pass the answer's text.")
        check_prompts_fit([[*prompt_ids, *answer_ids]], 0, self.context_window, self.name)
        with self._open():
            return llama_teacher_forced(
                self._engine, self._texts, prompt_ids, answer_ids,
                text=answer, top_k=self.top_k, name=self.name,
            )  # fmt: skip

    # -- follow-up turns that reuse the cache -----------------------------------------------

    def next_token_logprobs(
        self, token_ids: Sequence[int], prefix: KeptLlamaPrefix | None = None
    ) -> np.ndarray:
        """Log-probabilities (natural log, whole vocabulary) of the token after ``token_ids``.

        The longest common prefix of ``token_ids`` and the cache (or ``prefix``, a
        generation's ``extras["prefix"]``, restored when another call overwrote it) is reused;
        only the rest is evaluated.
        """
        check_prompts_fit([token_ids], 0, self.context_window, self.name)
        with self._open():
            self.last_follow_up_reused = self._engine.prefill(list(token_ids), prefix)
            return log_softmax(self._engine.logits())

    def continue_greedy(
        self, token_ids: Sequence[int], max_new_tokens: int, prefix: KeptLlamaPrefix | None = None
    ) -> str:
        """Greedy continuation of ``token_ids`` (special tokens dropped), reusing ``prefix``."""
        check_prompts_fit([token_ids], max_new_tokens, self.context_window, self.name)
        chosen: list[int] = []
        with self._open():
            self.last_follow_up_reused = self._engine.prefill(list(token_ids), prefix)
            logits = self._engine.logits()
            for index in range(max_new_tokens):
                token = int(np.argmax(logits))
                if token in self._eos_ids:
                    break
                chosen.append(token)
                if index + 1 < max_new_tokens:
                    logits = self._engine.advance(token)
            return self._texts.decode(chosen)
