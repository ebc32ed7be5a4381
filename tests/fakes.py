"""Test doubles shared by the unit suites: a tiny random model and scripted generations.

Nothing here touches the network or downloads weights: the tokenizer is trained in memory on a
few sentences and the model is a randomly initialised 8-layer Qwen2 of a few thousand weights.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from confroute.backend import Capabilities
from confroute.generation import Generation, GenerationConfig, TokenAlternative
from confroute.local import LocalModel
from confroute.target import EscalationResult, StreamDelta

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "What is 17*23? The answer is 391.",
    "The capital of France is Paris.",
    "user assistant system tool call result",
    "0 1 2 3 4 5 6 7 8 9 + - * / = ? ! . , : ; ( ) [ ] { }",
    "Yes no true false maybe A B C D E",
] * 4


def tiny_tokenizer() -> Any:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        _CORPUS,
        vocab_size=400,
        min_frequency=1,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_model(vocab_size: int, eos_id: int, pad_id: int, seed: int = 0) -> Any:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=8,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        bos_token_id=pad_id,
        tie_word_embeddings=False,
    )
    return Qwen2ForCausalLM(config).eval()


def tiny_local_model(seed: int = 0) -> LocalModel:
    tokenizer = tiny_tokenizer()
    model = tiny_model(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, seed)
    return LocalModel.from_model(model, tokenizer, name="tiny-random", fingerprint="tiny-sha")


def two_format_profile(n: int = 300, seed: int = 0) -> Any:
    """A calibration profile of ``n`` letter and ``n`` yes/no confidences (invented, seeded)."""
    from confroute.calibration import CalibrationProfile, PoolItem, ProfileFingerprint

    rng = np.random.default_rng(seed)
    items = [
        PoolItem(dataset="mc", item_id=f"m{i}", confidence=float(v), answer_format="letter")
        for i, v in enumerate(rng.beta(5, 2, n))
    ] + [
        PoolItem(dataset="yn", item_id=f"y{i}", confidence=float(v), answer_format="yes_no")
        for i, v in enumerate(rng.beta(8, 2, n))
    ]
    fingerprint = ProfileFingerprint(
        model_name="slm", model_fingerprint="a" * 64, estimator="perplexity"
    )
    return CalibrationProfile.from_pool(items, fingerprint)


def scripted_generation(
    text: str,
    token_probs: Sequence[float],
    *,
    finish_reason: str = "stop",
    prompt_tokens: int = 7,
    model: str = "scripted",
) -> Generation:
    """A generation whose tokens are the characters of ``text`` with the given probabilities."""
    pieces = list(text) if len(text) == len(token_probs) else [text] * len(token_probs)
    logprobs = tuple(math.log(p) for p in token_probs)
    return Generation(
        text=text,
        token_ids=tuple(range(len(token_probs))),
        tokens=tuple(pieces),
        logprobs=logprobs,
        top_logprobs=tuple(
            (TokenAlternative(t, i, lp),)
            for i, (t, lp) in enumerate(zip(pieces, logprobs, strict=False))
        ),
        entropies=tuple(-p * math.log(p) for p in token_probs),
        finish_reason=finish_reason,  # type: ignore[arg-type]
        prompt_tokens=prompt_tokens,
        model=model,
    )


SCRIPTED_CAPABILITIES = Capabilities(
    top_logprobs=1, kept_prefix=False, hidden_state=False, step_monitor=True
)
"""What :class:`ScriptedLocalModel` serves: one alternative per token, follow-ups through the
tiny real model (prefilled in full), no hidden states, samples as copies, a step monitor."""


@dataclass
class ScriptedLocalModel:
    """A :class:`~confroute.backend.LocalBackend` whose answers come from a script.

    The template, tokenizer and follow-up turns are a tiny real LocalModel's (held, not
    inherited). ``script`` maps the last user message to (text, per-token probabilities);
    anything else gets ``default``. ``calls`` records the number of prompts of each
    :meth:`generate_from_ids` call.
    """

    script: dict[str, tuple[str, Sequence[float]]] = field(default_factory=dict)
    default: tuple[str, Sequence[float]] = ("I am not sure.", (0.5, 0.5, 0.5))
    calls: list[int] = field(default_factory=list)
    name: str = "scripted-slm"
    fingerprint: str = "scripted-sha"
    context_window: int = 1024
    max_batch_size: int = 8
    capabilities: Capabilities = SCRIPTED_CAPABILITIES

    def __post_init__(self) -> None:
        self.base = tiny_local_model()
        self._by_prompt: dict[tuple[int, ...], tuple[str, Sequence[float]]] = {}
        self._mutex = threading.Lock()

    @property
    def tokenizer(self) -> Any:
        """The tiny real model's tokenizer."""
        return self.base.tokenizer

    def answer_for(self, messages: Sequence[Mapping[str, Any]]) -> tuple[str, Sequence[float]]:
        """The scripted answer of a conversation: by its last user message."""
        last_user = [m for m in messages if m["role"] == "user"][-1]["content"]
        return self.script.get(last_user, self.default)

    def render(self, messages: Any, tools: Any = None) -> str:
        text = self.base.render(messages, tools)
        ids = tuple(self.encode(text))
        with self._mutex:
            self._by_prompt[ids] = self.answer_for(messages)
        return text

    def encode(self, text: str) -> list[int]:
        return self.base.encode(text)

    def count_tokens(self, messages: Sequence[Mapping[str, Any]]) -> int:
        return len(self.encode(self.render(messages)))

    def vocabulary(self) -> Sequence[tuple[str, int]]:
        return self.base.vocabulary()

    def special_token_ids(self) -> frozenset[int]:
        return self.base.special_token_ids()

    def generate(
        self,
        conversations: Sequence[Sequence[Mapping[str, Any]]],
        config: GenerationConfig | None = None,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[Generation]:
        prompts = [self.encode(self.render(c, tools)) for c in conversations]
        return self.generate_from_ids(prompts, config or GenerationConfig())

    async def agenerate(
        self,
        conversations: Sequence[Sequence[Mapping[str, Any]]],
        config: GenerationConfig | None = None,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[Generation]:
        return await asyncio.to_thread(self.generate, conversations, config, tools=tools)

    def generate_from_ids(
        self, prompts: Sequence[Sequence[int]], config: GenerationConfig
    ) -> list[Generation]:
        self.calls.append(len(prompts))
        answers = [self._by_prompt[tuple(ids)] for ids in prompts]
        kept = _monitored_lengths(answers, config)
        return [
            _scripted_answer(text, probs, length, len(ids), self.name)
            for ids, (text, probs), length in zip(prompts, answers, kept, strict=True)
            for _ in range(config.num_samples)
        ]

    def next_token_logprobs(self, token_ids: Sequence[int], prefix: Any = None) -> np.ndarray:
        return self.base.next_token_logprobs(token_ids)

    def continue_greedy(
        self, token_ids: Sequence[int], max_new_tokens: int, prefix: Any = None
    ) -> str:
        return self.base.continue_greedy(token_ids, max_new_tokens)


def _monitored_lengths(
    answers: Sequence[tuple[str, Sequence[float]]], config: GenerationConfig
) -> list[int | None]:
    """Run ``config.step_monitor`` over the scripted tokens: the length each stopped row keeps."""
    kept: list[int | None] = [None] * len(answers)
    if config.step_monitor is None:
        return kept
    monitor = config.step_monitor(len(answers))
    longest = max((len(probs) for _, probs in answers), default=0)
    for step in range(min(longest, config.max_new_tokens)):
        live = [step < len(probs) and kept[row] is None for row, (_, probs) in enumerate(answers)]
        logprobs = [
            math.log(probs[step]) if live[row] else 0.0 for row, (_, probs) in enumerate(answers)
        ]
        entropies = [-math.exp(lp) * lp for lp in logprobs]
        flags = monitor(step, [step] * len(answers), logprobs, entropies)
        for row, stop_now in enumerate(flags):
            if stop_now and live[row]:
                kept[row] = step + 1
    return kept


def _scripted_answer(
    text: str, probs: Sequence[float], length: int | None, prompt_tokens: int, model: str
) -> Generation:
    """A scripted answer, cut after ``length`` tokens where a step monitor stopped it."""
    if length is None:
        return scripted_generation(text, probs, prompt_tokens=prompt_tokens, model=model)
    cut = text[:length] if len(text) == len(probs) else text
    generation = scripted_generation(
        cut, probs[:length], finish_reason="length", prompt_tokens=prompt_tokens, model=model
    )
    generation.extras["stopped_early_at"] = length  # as LocalModel marks a stopped row
    return generation


@dataclass
class ScriptedProvider:
    """Behaviour of the ``scripted/`` LiteLLM provider used by unit tests.

    ``answers`` is consumed in order: a string is returned as the answer, a dict as the
    assistant message (``content`` and ``tool_calls`` in the OpenAI shape), an exception raised.
    When it runs out, ``default`` is returned.
    """

    answers: list[Any] = field(default_factory=list)
    default: str = "strong answer"
    calls: list[dict[str, Any]] = field(default_factory=list)

    def next(self, request: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(request)
        if self.answers:
            item = self.answers.pop(0)
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, dict):
                return {"role": "assistant", **item}
            return {"role": "assistant", "content": str(item)}
        return {"role": "assistant", "content": self.default}


def install_scripted_provider(behaviour: ScriptedProvider) -> Callable[[], None]:
    """Register ``scripted/`` with LiteLLM; returns a function that removes it."""
    import litellm
    from litellm import CustomLLM, ModelResponse

    def respond(model: str, messages: list[Any], kwargs: dict[str, Any]) -> Any:
        optional = kwargs.get("optional_params") or {}
        message = behaviour.next(
            {
                "model": model,
                "messages": messages,
                "optional_params": optional,
                "api_key": kwargs.get("api_key"),
            }
        )
        return ModelResponse(
            model=model,
            choices=[
                {
                    "index": 0,
                    "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
                    "message": message,
                }
            ],
            usage={"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
        )

    class Handler(CustomLLM):  # type: ignore[misc]
        def completion(self, model: str, messages: list[Any], *args: Any, **kwargs: Any) -> Any:
            return respond(model, messages, kwargs)

        async def acompletion(
            self, model: str, messages: list[Any], *args: Any, **kwargs: Any
        ) -> Any:
            return respond(model, messages, kwargs)

        def streaming(
            self, model: str, messages: list[Any], *args: Any, **kwargs: Any
        ) -> Iterator[Any]:
            response = respond(model, messages, kwargs)
            message = response.choices[0].message
            for index, call in enumerate(message.tool_calls or []):
                yield {
                    "text": "",
                    "tool_use": {
                        "id": call.id,
                        "type": "function",
                        "function": {
                            "name": call.function.name,
                            "arguments": call.function.arguments,
                        },
                        "index": index,
                    },
                    "is_finished": False,
                    "finish_reason": "",
                    "usage": None,
                    "index": 0,
                }
            words = (message.content or "").split(" ")
            for i, word in enumerate(words):
                last = i == len(words) - 1
                yield {
                    "text": word if last else word + " ",
                    "tool_use": None,
                    "is_finished": last,
                    "finish_reason": "stop" if last else "",
                    "usage": None,
                    "index": 0,
                }

        async def astreaming(
            self, model: str, messages: list[Any], *args: Any, **kwargs: Any
        ) -> Any:
            for chunk in self.streaming(model, messages, *args, **kwargs):
                yield chunk

    entry = {"provider": "scripted", "custom_handler": Handler()}
    litellm.custom_provider_map.append(entry)
    litellm.utils.custom_llm_setup()

    def remove() -> None:
        litellm.custom_provider_map.remove(entry)

    return remove


class ListTarget:
    """An EscalationTarget (not an Escalation) that answers with fixed pieces."""

    model = "list/strong"

    def __init__(self, pieces: Sequence[str] = ("str", "ong")) -> None:
        self.pieces = list(pieces)
        self.calls: list[str] = []

    def _result(self) -> EscalationResult:
        return EscalationResult(text="".join(self.pieces), model=self.model, attempts=1)

    def complete(self, messages: Sequence[Mapping[str, Any]], **_: Any) -> EscalationResult:
        self.calls.append("complete")
        return self._result()

    async def acomplete(self, messages: Sequence[Mapping[str, Any]], **_: Any) -> EscalationResult:
        self.calls.append("acomplete")
        return self._result()

    def stream(self, messages: Sequence[Mapping[str, Any]], **_: Any) -> Iterator[StreamDelta]:
        self.calls.append("stream")
        for piece in self.pieces:
            yield StreamDelta(text=piece)
        yield StreamDelta(result=self._result())

    async def astream(
        self, messages: Sequence[Mapping[str, Any]], **_: Any
    ) -> AsyncIterator[StreamDelta]:
        self.calls.append("astream")
        for piece in self.pieces:
            yield StreamDelta(text=piece)
        yield StreamDelta(result=self._result())
