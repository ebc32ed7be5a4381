"""Scoring an answer the model did not write: one teacher-forced forward pass.

:meth:`confroute.ConfRouter.score` asks the local model how sure it is of a given answer (a
cached one, an edited one, another model's). A backend that can do this implements
:class:`AnswerScoring`: it returns a :class:`~confroute.generation.Generation` whose per-token
statistics are those the model assigns to the answer's tokens after the prompt, so every
single-pass estimator, the probes and the follow-up estimators read it as if the model had
written it. Nothing is generated.

The answer is tokenised on its own and appended to the prompt's ids; a model that wrote the
same text may have split it differently at the prompt boundary (rare with byte-level BPE).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from confroute.errors import ConfigurationError
from confroute.generation import Generation, TokenAlternative

if TYPE_CHECKING:
    from confroute.backend import LocalBackend
    from confroute.llamacpp_cache import LlamaEngine
    from confroute.local import LocalModel
    from confroute.stops import TokenTexts

__all__ = [
    "AnswerScoring",
    "answer_scorer",
    "llama_teacher_forced",
    "teacher_forced",
    "teacher_forced_ids",
]


@runtime_checkable
class AnswerScoring(Protocol):
    """A backend that scores a given answer after a prompt (teacher forcing)."""

    def score_answer(
        self, prompt_ids: Sequence[int], answer: str, hidden_layer: int | None = None
    ) -> Generation:
        """The statistics the model assigns to ``answer``'s tokens after ``prompt_ids``.

        Raises:
            ConfigurationError: The answer is empty, or prompt plus answer exceed the context
                window.
        """
        ...


def answer_scorer(
    local: LocalBackend, answer: object, prompt_estimator: str | None
) -> AnswerScoring:
    """``local``, checked to score the given ``answer`` teacher-forced.

    Raises:
        ConfigurationError: The answer is empty, an estimator writes its own answer prompt
            (``prompt_estimator``: its name), or the backend cannot score a given answer.
    """
    if not isinstance(answer, str) or not answer.strip():
        raise ConfigurationError("score() needs the answer's text; got an empty answer.")
    if prompt_estimator is not None:
        raise ConfigurationError(
            f"The estimator {prompt_estimator!r} reads a confidence the model writes with its "
            "own answer, so it cannot score a given answer; choose another (for example "
            "perplexity or p_true)."
        )
    if not isinstance(local, AnswerScoring) or not local.capabilities.tokenizer:
        raise ConfigurationError(
            f"The {local.capabilities.backend} backend of {local.name!r} cannot score a given "
            "answer (it needs the log-probabilities of the answer's tokens after the prompt); "
            "use the transformers or llama.cpp backend."
        )
    return local


def teacher_forced(
    model: LocalModel, prompt_ids: Sequence[int], answer: str, hidden_layer: int | None = None
) -> Generation:
    """One forward pass of the transformers ``model`` over prompt plus answer.

    The caller holds the model's lock. transformers has no "score this continuation" helper
    that returns top-k and entropies per position (``compute_transition_scores`` needs a
    ``generate`` output), so the statistics are read from the logits here, the same way
    :class:`~confroute.decoding.BatchDecoder` reads them during generation.
    """
    answer_ids = [t for t in model.encode(answer) if t not in model.special_token_ids()]
    if not answer_ids:
        raise ConfigurationError("The answer to score is empty; pass the answer's text.")
    return teacher_forced_ids(model, prompt_ids, answer_ids, answer, hidden_layer)


def teacher_forced_ids(
    model: LocalModel,
    prompt_ids: Sequence[int],
    answer_ids: Sequence[int],
    text: str,
    hidden_layer: int | None = None,
) -> Generation:
    """:func:`teacher_forced` on already tokenised answer ids (``text`` is their text)."""
    import torch

    ids = [*prompt_ids, *answer_ids]
    if len(ids) > model.context_window:
        raise ConfigurationError(
            f"Prompt plus answer are {len(ids)} tokens, more than {model.name}'s context window "
            f"of {model.context_window}; shorten them."
        )
    device = next(model.model.parameters()).device
    with torch.inference_mode():
        out = model.model(
            input_ids=torch.tensor([ids], device=device),
            output_hidden_states=hidden_layer is not None,
        )
    start = len(prompt_ids) - 1  # the logits at position i predict token i + 1
    logits = out.logits[0, start : len(ids) - 1, :].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    chosen = torch.tensor(list(answer_ids), device=device)
    chosen_lp = logprobs.gather(-1, chosen[:, None])[:, 0].tolist()
    top = logprobs.topk(model.top_k, dim=-1)
    entropies = (-(logprobs.exp() * logprobs).nan_to_num().sum(-1)).tolist()
    piece = model.tokenizer.decode
    hidden = None
    if hidden_layer is not None:
        hidden = np.asarray(out.hidden_states[hidden_layer][0, -1].float().cpu().numpy())
    return Generation(
        text=text,
        token_ids=tuple(answer_ids),
        tokens=tuple(str(piece([t])) for t in answer_ids),
        logprobs=tuple(chosen_lp),
        top_logprobs=tuple(
            tuple(
                TokenAlternative(str(piece([tid])), tid, lp)
                for tid, lp in zip(ids_row, lps_row, strict=True)
            )
            for ids_row, lps_row in zip(top.indices.tolist(), top.values.tolist(), strict=True)
        ),
        entropies=tuple(entropies),
        finish_reason="stop",
        prompt_tokens=len(prompt_ids),
        model=model.name,
        hidden_state=hidden,
        hidden_layer=hidden_layer,
    )


def llama_teacher_forced(
    engine: LlamaEngine,
    texts: TokenTexts,
    prompt_ids: Sequence[int],
    answer_ids: Sequence[int],
    *,
    text: str,
    top_k: int,
    name: str,
) -> Generation:
    """The llama.cpp form of :func:`teacher_forced_ids`: one token at a time, last row only.

    The prompt is prefilled as answers are (see
    :meth:`~confroute.llamacpp_cache.LlamaEngine.prefill_answer`); then each answer token is
    scored on the logits before it and evaluated, so the statistics are those the decoding
    loop would have recorded had the model chosen these tokens. The caller holds the lock.
    """
    from confroute.llamacpp_decode import step, steps_generation

    engine.prefill_answer(list(prompt_ids))
    logits = engine.logits()
    steps = []
    for index, token in enumerate(answer_ids):
        steps.append(step(logits, top_k, chosen=token))
        if index + 1 < len(answer_ids):
            logits = engine.advance(token)
    return steps_generation(
        text,
        answer_ids,
        steps,
        texts,
        finish_reason="stop",
        prompt_tokens=len(prompt_ids),
        model=name,
    )
