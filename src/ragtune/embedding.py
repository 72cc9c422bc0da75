"""Turning text into normalised vectors with a sentence-transformers model (run by an `Encoder` backend)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ragtune.backend_choice import fastest_document_backend
from ragtune.encoders import encoder_backend, make_encoder
from ragtune.errors import RagtuneError
from ragtune.linear_packing import packs_linear_weights
from ragtune.models import ModelRef, inference_device, inference_precision, load_sentence_transformer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class TextEncoder(Protocol):
    """What searching needs of an encoder: the `Embedder`, or a wrapper of it (`QueryBatcher`) giving the same
    vectors."""

    @property
    def model_ref(self) -> ModelRef: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_query(self, text: str) -> np.ndarray: ...

    def count_tokens(self, texts: Sequence[str]) -> int: ...


TEXTS_PER_CALL = 512
"""Texts a store update encodes (and commits) at a time on this machine."""
RECENT_QUERY_TEXTS = 1024
"""Texts a query embedder remembers the vectors of: answering one question encodes it for retrieval, for the
relevance floor and for evidence scoring, and the sentences of a passage come back with every question it answers."""


def vector_kind(precision: str, backend: str, device: str) -> str:
    """What decides a vector beyond the model and the text (`bf16/torch-packed`, `bf16/torch/cuda`): vectors of one
    kind are identical for one text; of two kinds, within rounding (cosine ≥ 0.999). The embedding cache keeps them
    apart. `-packed`: torch with oneDNN-packed linear layers (`ragtune.linear_packing`), as loaded on this machine."""
    packed = backend == "torch" and packs_linear_weights(precision, device)
    return f"{precision}/{backend}" + ("-packed" if packed else "") + ("" if device == "cpu" else f"/{device}")


class PassageEncoder(Protocol):
    """What a store update needs to encode passages: here (`Embedder`) or on a cluster (`RayEncoder`)."""

    @property
    def model_ref(self) -> ModelRef: ...

    @property
    def vector_kind(self) -> str: ...

    @property
    def texts_per_call(self) -> int: ...

    def encode_blocks(self, texts: Sequence[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(positions in `texts`, their unit vectors) until every text is encoded once, in any order."""
        ...


CPU_BATCH_SIZE = 32
"""On the AMX Xeon SciFact's documents encoded 1.18× faster at 32 than at 64 with packed bf16 layers (35.5 s against
41.7 s, medians of 3 rounds in turns, bench/bench_encode.py --torch-batch-sizes, 2026-12-05; fp32 1.05× on a probe).
Why was not measured (a batch of 32 holds half the activations of 64 between layers)."""
GPU_BATCH_SIZE = 256
"""On a GPU a MiniLM batch of 64 leaves the device idle between launches: SciFact on an H200 encoded in 6.1–6.9 s at
64 and 4.6–5.4 s at 256 with one tokenizer thread; tokenizing in threads, both take ~2.1 s (bench/bench_encode_cuda.py,
2026-12-04): the CPU is what limits them."""


def default_batch_size(device: str) -> int:
    return GPU_BATCH_SIZE if device == "cuda" else CPU_BATCH_SIZE


class Embedder:
    """Encodes passages and queries into unit-length float32 vectors (so inner product = cosine).

    `precision` None picks bf16 on CPUs that support it natively (see `inference_precision`); `backend` None picks
    the encoder measured faster for `purpose` (see `encoder_backend`: for documents the one timed faster on this
    machine, once, `backend_choice`; OpenVINO for queries).
    `device` None or "auto" picks CUDA where a GPU is visible (torch there; bf16 where the GPU has it).
    `precision` "int8" (queries only, OpenVINO, on the CPU) quantizes the model on `calibration` texts
    (`ragtune.query_quantization`); the operations left in floating point run in float32, and the int8 vectors are
    checked against the float model at the precision auto would pick.
    """

    texts_per_call = TEXTS_PER_CALL

    def __init__(
        self,
        model: ModelRef,
        batch_size: int | None = None,
        precision: str | None = None,
        backend: str | None = None,
        purpose: str = "documents",
        device: str | None = None,
        calibration: Sequence[str] = (),
    ) -> None:
        self.model_ref = model
        self.device = inference_device(device)
        batch_size = batch_size or default_batch_size(self.device)
        self.batch_size = batch_size
        int8 = precision == "int8"
        if int8 and (purpose != "queries" or self.device != "cpu" or not calibration):
            raise RagtuneError("int8 encoding is for queries on the CPU, calibrated on texts of the store")
        self.precision = inference_precision(None if int8 else precision, self.device)
        self.backend = "torch" if self.device != "cpu" else encoder_backend(
            backend, purpose, measure=lambda: fastest_document_backend(model, self.precision, batch_size)
        )
        self._model = load_sentence_transformer(
            model.path, self.precision if self.backend == "torch" else "fp32", self.device
        )
        self._encoder = make_encoder(self.backend, self._model, model, self.precision, batch_size,
                                     int8_calibration=calibration if int8 else ())  # fmt: skip
        if int8:
            self.precision = "int8"
        self._vector_kind = vector_kind(self.precision, self.backend, self.device)  # as loaded: packing decided now
        self._recent: OrderedDict[str, np.ndarray] | None = OrderedDict() if purpose == "queries" else None
        self._recent_lock = threading.Lock()

    @property
    def vector_kind(self) -> str:
        return self._vector_kind

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
        if self._recent is None:
            return self._encode_now(texts)
        with self._recent_lock:
            known = {text: self._recent[text] for text in set(texts) if text in self._recent}
            for text in known:
                self._recent.move_to_end(text)
        missing = list(dict.fromkeys(text for text in texts if text not in known))
        if missing:
            fresh = self._encode_now(missing)
            known.update(zip(missing, fresh, strict=True))
            with self._recent_lock:
                self._recent.update(zip(missing, fresh, strict=True))
                while len(self._recent) > RECENT_QUERY_TEXTS:
                    self._recent.popitem(last=False)
        return np.stack([known[text] for text in texts])  # a new array: callers cannot change what is remembered

    def _encode_now(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._encoder.encode(texts)  # normalised here in float32: a bf16 norm is off by up to 0.3 %
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)

    def encode_blocks(self, texts: Sequence[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        yield np.arange(len(texts)), self.encode(texts)

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode([text])[0]

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the model reads of `texts` (each cut at max_seq_length, special tokens included)."""
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_seq_length)
        return sum(len(ids) for ids in encoded["input_ids"])
