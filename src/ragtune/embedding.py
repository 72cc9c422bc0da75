"""Turning text into normalised vectors with a sentence-transformers model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ragtune.models import ModelRef, load_sentence_transformer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class Embedder:
    """Encodes passages and queries into unit-length float32 vectors (so inner product = cosine)."""

    def __init__(self, model: ModelRef, batch_size: int = 64) -> None:
        self.model_ref = model
        self.batch_size = batch_size
        self._model = load_sentence_transformer(model.path)

    @property
    def dimension(self) -> int:
        return int(self._model.get_embedding_dimension())

    @property
    def max_seq_length(self) -> int:
        return int(self._model.max_seq_length)

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self._model.tokenizer

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode([text])[0]
