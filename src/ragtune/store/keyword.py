"""Keyword (BM25) indexes. One protocol; tantivy with English stemming is the embedded default.

Title and text are indexed as one field ("flat", as Pyserini's BM25-flat baseline on BEIR).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import numpy as np

from ragtune.errors import StoreError, missing_dependency

_ROWID = "rowid"
_TEXT = "text"
# tantivy splits tokens on anything not alphanumeric (underscore included); so does the query sanitiser, so a
# query word never becomes a multi-token phrase
_QUERY_SYNTAX = re.compile(r"[\W_]+")


def keyword_terms(query: str) -> str:
    """User text as plain search words for tantivy's query parser: syntax characters become spaces and words are
    lower-cased, so `AND`, `OR`, `NOT` and `IN` are words, never operators (the en_stem analyser lower-cases the
    index anyway, so scores do not change)."""
    return _QUERY_SYNTAX.sub(" ", query).strip().lower()


class KeywordIndex(Protocol):
    kind: str

    def search(self, query: str, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]: ...


def _tantivy():  # type: ignore[no-untyped-def]
    try:
        import tantivy
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise missing_dependency("tantivy", "tantivy") from exc
    return tantivy


def _schema():  # type: ignore[no-untyped-def]
    tantivy = _tantivy()
    builder = tantivy.SchemaBuilder()
    builder.add_unsigned_field(_ROWID, stored=True, indexed=True, fast=True)
    builder.add_text_field(_TEXT, stored=False, tokenizer_name="en_stem", index_option="position")
    return builder.build()


def build_tantivy_index(path: Path, batches: Iterable[tuple[np.ndarray, list[str]]]) -> None:
    """Write a fresh tantivy index of (row id, text) into the empty directory `path`."""
    tantivy = _tantivy()
    path.mkdir(parents=True, exist_ok=True)
    _write(tantivy.Index(_schema(), path=str(path)), np.empty(0, dtype=np.int64), batches)


def update_tantivy_index(
    source: Path, target: Path, removed: np.ndarray, added: Iterable[tuple[np.ndarray, list[str]]]
) -> None:
    """Write into the empty directory `target` the index at `source` less the rows `removed`, plus `added`.

    `source` is never changed: its files are hard-linked into `target` (tantivy never rewrites a file: segments are
    immutable, its meta files are replaced by rename, deletions go to new files), copied where links fail."""
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and not path.name.endswith(".lock"):
            try:
                os.link(path, target / path.name)
            except OSError:
                shutil.copy2(path, target / path.name)
    tantivy = _tantivy()
    _write(tantivy.Index.open(str(target)), removed, added)


def _write(index, removed: np.ndarray, batches: Iterable[tuple[np.ndarray, list[str]]]) -> None:  # type: ignore[no-untyped-def]
    tantivy = _tantivy()
    writer = index.writer(heap_size=128_000_000, num_threads=1)
    if len(removed):
        writer.delete_documents_by_query(tantivy.Query.term_set_query(index.schema, _ROWID, removed.tolist()))
    for ids, texts in batches:
        for rowid, text in zip(ids.tolist(), texts, strict=True):
            document = tantivy.Document()
            document.add_unsigned(_ROWID, rowid)
            document.add_text(_TEXT, text)
            writer.add_document(document)
    writer.commit()
    writer.wait_merging_threads()


class TantivyKeywordIndex:
    kind = "tantivy"

    def __init__(self, path: Path) -> None:
        tantivy = _tantivy()
        try:
            self._index = tantivy.Index.open(str(path))
        except ValueError as exc:
            raise StoreError(
                f"keyword index '{path}' is unreadable ({exc}); "
                f"run: ragtune check --store {path.parent.parent} --repair"
            ) from exc
        self._searcher = self._index.searcher()

    def __len__(self) -> int:
        return int(self._searcher.num_docs)

    def search(self, query: str, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Top-k (row id, BM25 score). Query syntax characters are treated as plain text."""
        tantivy = _tantivy()
        terms = keyword_terms(query)
        if not terms or (allowed is not None and len(allowed) == 0):
            return []
        parsed = self._index.parse_query(terms, [_TEXT])
        if allowed is not None:
            allowed_ids = tantivy.Query.term_set_query(self._index.schema, _ROWID, [int(i) for i in allowed])
            restriction = tantivy.Query.const_score_query(allowed_ids, 0.0)
            parsed = tantivy.Query.boolean_query([(tantivy.Occur.Must, parsed), (tantivy.Occur.Must, restriction)])
        hits = self._searcher.search(parsed, k, count=False).hits  # no total count: only the top k are used
        rowids = self._searcher.fast_field_values(_ROWID, [address for _, address in hits])  # no stored-doc reads
        return [(int(rowid), float(score)) for (score, _), rowid in zip(hits, rowids, strict=True)]
