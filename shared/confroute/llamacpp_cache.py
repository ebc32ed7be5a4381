"""llama.cpp's key/value cache as :class:`~confroute.llamacpp.LlamaCppModel` uses it.

``Llama.eval`` keeps the first ``Llama.n_tokens`` positions and drops the rest, so a prompt that
shares a prefix with what the cache holds evaluates only the new tokens: answers reuse a shared
system turn (:meth:`LlamaEngine.prefill_answer`, computed the same way whether reused or not),
the samples of one prompt share its prefill, and a follow-up turn reuses the answer it follows.
A kept prefix that another call is about to overwrite is first saved with
``llama_state_seq_get_data`` (the binding's ``Llama.save_state`` would also copy its whole
``n_batch x vocabulary`` score buffer, 311 MB for Qwen's 151,936 tokens, which the loop in
:mod:`confroute.llamacpp_decode` never fills).
"""

from __future__ import annotations

import ctypes
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from confroute.errors import ConfigurationError
from confroute.local import common_prefix

__all__ = ["KeptLlamaPrefix", "LlamaEngine", "user_turn_header"]


def user_turn_header(
    tokens_of: Callable[[list[Mapping[str, Any]]], list[int]], turn_ends: frozenset[int]
) -> tuple[int, ...]:
    """The tokens that open a user turn after a system turn in a model's chat template.

    ``tokens_of`` renders and encodes a conversation. Two probe conversations that differ
    only in the user's text share, after the system turn's end, exactly the user turn's
    header (a newline, ``<|im_start|>``, ``user`` and a newline for Qwen), which every chat
    with a system turn then repeats, so :meth:`LlamaEngine.prefill_answer`'s first batch
    takes it too. Empty for a template that refuses a system turn.
    """
    from jinja2.exceptions import TemplateError

    system = {"role": "system", "content": "S"}
    try:
        a, b = (tokens_of([system, {"role": "user", "content": text}]) for text in ("a", "b"))
    except TemplateError:
        return ()
    end = next((i + 1 for i, t in enumerate(a) if t in turn_ends), 0)
    shared = common_prefix(a, b)
    return tuple(a[end:shared]) if 0 < end < shared else ()


@dataclass(eq=False)
class KeptLlamaPrefix:
    """The tokens of one generation's prompt and answer that llama.cpp's cache held at its end.

    Kept in ``Generation.extras["prefix"]`` with ``GenerationConfig.keep_cache``. While the
    cache still holds them a follow-up reads them in place; before another call overwrites
    them they are saved in :attr:`state`.

    Attributes:
        token_ids: The tokens held, prompt first.
        state: llama.cpp's saved sequence state (None while the live cache holds them).
    """

    token_ids: tuple[int, ...]
    state: bytes | None = field(default=None, repr=False)


class LlamaEngine:
    """One llama.cpp context: its key/value cache, the last row of logits, saved prefixes.

    Not thread-safe: the model holds a lock around every call.
    """

    def __init__(
        self,
        llama: Any,
        lib: Any,
        turn_ends: frozenset[int] = frozenset(),
        turn_header: Sequence[int] = (),
    ) -> None:
        """Wrap one ``Llama``.

        Args:
            llama: a ``llama_cpp.Llama``.
            lib: the ``llama_cpp`` module.
            turn_ends: the token ids that end a chat turn (where :meth:`prefill_answer`
                splits a prompt).
            turn_header: the tokens that open the user turn after the system turn; when a
                prompt's first turn end is followed by them, the first batch takes them too.
        """
        self.llama = llama
        self._lib = lib
        self._turn_ends = turn_ends
        self._turn_header = tuple(turn_header)
        self._first_batch: tuple[int, ...] | None = None
        """The tokens :meth:`prefill_answer` last evaluated as one batch from an empty cache,
        while the cache still holds them as that batch left them."""
        self._n_vocab = int(llama.n_vocab())
        model = llama.model
        # recurrent and hybrid models cannot drop the tail of their memory: prefill in full
        self.truncatable = not (
            lib.llama_model_is_recurrent(model) or lib.llama_model_is_hybrid(model)
        )
        self._unsaved: weakref.WeakSet[KeptLlamaPrefix] = weakref.WeakSet()

    def live(self) -> list[int]:
        """The tokens the cache holds."""
        return [int(t) for t in self.llama.input_ids[: self.llama.n_tokens]]

    def logits(self) -> np.ndarray:
        """The logits after the last evaluated token (a view, valid until the next eval)."""
        pointer = self._lib.llama_get_logits_ith(self.llama.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self._n_vocab,))

    def advance(self, token: int) -> np.ndarray:
        """Evaluate one more token; return the logits after it (a view).

        ``Llama.eval`` (0.3.36) copies no logits without ``logits_all``; its Python around
        ``llama_decode`` took 0.1 ms a token under cProfile, so the loop keeps it.
        """
        self.llama.eval([token])
        return self.logits()

    def prefill(self, ids: Sequence[int], prefix: KeptLlamaPrefix | None = None) -> int:
        """Make the cache hold ``ids``, evaluating only what it lacks; return the tokens reused.

        The logits after the last token are then :meth:`logits`. ``prefix`` (a kept
        generation) is restored first when the cache no longer holds it. Follow-up turns use
        it; answers use :meth:`prefill_answer`.
        """
        if not ids:
            raise ConfigurationError("A llama.cpp prompt needs at least one token.")
        live = self.live()
        kept = prefix.token_ids if prefix is not None and prefix.state is not None else ()
        if prefix is not None and common_prefix(kept, ids) > common_prefix(live, ids):
            self._restore(prefix)
            live = list(prefix.token_ids)
        reused = min(common_prefix(live, ids), len(ids) - 1) if self.truncatable else 0
        self.rewind(reused)
        self.llama.eval(list(ids[reused:]))
        return reused

    def prefill_answer(self, ids: Sequence[int]) -> int:
        """Make the cache hold ``ids`` the same way whatever ran before; return the tokens reused.

        A prompt is evaluated as two batches split after its first turn-end token (the end of
        the chat template's system turn) and the user turn's header when it follows (4 tokens
        on the bundled Qwen models, which every answer would otherwise prefill again), or as
        one batch when it has none. The first batch is read from the cache when the last
        answer's prompt began with the same tokens and the cache still holds them as that
        batch left them; otherwise it is evaluated from an empty cache. Either way each
        position is computed by the same batches, so an answer and its confidence never
        depend on what ran before (evaluating from the longest cached prefix, as
        ``Llama.generate`` does, moved the first token's log-prob by 0.02 nats on the bundled
        0.5B and flipped a near-tie greedy token), and prompts that share a system turn (a RAG
        instruction, a tool list) prefill it once.
        """
        if not ids:
            raise ConfigurationError("A llama.cpp prompt needs at least one token.")
        split = next((i + 1 for i, t in enumerate(ids) if t in self._turn_ends), 0)
        header = self._turn_header
        if split and header and tuple(ids[split : split + len(header)]) == header:
            split += len(header)
        if not self.truncatable or not 0 < split < len(ids):
            self.rewind(0)
            self.llama.eval(list(ids))
            return 0
        head = tuple(ids[:split])
        if self._first_batch == head and tuple(self.live()[:split]) == head:
            self.rewind(split)
            self.llama.eval(list(ids[split:]))
            return split
        self.rewind(0)
        self.llama.eval(list(head))
        self._first_batch = head
        self.llama.eval(list(ids[split:]))
        return 0

    def rewind(self, length: int) -> None:
        """Keep only the first ``length`` tokens of the cache (the next eval drops the rest)."""
        self._protect(length)
        if self._first_batch is not None and length < len(self._first_batch):
            self._first_batch = None
        if length == 0 or not self.truncatable:
            self.llama.reset()  # a recurrent model starts over: the caller prefills again
            return
        self.llama.n_tokens = length

    def keep(self) -> KeptLlamaPrefix:
        """A handle on what the cache holds now, saved before anything overwrites it."""
        handle = KeptLlamaPrefix(tuple(self.live()))
        self._unsaved.add(handle)
        return handle

    def _protect(self, length: int) -> None:
        """Save every kept prefix longer than ``length`` that the cache still holds."""
        live: list[int] | None = None
        for handle in list(self._unsaved):
            if len(handle.token_ids) <= length:
                continue
            self._unsaved.discard(handle)
            live = self.live() if live is None else live
            if tuple(live[: len(handle.token_ids)]) == handle.token_ids:
                handle.state = self._snapshot()
            # else the Llama was used directly in between: the handle is lost, and a
            # follow-up on it prefills in full

    def _snapshot(self) -> bytes:
        ctx = self.llama.ctx
        size = int(self._lib.llama_state_seq_get_size(ctx, 0))
        buffer = (ctypes.c_uint8 * size)()
        written = int(self._lib.llama_state_seq_get_data(ctx, buffer, size, 0))
        return bytes(buffer)[:written]

    def _restore(self, handle: KeptLlamaPrefix) -> None:
        assert handle.state is not None
        self._protect(0)
        state = handle.state
        buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        self.llama.reset()
        self._first_batch = None
        if int(self._lib.llama_state_seq_set_data(self.llama.ctx, buffer, len(state), 0)) == 0:
            raise ConfigurationError("llama.cpp could not restore a kept prefix.")
        count = len(handle.token_ids)
        self.llama.input_ids[:count] = handle.token_ids
        self.llama.n_tokens = count
