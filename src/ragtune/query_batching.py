"""Dynamic batching of query encoding: concurrent callers' queries are encoded together in one forward pass.

A server thread that needs a query vector hands the text to `QueryBatcher.encode` and waits. One encoding thread
takes everything waiting (up to `max_batch` texts), waits up to `window_seconds` more for a fuller batch while the
batch is small, encodes it in one call and hands each caller its rows. Under no load a query waits at most the
window; under load the queue fills while the previous batch encodes, so batches form without waiting at all.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ragtune.errors import InputError

if TYPE_CHECKING:
    from ragtune.embedding import Embedder
    from ragtune.models import ModelRef

DEFAULT_WINDOW_SECONDS = 0.0
"""No wait by default: under load the queue fills while the previous batch encodes, so batches form anyway
(SciFact hybrid, 8 clients: 132 rps with no window, 118 with 2 ms; BENCHMARKS.md)."""
DEFAULT_MAX_BATCH = 32
DEFAULT_MAX_SEARCHES = 8
"""Searches `ragtune serve` works on at once (0: no limit); the rest wait in arrival order. SciFact hybrid, 32 clients:
p99 446/506 ms unlimited against 214/195 ms at 8, at the same or a higher rate (BENCHMARKS.md): with 32 searches in
worker threads, the interpreter lock serves some of them late."""


@dataclass
class _Pending:
    texts: list[str]
    done: threading.Event = field(default_factory=threading.Event)
    vectors: np.ndarray | None = None
    error: BaseException | None = None


class QueryBatcher:
    """Encodes like the `Embedder` it wraps (same vectors), gathering concurrent calls into shared batches.

    `on_batch(size)` is told each batch's number of texts (for metrics). `close()` stops the encoding thread;
    calls after it encode directly.
    """

    def __init__(
        self,
        embedder: Embedder,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        max_batch: int = DEFAULT_MAX_BATCH,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if window_seconds < 0 or max_batch < 1:
            raise InputError("--batch-window-ms must be ≥ 0 and --max-batch ≥ 1")
        self.embedder = embedder
        self.window_seconds = window_seconds
        self.max_batch = max_batch
        self._on_batch = on_batch
        self._queue: deque[_Pending] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="ragtune-query-batcher", daemon=True)
        self._thread.start()

    @property
    def model_ref(self) -> ModelRef:
        return self.embedder.model_ref

    @property
    def dimension(self) -> int:
        return self.embedder.dimension

    @property
    def vector_kind(self) -> str:
        return self.embedder.vector_kind

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts or len(texts) >= self.max_batch:
            return self._encode_now(texts)
        pending = _Pending(texts)
        with self._ready:
            if self._closed:
                return self._encode_now(texts)
            self._queue.append(pending)
            self._ready.notify()
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.vectors is not None
        return pending.vectors

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode([text])[0]

    def count_tokens(self, texts: Sequence[str]) -> int:
        return self.embedder.count_tokens(texts)

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._thread.join(timeout=5)

    def _encode_now(self, texts: list[str]) -> np.ndarray:
        vectors = self.embedder.encode(texts)
        if self._on_batch is not None and texts:
            self._on_batch(len(texts))
        return vectors

    def _take_batch(self) -> list[_Pending] | None:
        with self._ready:
            while not self._queue and not self._closed:
                self._ready.wait()
            if not self._queue:
                return None  # closed and drained
            deadline = time.monotonic() + self.window_seconds
            while self._waiting_texts() < self.max_batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._ready.wait(left)
            batch: list[_Pending] = []
            size = 0
            while self._queue and (not batch or size + len(self._queue[0].texts) <= self.max_batch):
                pending = self._queue.popleft()
                batch.append(pending)
                size += len(pending.texts)
            return batch

    def _waiting_texts(self) -> int:
        return sum(len(p.texts) for p in self._queue)

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            try:
                vectors = self._encode_now([text for pending in batch for text in pending.texts])
            except BaseException as exc:  # noqa: BLE001 - handed to every waiting caller, who re-raises it
                for pending in batch:
                    pending.error = exc
                    pending.done.set()
                continue
            start = 0
            for pending in batch:
                pending.vectors = vectors[start : start + len(pending.texts)]
                start += len(pending.texts)
                pending.done.set()
