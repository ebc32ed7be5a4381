"""The local small model: chat template, batched generation, and per-token statistics.

:class:`LocalModel` is the transformers :class:`~confroute.backend.LocalBackend`. Its decoding
loop (:mod:`confroute.decoding`) computes, at each step and for the whole batch, the chosen
token's log-probability, the top-k alternatives, the entropy of the next-token distribution and
(on request) the hidden state of one layer. Estimators read these; nothing is recomputed.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from confroute.backend import Capabilities, check_prompts_fit
from confroute.decoding import BatchDecoder
from confroute.devices import pick_device, pick_dtype
from confroute.errors import ConfigurationError
from confroute.forced import teacher_forced
from confroute.generation import Generation, GenerationConfig, StepMonitor, StepMonitorFactory
from confroute.messages import validate_messages
from confroute.models import DEFAULT_SLM, load_pretrained
from confroute.tools import normalize_tool_calls_for_template

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["GenerationConfig", "KeptPrefix", "LocalModel", "StepMonitor", "StepMonitorFactory"]

logger = logging.getLogger(__name__)

FALLBACK_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
"""The chat template of a model that ships none (every backend renders it the same way)."""


class LocalModel:
    """A causal language model on this machine that writes answers and reports their statistics.

    Thread-safe: concurrent callers (threads or asyncio tasks through :meth:`agenerate`) are
    served one batch at a time.

    Example:
        >>> slm = LocalModel("qwen2.5-coder-0.5b-instruct")  # doctest: +SKIP
        >>> [gen] = slm.generate([[{"role": "user", "content": "2+2?"}]])  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_SLM,
        *,
        device: str = "auto",
        dtype: str | torch.dtype = "auto",
        top_k: int = 5,
        max_batch_size: int = 8,
    ) -> None:
        """Load a model by bundled short name, local directory, ``.gguf`` file or hub id.

        Args:
            model: What to load (see :func:`confroute.models.resolve`).
            device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
            dtype: ``"auto"`` (bf16 where supported), a dtype name, or a ``torch.dtype``.
            top_k: Number of alternatives kept per token.
            max_batch_size: Largest batch run in one forward pass.
        """
        resolved_device = pick_device(device)
        weights = load_pretrained(model, pick_dtype(dtype, resolved_device), resolved_device)
        self._setup(
            weights.model,
            weights.tokenizer,
            weights.name,
            weights.fingerprint,
            top_k,
            max_batch_size,
        )

    @classmethod
    def from_model(
        cls,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        name: str = "custom",
        fingerprint: str | None = None,
        top_k: int = 5,
        max_batch_size: int = 8,
    ) -> LocalModel:
        """Wrap an already loaded transformers model and tokenizer."""
        instance = cls.__new__(cls)
        model.eval()
        instance._setup(model, tokenizer, name, fingerprint or name, top_k, max_batch_size)
        return instance

    def _setup(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        name: str,
        fingerprint: str,
        top_k: int,
        max_batch_size: int,
    ) -> None:
        if top_k < 1 or max_batch_size < 1:
            raise ConfigurationError("top_k and max_batch_size must be >= 1.")
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.fingerprint = fingerprint
        self.top_k = top_k
        self.max_batch_size = max_batch_size
        self._lock = threading.Lock()
        config = model.config
        self.context_window: int = int(
            getattr(config, "max_position_embeddings", None) or tokenizer.model_max_length
        )
        self.num_layers: int = int(config.num_hidden_layers)
        eos: set[int] = set()
        for source in (model.generation_config.eos_token_id, tokenizer.eos_token_id):
            if isinstance(source, int):
                eos.add(source)
            elif source is not None:
                eos.update(source)
        self._eos_ids = eos
        self._special_ids = set(tokenizer.all_special_ids) | eos
        pad = tokenizer.pad_token_id
        self._pad_id: int = pad if pad is not None else min(eos)
        self._device = next(model.parameters()).device
        # transformers >= 5.2x renamed ``past_key_values`` to ``cache``; accept both.
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._decoder = BatchDecoder(
            model,
            tokenizer,
            name=name,
            top_k=top_k,
            eos_ids=frozenset(eos),
            special_ids=frozenset(self._special_ids),
            pad_id=self._pad_id,
            cache_kw=self._cache_kw,
        )
        self.last_follow_up_reused = 0
        """Prompt tokens the last follow-up read from a kept cache (0: prefilled in full)."""
        self.capabilities = Capabilities(top_logprobs=top_k)
        """Everything: log-probs, top-k, entropies, samples, follow-ups from a kept cache,
        hidden states and a step monitor."""

    def __repr__(self) -> str:
        """Name and device, never weights."""
        return f"LocalModel(name={self.name!r}, device='{self._device}')"

    # -- prompts ---------------------------------------------------------------------------

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        """The prompt text for a conversation, with the generation prompt appended."""
        clean = [normalize_tool_calls_for_template(m) for m in validate_messages(messages)]
        template = None if self.tokenizer.chat_template else FALLBACK_CHAT_TEMPLATE
        text = self.tokenizer.apply_chat_template(
            clean,
            tools=list(tools) if tools else None,
            chat_template=template,
            add_generation_prompt=True,
            tokenize=False,
        )
        return str(text)

    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt text (no special tokens added: the template has them)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_tokens(self, messages: Sequence[Mapping[str, Any]]) -> int:
        """Number of prompt tokens of a conversation."""
        return len(self.encode(self.render(messages)))

    def vocabulary(self) -> list[tuple[str, int]]:
        """Every ``(token string, id)`` pair of the tokenizer."""
        return list(self.tokenizer.get_vocab().items())

    def special_token_ids(self) -> frozenset[int]:
        """Ids of the special tokens (end of turn, padding)."""
        return frozenset(self._special_ids)

    # -- generation ------------------------------------------------------------------------

    def generate(
        self,
        conversations: Sequence[Sequence[Mapping[str, Any]]],
        config: GenerationConfig | None = None,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[Generation]:
        """Answer a batch of conversations.

        Returns one :class:`Generation` per conversation, or ``num_samples`` consecutive ones
        per conversation when sampling several.

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
        """Answer already tokenised prompts (see :meth:`generate`)."""
        check_prompts_fit(prompts, config.max_new_tokens, self.context_window, self.name)
        # Samples of one prompt share its prefill: each chunk holds whole prompts, and their
        # cache is repeated num_samples times after the first forward pass.
        repeats = config.num_samples
        per_chunk = max(1, self.max_batch_size // repeats)
        unique = [list(ids) for ids in prompts]
        results: list[Generation] = []
        with self._lock:
            for start in range(0, len(unique), per_chunk):
                results.extend(self._decode(unique[start : start + per_chunk], config, repeats))
        return results

    def _decode(
        self, prompts: list[list[int]], config: GenerationConfig, repeats: int = 1
    ) -> list[Generation]:
        """Decode ``prompts`` in one batch.

        With ``repeats`` > 1 each prompt is prefilled once and then decoded ``repeats`` times;
        its rows are consecutive in the result.
        """
        batch = self._decoder.decode(prompts, config, repeats)
        if config.keep_cache and hasattr(batch.cache, "layers"):
            for row, generation in enumerate(batch.generations):
                generation.extras["prefix"] = KeptPrefix(
                    batch.cache, row, batch.starts[row], batch.kept_tokens[row]
                )
        return batch.generations

    def score_answer(
        self, prompt_ids: Sequence[int], answer: str, hidden_layer: int | None = None
    ) -> Generation:
        """Teacher-forced statistics of ``answer`` (see :mod:`confroute.forced`)."""
        with self._lock:
            return teacher_forced(self, prompt_ids, answer, hidden_layer)

    # -- follow-up turns that reuse the kept cache ------------------------------------------

    def next_token_logprobs(
        self, token_ids: Sequence[int], prefix: KeptPrefix | None = None
    ) -> np.ndarray:
        """Log-probabilities (natural log, whole vocabulary) of the token after ``token_ids``.

        With ``prefix`` (a generation's ``extras["prefix"]``, see
        :attr:`GenerationConfig.keep_cache`), the longest common prefix of ``token_ids`` and
        the kept sequence is read from the cache and only the rest is prefilled.
        """
        import torch

        with self._lock, torch.inference_mode():
            logits, _ = self._prefill(list(token_ids), prefix)
            return np.asarray(torch.log_softmax(logits, dim=-1).cpu().numpy())

    def continue_greedy(
        self, token_ids: Sequence[int], max_new_tokens: int, prefix: KeptPrefix | None = None
    ) -> str:
        """Greedy continuation of ``token_ids`` (special tokens dropped), reusing ``prefix``."""
        import torch

        chosen: list[int] = []
        with self._lock, torch.inference_mode():
            ids = list(token_ids)
            logits, cache = self._prefill(ids, prefix)
            position = len(ids)
            for _ in range(max_new_tokens):
                token = int(logits.argmax())
                if token in self._eos_ids:
                    break
                chosen.append(token)
                position += 1
                out = self.model(
                    input_ids=torch.tensor([[token]], device=self._device),
                    attention_mask=torch.ones((1, position), dtype=torch.long, device=self._device),
                    position_ids=torch.tensor([[position - 1]], device=self._device),
                    use_cache=True,
                    **{self._cache_kw: cache},
                )
                cache = getattr(out, self._cache_kw)
                logits = out.logits[0, -1, :].float()
        return str(self.tokenizer.decode(chosen, skip_special_tokens=True))

    def _prefill(self, ids: list[int], prefix: KeptPrefix | None) -> tuple[torch.Tensor, Any]:
        """Run the tokens not covered by ``prefix``; return the last logits and the cache."""
        import torch

        if not ids:
            raise ConfigurationError("A follow-up needs at least one token.")
        reused = 0
        cache = None
        if prefix is not None:
            reused = min(common_prefix(prefix.token_ids, ids), len(ids) - 1)
            if reused > 0:
                cache = prefix.slice(reused)
        self.last_follow_up_reused = reused
        logger.debug("follow-up: %d tokens from cache, %d prefilled", reused, len(ids) - reused)
        new = torch.tensor([ids[reused:]], dtype=torch.long, device=self._device)
        positions = torch.arange(reused, len(ids), device=self._device)[None, :]
        out = self.model(
            input_ids=new,
            attention_mask=torch.ones((1, len(ids)), dtype=torch.long, device=self._device),
            position_ids=positions,
            use_cache=True,
            **{self._cache_kw: cache},
        )
        return out.logits[0, -1, :].float(), getattr(out, self._cache_kw)


@dataclass(frozen=True)
class KeptPrefix:
    """The key/value cache of one generation's prompt and answer, kept for a follow-up turn.

    Attributes:
        cache: The batch's cache (shared by the rows of one batch; never modified).
        row: This generation's row in the batch.
        start: Index of the first real (not padding) position of the row.
        token_ids: The tokens the cache holds for this row, prompt first.
    """

    cache: Any
    row: int
    start: int
    token_ids: tuple[int, ...]

    def slice(self, length: int) -> Any:
        """A fresh one-row cache holding the first ``length`` tokens (the batch stays intact)."""
        from transformers import DynamicCache

        end = self.start + length
        data = [
            (
                layer.keys[self.row : self.row + 1, :, self.start : end],
                layer.values[self.row : self.row + 1, :, self.start : end],
            )
            for layer in self.cache.layers
        ]
        return DynamicCache(data)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share (cache reuse, both in-process engines)."""
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count
