"""Turning text into normalised vectors with a sentence-transformers model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ragtune.models import ModelRef, inference_precision, load_sentence_transformer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class Embedder:
    """Encodes passages and queries into unit-length float32 vectors (so inner product = cosine).

    `precision` None picks bf16 on CPUs that support it natively (see `inference_precision`).
    """

    def __init__(self, model: ModelRef, batch_size: int = 64, precision: str | None = None) -> None:
        self.model_ref = model
        self.batch_size = batch_size
        self.precision = inference_precision(precision)
        self._model = load_sentence_transformer(model.path, self.precision)

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
            convert_to_tensor=True,
            show_progress_bar=False,
        )
        vectors = vectors.float().numpy()  # normalised in float32: a bf16 norm is off by up to 0.3 %
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode([text])[0]
