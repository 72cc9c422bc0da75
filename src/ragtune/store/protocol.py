"""What every store engine offers its readers (retrieval, training, evaluation, the server).

Passage keys (the ints in `(key, score)` pairs) are the engine's own and mean something only to the same opened
store's `hits`. Filters are (key, value) predicates — `source` a path prefix, `doc_id`/`title` exact, any other key
a metadata field — that each engine translates (SQLite row ids for FAISS and tantivy; SQL `WHERE` in PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from typing import Any, Protocol

import numpy as np

from ragtune.embedding import Embedder, TextEncoder
from ragtune.errors import StoreError
from ragtune.query_quantization import calibration_texts, query_precision
from ragtune.store.ingest import check_model
from ragtune.store.manifest import Manifest
from ragtune.types import Hit, Passage

Filters = Sequence[tuple[str, str]]


class StoreReader(Protocol):
    """An opened store, of any engine."""

    manifest: Manifest

    @property
    def address(self) -> str:
        """What `--store` was given: a directory or a postgresql:// address (without a password)."""
        ...

    @property
    def embedder(self) -> TextEncoder:
        """The store's embedding model for queries, loaded on first use; refused if its weights changed."""
        ...

    def use_embedder(self, embedder: TextEncoder) -> None: ...

    def changed_since_open(self) -> bool:
        """Whether the store's manifest (model, settings, generation) changed since it was opened."""
        ...

    def count(self) -> int: ...

    def iter_passages(self) -> Iterator[Passage]: ...

    def passage_texts(self) -> Iterator[str]: ...

    def document_texts(self, doc_ids: Iterable[str]) -> dict[str, list[str]]: ...

    def passage_texts_of(self, passage_ids: Iterable[str]) -> dict[str, str]:
        """Passage id → its embedding text, for the ids the store holds (others are left out)."""
        ...

    def sibling_texts(self, passage_ids: Iterable[str]) -> dict[str, list[str]]: ...

    def embedding(self, passage_id: str) -> np.ndarray: ...

    def dense_search(self, vectors: np.ndarray, k: int, filters: Filters = ()) -> list[list[tuple[int, float]]]: ...

    def keyword_search(
        self, queries: Sequence[str], k: int, filters: Filters = ()
    ) -> list[list[tuple[int, float]]]: ...

    def hits(self, scored: Iterable[tuple[int, float]]) -> list[Hit]: ...

    def info(self) -> dict[str, Any]: ...

    def close(self) -> None: ...

    def __enter__(self) -> StoreReader: ...

    def __exit__(self, *exc: object) -> None: ...


class QueryEmbedding:
    """The `embedder` of a StoreReader: the store's model, loaded on first use, shareable between reopenings."""

    manifest: Manifest
    passage_texts: Callable[[], Iterator[str]]
    _embedder: TextEncoder | None = None

    @property
    def embedder(self) -> TextEncoder:
        """The store's embedding model, for queries; loading it is refused if its weights differ from the ones
        indexed."""
        if self._embedder is None:
            self._embedder = query_embedder(self.manifest, self.passage_texts)
        return self._embedder

    def use_embedder(self, embedder: TextEncoder) -> None:
        """Share an already loaded query embedder (of the same model revision) instead of loading another."""
        if embedder.model_ref.revision != self.manifest.model["revision"]:
            raise StoreError(f"embedder '{embedder.model_ref.name}' is not the model this store was built with")
        self._embedder = embedder


def query_embedder(
    manifest: Manifest, passage_texts: Callable[[], Iterator[str]], precision: str | None = None
) -> Embedder:
    """The store's model for queries, at `precision` (`query_precision`: $RAGTUNE_QUERY_PRECISION when None); int8
    is calibrated on snippets of the store's passages. Refused if the model's weights differ from the ones
    indexed."""
    chosen = query_precision(precision)
    calibration: list[str] = []
    if chosen == "int8":
        with closing(passage_texts()) as texts:
            calibration = calibration_texts(texts)
    return Embedder(check_model(manifest, None), precision=chosen, purpose="queries", calibration=calibration)


def store_info(address: str, manifest: Manifest, counts: dict[str, int], size_bytes: dict[str, int]) -> dict[str, Any]:
    """What `StoreReader.info` returns, the same fields for every engine (`ragtune info` renders it)."""
    return {
        "store": address,
        "generation": manifest.generation,
        "model": manifest.model,
        "dimension": manifest.dimension,
        "chunking": manifest.chunking,
        "backends": manifest.backends,
        "counts": counts,
        "size_bytes": size_bytes,
        "created": manifest.created,
        "updated": manifest.updated,
        "search": manifest.search,
    }


def filter_sql(
    filters: Filters, mark: str, metadata_equals: str, metadata_key: Callable[[str], str] = str
) -> tuple[str, list[str]]:
    """Filters as one SQL predicate over the passage columns, and its parameters, for either engine's dialect.

    `source` matches whole path segments: the file or a folder, given absolute (`/data/manuals`) or as any run of
    segments inside the path (`manuals/pumps`, `pumps/seal.md`); `doc_id` and `title` match exactly; any other key
    matches a metadata field exactly, compared as text. `mark` is the driver's parameter mark; `metadata_equals` the
    dialect's "field of metadata = value" clause, taking (metadata_key(key), value)."""
    clauses: list[str] = []
    params: list[str] = []
    for key, value in filters:
        if key == "source":
            part = value.rstrip("/") or "/"
            escaped = part.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            patterns = [escaped.rstrip("/") + "/%", "%/" + escaped.lstrip("/"), "%/" + escaped.strip("/") + "/%"]
            likes = " OR ".join(f"source LIKE {mark} ESCAPE '\\'" for _ in patterns)
            clauses.append(f"(source = {mark} OR {likes})")
            params += [part, *patterns]
        elif key in ("doc_id", "title"):
            clauses.append(f"{key} = {mark}")
            params.append(value)
        else:
            clauses.append(metadata_equals)
            params += [metadata_key(key), value]
    return " AND ".join(clauses) or "1 = 1", params
