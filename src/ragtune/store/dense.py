"""Dense vector indexes. One protocol; FAISS is the embedded default.

Vectors are unit length, so inner product is cosine similarity. Below `exact_threshold` vectors the index is exact
(Flat, float32); above it, HNSW over float16 vectors, whose recall@10 against exact search is checked in the tests and
benchmarks. The dense index is where a store keeps its vectors (the passage table holds none): rebuilds, `embedding()`
and moved files read them back from it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np

from ragtune.errors import StoreError, missing_dependency

EXACT_THRESHOLD = 50_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH = 256
# Below this share of allowed rows, a filtered search scans the allowed vectors exactly: HNSW graph walks
# restricted to a small subset miss most of it.
_FILTER_EXACT_SHARE = 0.2
_ONE_THREAD_BELOW = 20
"""FAISS searches fewer queries than this (its BLAS threshold) one by one, so more threads only add fork and join,
and leave OpenMP workers spinning beside the next query's encoding: one thread took the SciFact store's hybrid p50
from 4.8 to 3.8 ms (BENCHMARKS.md)."""


class DenseIndex(Protocol):
    """What every dense backend provides. Ids are the passage table's row ids."""

    kind: str

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def __len__(self) -> int: ...

    def save(self, path: Path) -> None: ...


def _faiss():  # type: ignore[no-untyped-def]
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise missing_dependency("faiss", "faiss-cpu") from exc
    return faiss


@contextmanager
def _search_threads(threads: int | None) -> Iterator[None]:
    """FAISS's OpenMP threads for the calling thread (the setting is per thread), restored after; None: unchanged."""
    if threads is None:
        yield
        return
    faiss = _faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


REBUILD_DELETED_SHARE = 0.2
"""An update rebuilds the HNSW index from scratch once this share of its vectors belongs to removed passages."""


def tombstone_path(index_path: Path) -> Path:
    """Where the ids of an HNSW index's removed vectors are kept, beside the index file."""
    return index_path.with_name(index_path.name + ".deleted.npy")


class FaissDenseIndex:
    """FAISS `IndexIDMap2` over Flat (exact) or HNSW (approximate) inner-product search.

    Removing vectors: Flat drops them; HNSW cannot, so their ids are kept as tombstones that every search excludes
    (saved beside the index), until an update rebuilds the index (`deleted_share` ≥ `REBUILD_DELETED_SHARE`).
    """

    def __init__(self, index: object, kind: str, deleted: np.ndarray | None = None) -> None:
        self._index = index
        self.kind = kind
        self._deleted = np.empty(0, dtype=np.int64) if deleted is None else np.unique(deleted.astype(np.int64))

    @classmethod
    def create(cls, dimension: int, expected_size: int, exact_threshold: int = EXACT_THRESHOLD) -> FaissDenseIndex:
        """Flat below `exact_threshold`; above, HNSW whose vectors are stored as float16 (half the disk and memory of
        float32; unit vectors lose about 1e-4 of each cosine, far below what separates neighbours)."""
        faiss = _faiss()
        if expected_size < exact_threshold:
            return cls(faiss.IndexIDMap2(faiss.IndexFlatIP(dimension)), "flat")
        hnsw = faiss.IndexHNSWSQ(dimension, faiss.ScalarQuantizer.QT_fp16, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        hnsw.hnsw.efSearch = HNSW_EF_SEARCH
        return cls(faiss.IndexIDMap2(hnsw), "hnsw")

    @classmethod
    def load(cls, path: Path, memory_map: bool = False) -> FaissDenseIndex:
        """Read an index. `memory_map`: the vectors stay in the file, mapped into memory (pages are read as
        searches touch them and shared between processes); such an index is for reading only."""
        faiss = _faiss()
        try:
            index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC if memory_map else 0)
        except RuntimeError as exc:
            raise StoreError(
                f"dense index '{path}' is unreadable ({exc}); "
                f"run: ragtune check --store {path.parent.parent} --repair"
            ) from exc
        inner = faiss.downcast_index(index.index)
        kind = "hnsw" if isinstance(inner, faiss.IndexHNSW) else "flat"
        if kind == "hnsw":
            inner.hnsw.efSearch = HNSW_EF_SEARCH
        tombstones = tombstone_path(path)
        try:
            deleted = np.load(tombstones) if tombstones.exists() else None
        except (OSError, ValueError) as exc:
            raise StoreError(
                f"removed-vector list '{tombstones}' is unreadable ({exc}); "
                f"run: ragtune check --store {path.parent.parent} --repair"
            ) from exc
        return cls(index, kind, deleted)

    def __len__(self) -> int:
        """The live vectors (removed ones excluded)."""
        return int(self._index.ntotal) - len(self._deleted)

    @property
    def dimension(self) -> int:
        return int(self._index.d)

    @property
    def storage(self) -> str:
        """How the vectors are kept: "float32" or "float16"."""
        inner = _faiss().downcast_index(self._index.index)
        return "float16" if isinstance(inner, _faiss().IndexHNSWSQ) else "float32"

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of `ids` (float32; decoded where the index keeps float16). An id the index does not
        hold is a `StoreError`."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty((len(ids), self.dimension), dtype=np.float32)
        for row, key in enumerate(ids):
            try:
                out[row] = self._index.reconstruct(int(key))
            except RuntimeError as exc:
                raise StoreError(f"the dense index holds no vector for row {int(key)}") from exc
        return out

    def iter_live(self, batch: int = 16384) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) of every live vector, in the order they were added (removed ones left out)."""
        faiss = _faiss()
        inner = faiss.downcast_index(self._index.index)
        all_ids = faiss.vector_to_array(self._index.id_map)
        for start in range(0, len(all_ids), batch):
            ids = all_ids[start : start + batch]
            vectors = inner.reconstruct_n(start, len(ids))
            live = ~np.isin(ids, self._deleted) if len(self._deleted) else np.ones(len(ids), dtype=bool)
            if live.any():
                yield ids[live], vectors[live]

    @property
    def deleted_share(self) -> float:
        return len(self._deleted) / max(1, int(self._index.ntotal))

    def highest_id(self) -> int:
        """The largest id ever added and still held (removed HNSW vectors included); -1 when empty."""
        faiss = _faiss()
        ids = faiss.vector_to_array(self._index.id_map)
        return int(ids.max()) if len(ids) else -1

    def remove(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        if self.kind == "flat":
            self._index.remove_ids(_faiss().IDSelectorBatch(ids))
        else:
            self._deleted = np.union1d(self._deleted, ids)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query; missing slots have id -1. `allowed` restricts the ids searched."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        with _search_threads(1 if len(queries) < _ONE_THREAD_BELOW else None):
            return self._search(queries, k, allowed)

    def _search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if allowed is None and len(self._deleted):
            faiss = _faiss()
            removed = faiss.IDSelectorBatch(self._deleted)  # kept in a name: the selectors only point at each other
            live = faiss.IDSelectorNot(removed)
            params = faiss.SearchParametersHNSW(sel=live, efSearch=max(HNSW_EF_SEARCH, k))
            return self._index.search(queries, k, params=params)
        if allowed is None:
            return self._index.search(queries, k)
        if len(allowed) == 0:
            return np.full((len(queries), k), -np.inf, dtype=np.float32), np.full((len(queries), k), -1, np.int64)
        if self.kind == "hnsw" and len(allowed) < _FILTER_EXACT_SHARE * len(self):
            return self._exact_subset(queries, k, allowed)
        faiss = _faiss()
        selector = faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
        params = (
            faiss.SearchParametersHNSW(sel=selector, efSearch=max(HNSW_EF_SEARCH, k))
            if self.kind == "hnsw"
            else faiss.SearchParameters(sel=selector)
        )
        return self._index.search(queries, k, params=params)

    def _exact_subset(self, queries: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores = queries @ self.vectors(allowed).T
        top = np.argsort(-scores, axis=1)[:, :k]
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        out_ids = np.full((len(queries), k), -1, dtype=np.int64)
        out_scores[:, : top.shape[1]] = np.take_along_axis(scores, top, axis=1)
        out_ids[:, : top.shape[1]] = allowed[top]
        return out_scores, out_ids

    def save(self, path: Path) -> None:
        _faiss().write_index(self._index, str(path))
        if len(self._deleted):
            with tombstone_path(path).open("wb") as handle:
                np.save(handle, self._deleted)
