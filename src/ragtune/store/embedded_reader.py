"""The embedded engine's read side: one generation's passage table, FAISS index and tantivy index, opened together."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragtune.embedding import Embedder
from ragtune.errors import StoreError
from ragtune.store.dense import FaissDenseIndex
from ragtune.store.keyword import TantivyKeywordIndex
from ragtune.store.layout import DENSE_FILE, KEYWORD_DIR, PASSAGES_FILE
from ragtune.store.manifest import Manifest, manifest_path, read_manifest
from ragtune.store.passages import PassageTable
from ragtune.store.protocol import Filters, QueryEmbedding, store_info
from ragtune.types import Hit, Passage


def _manifest_stamp(store_dir: Path) -> tuple[int, int]:
    """The manifest's (inode, mtime): it is replaced by rename, so a new one has a new inode."""
    try:
        stat = manifest_path(store_dir).stat()
    except (FileNotFoundError, NotADirectoryError):  # no store there: read_manifest says what is
        return (0, 0)
    return (stat.st_ino, stat.st_mtime_ns)


class Store(QueryEmbedding):
    """A store opened for reading: passages, dense and keyword indexes, and its embedding model (loaded lazily)."""

    def __init__(self, directory: Path, manifest: Manifest, manifest_stamp: tuple[int, int] = (0, 0)) -> None:
        self.directory = directory
        self.manifest = manifest
        self._manifest_stamp = manifest_stamp
        generation = directory / manifest.generation
        if not generation.is_dir():
            raise StoreError(
                f"store '{directory}' is corrupt: its manifest names '{manifest.generation}', which is missing; "
                f"run: ragtune check --store {directory} --repair"
            )
        self.passages = PassageTable(generation / PASSAGES_FILE, read_only=True)
        self.dense = FaissDenseIndex.load(generation / DENSE_FILE, memory_map=True)
        self.keyword = TantivyKeywordIndex(generation / KEYWORD_DIR)
        if len(self.dense) != self.passages.count() or len(self.keyword) != self.passages.count():
            raise StoreError(
                f"store '{directory}' is corrupt: {self.passages.count()} passages but {len(self.dense)} vectors "
                f"and {len(self.keyword)} keyword entries; run: ragtune check --store {directory} --repair"
            )
        self._embedder: Embedder | None = None
        # a generation never changes: the row ids a filter set allows are worked out once (hybrid asks twice)
        self._allowed = functools.lru_cache(maxsize=64)(self._matching_rowids)

    def _matching_rowids(self, filters: tuple[tuple[str, str], ...]) -> np.ndarray:
        rowids = self.passages.matching_rowids(filters)
        rowids.flags.writeable = False  # shared by every search with these filters
        return rowids

    @classmethod
    def open(cls, directory: str | Path) -> Store:
        path = Path(directory).expanduser()
        stamp = _manifest_stamp(path)  # before reading: a manifest replaced in between is seen as a change
        return cls(path, read_manifest(path), stamp)

    def close(self) -> None:
        self.passages.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def address(self) -> str:
        return str(self.directory)

    def changed_since_open(self) -> bool:
        """Whether the manifest was replaced (a new generation or new settings) since this store was opened."""
        return _manifest_stamp(self.directory) != self._manifest_stamp

    def info(self) -> dict[str, Any]:
        generation = self.directory / self.manifest.generation
        size = sum(p.stat().st_size for p in generation.rglob("*") if p.is_file())
        size_bytes = {
            "passages": (generation / PASSAGES_FILE).stat().st_size,
            "dense": (generation / DENSE_FILE).stat().st_size,
            "keyword": sum(p.stat().st_size for p in (generation / KEYWORD_DIR).rglob("*") if p.is_file()),
            "total": size,
        }
        return store_info(str(self.directory), self.manifest, self.passages.stats(), size_bytes)

    # --- the read side shared by every engine (`ragtune.store.protocol.StoreReader`) ---------------------------------
    def count(self) -> int:
        return self.passages.count()

    def iter_passages(self) -> Iterator[Passage]:
        return self.passages.iter_passages()

    def passage_texts(self) -> Iterator[str]:
        """The embedding text of every passage, in store order."""
        for _, texts in self.passages.iter_texts():
            yield from texts

    def document_texts(self, doc_ids: Iterable[str]) -> dict[str, list[str]]:
        return self.passages.document_texts(doc_ids)

    def sibling_texts(self, passage_ids: Iterable[str]) -> dict[str, list[str]]:
        return self.passages.sibling_texts(passage_ids)

    def passage_texts_of(self, passage_ids: Iterable[str]) -> dict[str, str]:
        return self.passages.passage_texts_of(passage_ids)

    def embedding(self, passage_id: str) -> np.ndarray:
        """The vector the dense index holds for a passage (float16 ones decoded)."""
        return self.dense.vectors(np.array([self.passages.rowid_of(passage_id)]))[0]

    def dense_search(self, vectors: np.ndarray, k: int, filters: Filters = ()) -> list[list[tuple[int, float]]]:
        """Top-k (passage key, cosine) per query vector, among the passages that pass every filter."""
        scores, ids = self.dense.search(vectors, k, self._allowed(tuple(filters)) if filters else None)
        return [
            [(int(i), float(s)) for i, s in zip(row_ids, row_scores, strict=True) if i >= 0]
            for row_ids, row_scores in zip(ids, scores, strict=True)
        ]

    def keyword_search(self, queries: Sequence[str], k: int, filters: Filters = ()) -> list[list[tuple[int, float]]]:
        """Top-k (passage key, BM25 score) per query, among the passages that pass every filter."""
        allowed = self._allowed(tuple(filters)) if filters else None
        return [self.keyword.search(query, k, allowed) for query in queries]

    def hits(self, scored: Iterable[tuple[int, float]]) -> list[Hit]:
        return self.passages.hits(scored)
