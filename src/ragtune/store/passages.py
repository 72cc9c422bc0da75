"""The passage table: SQLite file with sources, documents and passages (text, metadata, embedding).

Row ids of `passages` are the ids the dense and keyword indexes return.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragtune.errors import InputError, StoreError
from ragtune.types import Hit, Passage, embedding_text

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
    key TEXT PRIMARY KEY, root_key TEXT NOT NULL, content_hash TEXT NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, documents INTEGER NOT NULL, passages INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS passages (
    rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, doc_id TEXT NOT NULL, ordinal INTEGER NOT NULL,
    source TEXT NOT NULL, title TEXT NOT NULL, text TEXT NOT NULL, metadata TEXT NOT NULL, embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS passages_source ON passages(source);
CREATE INDEX IF NOT EXISTS passages_doc ON passages(doc_id);
"""


@dataclass(frozen=True)
class SourceState:
    """What the store knows about a source file, to decide whether it changed."""

    key: str
    root_key: str
    content_hash: str
    size: int
    mtime_ns: int


class PassageTable:
    """Read and write access to one generation's `passages.sqlite`."""

    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = path
        try:
            if read_only:
                self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            else:
                self._db = sqlite3.connect(path)
                self._db.executescript(_SCHEMA)
            self._db.execute("SELECT count(*) FROM passages").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"passage table '{path}' is unreadable ({exc}); rebuild the store with ragtune index") from exc

    def close(self) -> None:
        self._db.close()

    def commit(self) -> None:
        self._db.commit()

    # --- sources -------------------------------------------------------------------------------------------------
    def sources(self) -> dict[str, SourceState]:
        rows = self._db.execute("SELECT key, root_key, content_hash, size, mtime_ns FROM sources")
        return {row[0]: SourceState(*row) for row in rows}

    def remove_source(self, key: str) -> int:
        removed = self._db.execute("DELETE FROM passages WHERE source = ?", (key,)).rowcount
        self._db.execute("DELETE FROM sources WHERE key = ?", (key,))
        return removed

    def record_source(self, state: SourceState, documents: int, passages: int) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO sources VALUES (?, ?, ?, ?, ?, ?, ?)",
            (state.key, state.root_key, state.content_hash, state.size, state.mtime_ns, documents, passages),
        )

    # --- passages ------------------------------------------------------------------------------------------------
    def add_passages(self, passages: Sequence[Passage], embeddings: np.ndarray) -> None:
        rows = [
            (p.id, p.doc_id, p.ordinal, p.source, p.title, p.text, json.dumps(p.metadata), vector.tobytes())
            for p, vector in zip(passages, embeddings, strict=True)
        ]
        try:
            self._db.executemany(
                "INSERT INTO passages (id, doc_id, ordinal, source, title, text, metadata, embedding) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        except sqlite3.IntegrityError:
            for passage in passages:
                row = self._db.execute("SELECT source FROM passages WHERE id = ?", (passage.id,)).fetchone()
                if row:
                    raise InputError(
                        f"document id '{passage.doc_id}' in '{passage.source}' is already used by '{row[0]}': "
                        "document ids must be unique across the store"
                    ) from None
            raise

    def set_embeddings(self, rowids: np.ndarray, embeddings: np.ndarray) -> None:
        self._db.executemany(
            "UPDATE passages SET embedding = ? WHERE rowid = ?",
            [(np.asarray(v, dtype=np.float32).tobytes(), int(i)) for i, v in zip(rowids, embeddings, strict=True)],
        )

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM passages").fetchone()[0])

    def count_documents(self) -> int:
        return int(self._db.execute("SELECT count(DISTINCT doc_id) FROM passages").fetchone()[0])

    def count_sources(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM sources").fetchone()[0])

    def iter_for_indexing(self, batch: int = 4096) -> Iterator[tuple[np.ndarray, list[str], np.ndarray]]:
        """(row ids, embedding texts, embeddings) in row-id order; each batch is its own query (keyset paging),
        so rows may be updated between batches."""
        last = -1
        while rows := self._db.execute(
            "SELECT rowid, title, text, embedding FROM passages WHERE rowid > ? ORDER BY rowid LIMIT ?", (last, batch)
        ).fetchall():
            last = rows[-1][0]
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            texts = [embedding_text(r[1], r[2]) for r in rows]
            vectors = np.vstack([np.frombuffer(r[3], dtype=np.float32) for r in rows])
            yield ids, texts, vectors

    def embedding(self, passage_id: str) -> np.ndarray:
        """The stored vector of one passage (the one the dense index holds)."""
        row = self._db.execute("SELECT embedding FROM passages WHERE id = ?", (passage_id,)).fetchone()
        if row is None:
            raise StoreError(f"passage '{passage_id}' is not in the store")
        return np.frombuffer(row[0], dtype=np.float32)

    def sibling_texts(self, passage_ids: Iterable[str]) -> dict[str, list[str]]:
        """Passage id → the embedding texts of every passage of its document (itself included)."""
        doc_of = dict(self._select_in("SELECT id, doc_id FROM passages WHERE id IN ({marks})", passage_ids))
        texts_of_doc: dict[str, list[str]] = {}
        for doc_id, title, text in self._select_in(
            "SELECT doc_id, title, text FROM passages WHERE doc_id IN ({marks}) ORDER BY rowid", doc_of.values()
        ):
            texts_of_doc.setdefault(doc_id, []).append(embedding_text(title, text))
        return {pid: texts_of_doc.get(doc, []) for pid, doc in doc_of.items()}

    def _select_in(self, sql: str, values: Iterable[str], chunk: int = 500) -> Iterator[tuple[Any, ...]]:
        """Rows of `sql` whose `IN ({marks})` takes the distinct `values`, in chunks under SQLite's variable limit."""
        distinct = list(dict.fromkeys(values))
        for start in range(0, len(distinct), chunk):
            part = distinct[start : start + chunk]
            yield from self._db.execute(sql.format(marks=",".join("?" * len(part))), part)

    def iter_passages(self, batch: int = 2048) -> Iterator[Passage]:
        """Every passage in document order (keyset paging, as `iter_for_indexing`)."""
        last = -1
        while rows := self._db.execute(
            "SELECT rowid, id, doc_id, ordinal, title, text, source, metadata FROM passages WHERE rowid > ? "
            "ORDER BY rowid LIMIT ?",
            (last, batch),
        ).fetchall():
            last = rows[-1][0]
            for row in rows:
                yield Passage(row[1], row[2], row[3], row[4], row[5], row[6], json.loads(row[7]))

    def hits(self, scored: Iterable[tuple[int, float]]) -> list[Hit]:
        """Row ids with scores → `Hit`s, in the order given."""
        scored = list(scored)
        if not scored:
            return []
        ids = [rowid for rowid, _ in scored]
        marks = ",".join("?" * len(ids))
        rows = self._db.execute(
            f"SELECT rowid, id, doc_id, title, text, source, metadata FROM passages WHERE rowid IN ({marks})", ids
        ).fetchall()
        by_rowid = {row[0]: row for row in rows}
        return [
            Hit(
                id=row[1],
                doc_id=row[2],
                score=float(score),
                title=row[3],
                text=row[4],
                source=row[5],
                metadata=json.loads(row[6]),
            )
            for rowid, score in scored
            if (row := by_rowid.get(rowid)) is not None
        ]

    def matching_rowids(self, filters: Sequence[tuple[str, str]]) -> np.ndarray:
        """Row ids of passages that satisfy every filter.

        `source` matches a path prefix (a folder or a file key); `doc_id` and `title` match exactly; any other key
        matches a metadata field exactly (compared as text).
        """
        clauses: list[str] = []
        params: list[str] = []
        for key, value in filters:
            if key == "source":
                escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                clauses.append("(source = ? OR source LIKE ? ESCAPE '\\')")
                params += [value, escaped.rstrip("/") + "/%"]
            elif key in ("doc_id", "title"):
                clauses.append(f"{key} = ?")
                params.append(value)
            else:
                clauses.append("CAST(json_extract(metadata, ?) AS TEXT) = ?")
                params += ["$." + json.dumps(key), value]
        where = " AND ".join(clauses) or "1"
        rows = self._db.execute(f"SELECT rowid FROM passages WHERE {where}", params).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def stats(self) -> dict[str, int]:
        return {"sources": self.count_sources(), "documents": self.count_documents(), "passages": self.count()}
