"""The local small model: chat template, batched generation, and per-token statistics.

One decoding loop computes, at each step and for the whole batch, the chosen token's
log-probability, the top-k alternatives, the entropy of the next-token distribution and (on
request) the hidden state of one layer. Estimators read these; nothing is recomputed.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from confroute.backend import Capabilities
from confroute.errors import ConfigurationError, ContextOverflowError
from confroute.generation import (
    Generation,
    GenerationConfig,
    StepMonitor,
    StepMonitorFactory,
    TokenAlternative,
)
from confroute.messages import validate_messages
from confroute.models import DEFAULT_SLM, load_pretrained
from confroute.tools import normalize_tool_calls_for_template

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["GenerationConfig", "KeptPrefix", "LocalModel", "StepMonitor", "StepMonitorFactory"]

logger = logging.getLogger(__name__)

_FALLBACK_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def _pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigurationError(f"device={device!r} was asked for but CUDA is not available.")
    return device


def _pick_dtype(dtype: str | torch.dtype, device: str) -> torch.dtype:
    import torch

    if not isinstance(dtype, str):
        return dtype
    if dtype == "auto":
        if device.startswith("cuda") and not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16
    try:
        value = getattr(torch, dtype)
    except AttributeError as error:
        raise ConfigurationError(
            f"Unknown dtype {dtype!r}; use 'auto', 'bfloat16', 'float16' or 'float32'."
        ) from error
    if not isinstance(value, torch.dtype):
        raise ConfigurationError(f"{dtype!r} is not a torch dtype.")
    return value


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
        resolved_device = _pick_device(device)
        weights = load_pretrained(model, _pick_dtype(dtype, resolved_device), resolved_device)
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
        template = None if self.tokenizer.chat_template else _FALLBACK_TEMPLATE
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
        for ids in prompts:
            if len(ids) + config.max_new_tokens > self.context_window:
                raise ContextOverflowError(
                    f"The prompt has {len(ids)} tokens; with max_new_tokens="
                    f"{config.max_new_tokens} it exceeds {self.name}'s context window of "
                    f"{self.context_window} tokens. Shorten the prompt or lower max_new_tokens.",
                    prompt_tokens=len(ids),
                    context_window=self.context_window,
                )
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
        import torch

        started = time.perf_counter()
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self._pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[row, width - len(ids) :] = 1
        input_ids = input_ids.to(self._device)
        attention = attention.to(self._device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        prompts = [ids for ids in prompts for _ in range(repeats)]
        batch = len(prompts)
        sampler = None
        if config.temperature > 0:
            sampler = torch.Generator(device=self._device)
            sampler.manual_seed(config.seed if config.seed is not None else int(time.time_ns()))
        want_hidden = config.hidden_layer is not None
        steps: list[_Step] = []
        done = [False] * batch
        done_at: list[int | None] = [None] * batch
        ended_by_stop = [False] * batch
        lengths = [0] * batch
        hidden_at_end: list[torch.Tensor | None] = [None] * batch
        monitor = config.step_monitor(batch) if config.step_monitor is not None else None
        stopped_early = [False] * batch
        cache = None
        with torch.inference_mode():
            for step in range(config.max_new_tokens):
                out = self.model(
                    input_ids=input_ids,
                    attention_mask=attention,
                    position_ids=positions,
                    use_cache=True,
                    output_hidden_states=want_hidden,
                    **{self._cache_kw: cache},
                )
                cache = getattr(out, self._cache_kw)
                logits = out.logits[:, -1, :].float()
                hidden = (
                    out.hidden_states[config.hidden_layer][:, -1, :].float()
                    if want_hidden and config.hidden_layer is not None
                    else None
                )
                if step == 0 and repeats > 1:  # fan the shared prefill out to the samples
                    cache.batch_repeat_interleave(repeats)
                    logits = logits.repeat_interleave(repeats, dim=0)
                    attention = attention.repeat_interleave(repeats, dim=0)
                    positions = positions.repeat_interleave(repeats, dim=0)
                    if hidden is not None:
                        hidden = hidden.repeat_interleave(repeats, dim=0)
                logprobs = torch.log_softmax(logits, dim=-1)
                if sampler is None:
                    chosen = logprobs.argmax(dim=-1)
                else:
                    chosen = _sample(logits, config.temperature, config.top_p, sampler)
                chosen_lp = logprobs.gather(-1, chosen[:, None])[:, 0]
                top = logprobs.topk(self.top_k, dim=-1)
                entropy = -(logprobs.exp() * logprobs).nan_to_num().sum(-1)
                steps.append(
                    _Step(
                        chosen.tolist(),
                        chosen_lp.tolist(),
                        top.indices.tolist(),
                        top.values.tolist(),
                        entropy.tolist(),
                    )
                )
                for row in range(batch):
                    if done[row]:
                        continue
                    token = steps[-1].chosen[row]
                    if hidden is not None:
                        hidden_at_end[row] = hidden[row]
                    if token in self._eos_ids:
                        done[row], ended_by_stop[row], done_at[row] = True, True, step
                        continue
                    lengths[row] = step + 1
                    if config.stop and self._hit_stop(steps, row, config.stop):
                        done[row], ended_by_stop[row], done_at[row] = True, True, step
                if monitor is not None:  # step monitor hook (confroute.serving.early)
                    last = steps[-1]
                    flags = monitor(step, last.chosen, last.chosen_lp, last.entropy)
                    for row, stop_now in enumerate(flags):
                        if stop_now and not done[row]:
                            done[row], done_at[row], stopped_early[row] = True, step, True
                if all(done):
                    break
                next_ids = torch.tensor(
                    [self._pad_id if done[r] else steps[-1].chosen[r] for r in range(batch)],
                    dtype=torch.long,
                    device=self._device,
                )
                input_ids = next_ids[:, None]
                attention = torch.cat([attention, attention.new_ones((batch, 1))], dim=-1)
                positions = positions[:, -1:] + 1
        elapsed = time.perf_counter() - started
        generations = [
            self._assemble(
                steps,
                row,
                lengths[row],
                ended_by_stop[row],
                len(prompts[row]),
                config,
                hidden_at_end[row],
                elapsed,
            )
            for row in range(batch)
        ]
        for row, generation in enumerate(generations):  # step monitor hook
            if stopped_early[row]:
                generation.extras["stopped_early_at"] = lengths[row]
        if config.keep_cache and cache is not None and hasattr(cache, "layers"):
            for row, generation in enumerate(generations):
                # Tokens chosen at steps 0..fed-1 were fed back, so the cache holds them; the
                # last chosen token (end of turn, stop, or the cap) never was.
                fed = done_at[row] if done_at[row] is not None else len(steps) - 1
                answer = [steps[i].chosen[row] for i in range(fed or 0)]
                generation.extras["prefix"] = KeptPrefix(
                    cache, row, width - len(prompts[row]), (*prompts[row], *answer)
                )
        return generations

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
            reused = min(_common_prefix(prefix.token_ids, ids), len(ids) - 1)
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

    def _hit_stop(self, steps: list[_Step], row: int, stop: tuple[str, ...]) -> bool:
        ids = [s.chosen[row] for s in steps]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return any(s in text for s in stop)

    def _assemble(
        self,
        steps: list[_Step],
        row: int,
        length: int,
        stopped: bool,
        prompt_tokens: int,
        config: GenerationConfig,
        hidden: torch.Tensor | None,
        elapsed: float,
    ) -> Generation:
        keep = [i for i in range(length) if steps[i].chosen[row] not in self._special_ids]
        ids = [steps[i].chosen[row] for i in keep]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if config.stop:
            cut = min((text.find(s) for s in config.stop if s in text), default=-1)
            if cut >= 0:
                text = text[:cut]
                # keep the tokens whose decoded text lies before the stop sequence
                count = len(ids)
                while (
                    count > 0
                    and len(self.tokenizer.decode(ids[:count], skip_special_tokens=True)) > cut
                ):
                    count -= 1
                keep, ids = keep[:count], ids[:count]
        decode = self.tokenizer.decode
        return Generation(
            text=text,
            token_ids=tuple(ids),
            tokens=tuple(decode([t]) for t in ids),
            logprobs=tuple(steps[i].chosen_lp[row] for i in keep),
            top_logprobs=tuple(
                tuple(
                    TokenAlternative(decode([tid]), tid, lp)
                    for tid, lp in zip(steps[i].top_ids[row], steps[i].top_lps[row], strict=True)
                )
                for i in keep
            ),
            entropies=tuple(steps[i].entropy[row] for i in keep),
            finish_reason="stop" if stopped else "length",
            prompt_tokens=prompt_tokens,
            model=self.name,
            latency_s=elapsed,
            hidden_state=None if hidden is None else np.asarray(hidden.cpu().numpy()),
            hidden_layer=config.hidden_layer,
        )


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


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


@dataclass
class _Step:
    chosen: list[int]
    chosen_lp: list[float]
    top_ids: list[list[int]]
    top_lps: list[list[float]]
    entropy: list[float]


def _sample(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator
) -> torch.Tensor:
    import torch

    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        cumulative = sorted_probs.cumsum(-1)
        sorted_probs[(cumulative - sorted_probs) > top_p] = 0.0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        probs = probs / probs.sum(-1, keepdim=True)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]
