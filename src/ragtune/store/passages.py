"""The passage table: SQLite file with sources, documents and passages (text, metadata).

Row ids of `passages` are the ids the dense and keyword indexes return. Vectors are kept once, in the dense index;
while a generation is being built, the vectors of the passages it adds (or re-embeds) wait in `pending-vectors.sqlite`
beside the table, which the build reads into the dense index and then deletes. Tables of format 1 held every vector
in an `embedding` column; opening one for writing drops it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragtune.errors import InputError, StoreError
from ragtune.fsutil import sqlite_damage_reported, sqlite_problems
from ragtune.store.ingest import SourceState
from ragtune.store.protocol import filter_sql
from ragtune.types import Hit, Passage, embedding_text

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
    key TEXT PRIMARY KEY, root_key TEXT NOT NULL, content_hash TEXT NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, documents INTEGER NOT NULL, passages INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS passages (
    rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, doc_id TEXT NOT NULL, ordinal INTEGER NOT NULL,
    source TEXT NOT NULL, title TEXT NOT NULL, text TEXT NOT NULL, metadata TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS passages_source ON passages(source);
CREATE INDEX IF NOT EXISTS passages_doc ON passages(doc_id);
"""
PENDING_VECTORS_FILE = "pending-vectors.sqlite"
_PENDING_SCHEMA = "CREATE TABLE IF NOT EXISTS pending.vectors (rowid INTEGER PRIMARY KEY, embedding BLOB NOT NULL)"


class PassageTable:
    """Read and write access to one generation's `passages.sqlite`.

    A damaged file (overwritten pages) is reported by reads as a `StoreError` that says how to repair it.
    """

    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = path
        self._next_rowid: int | None = None
        try:
            if read_only:
                self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            else:
                self._db = sqlite3.connect(path)
                self._db.executescript(_SCHEMA)
                self._drop_format1_vectors()
                self._db.execute("ATTACH DATABASE ? AS pending", (str(self.pending_path),))
                self._db.execute(_PENDING_SCHEMA)
            self._db.execute("SELECT count(*) FROM passages").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"passage table '{path}' is unreadable ({exc}); "
                f"run: ragtune check --store {path.parent.parent} --repair"
            ) from exc

    @property
    def pending_path(self) -> Path:
        return self.path.with_name(PENDING_VECTORS_FILE)

    def _drop_format1_vectors(self) -> None:
        """A format-1 table (copied from an older generation) loses its `embedding` column: the dense index holds
        the same vectors. One rewrite of the table (then compacted), on its first update by this version."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(passages)")}
        if "embedding" in columns:
            self._db.execute("ALTER TABLE passages DROP COLUMN embedding")
            self._db.commit()
            self._db.execute("VACUUM")

    def close(self) -> None:
        self._db.close()

    def drop_pending_vectors(self) -> None:
        """Delete the vectors waiting for the dense index (once it holds them); the generation keeps none."""
        self._db.commit()
        self._db.execute("DETACH DATABASE pending")
        self.pending_path.unlink(missing_ok=True)

    def number_new_rows_above(self, rowid: int) -> None:
        """Give the passages added from now on row ids above `rowid` (ids an index may still hold for removed rows
        are never reused)."""
        self._next_rowid = rowid + 1

    def max_rowid(self) -> int:
        return int(self._rows("SELECT coalesce(max(rowid), -1) FROM passages")[0][0])

    def rowids_of_sources(self, keys: Iterable[str]) -> np.ndarray:
        rows = list(self._select_in("SELECT rowid FROM passages WHERE source IN ({marks})", keys))
        return np.array([r[0] for r in rows], dtype=np.int64)

    def iter_pending_vectors(self, batch: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(row ids, vectors) waiting for the dense index, in row-id order."""
        last = -1
        while rows := self._rows(
            "SELECT rowid, embedding FROM pending.vectors WHERE rowid > ? ORDER BY rowid LIMIT ?", (last, batch)
        ):
            last = rows[-1][0]
            yield (
                np.array([r[0] for r in rows], dtype=np.int64),
                np.vstack([np.frombuffer(r[1], dtype=np.float32) for r in rows]),
            )

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read and fetch its rows; a damaged file is one `StoreError` that says how to repair it."""
        fix = f"run: ragtune check --store {self.path.parent.parent} --repair"
        with sqlite_damage_reported(f"passage table '{self.path}'", fix):
            return self._db.execute(sql, params).fetchall()

    def integrity_problems(self, quick: bool = True, limit: int = 5) -> list[str]:
        """SQLite's own check of the file; [] when sound."""
        return sqlite_problems(self._db, quick, limit)

    def commit(self) -> None:
        self._db.commit()

    # --- sources -------------------------------------------------------------------------------------------------
    def sources(self) -> dict[str, SourceState]:
        rows = self._rows("SELECT key, root_key, content_hash, size, mtime_ns FROM sources")
        return {row[0]: SourceState(*row) for row in rows}

    def remove_source(self, key: str) -> int:
        removed = self._db.execute("DELETE FROM passages WHERE source = ?", (key,)).rowcount
        self._db.execute("DELETE FROM sources WHERE key = ?", (key,))
        return removed

    def checkpoint(self) -> None:
        """Nothing to do: the whole generation is published at once."""

    def abandon_source(self, key: str) -> None:
        self._db.execute(
            "DELETE FROM pending.vectors WHERE rowid IN (SELECT rowid FROM passages WHERE source = ?)", (key,)
        )
        self._db.execute("DELETE FROM passages WHERE source = ?", (key,))

    def record_source(self, state: SourceState, documents: int, passages: int) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO sources VALUES (?, ?, ?, ?, ?, ?, ?)",
            (state.key, state.root_key, state.content_hash, state.size, state.mtime_ns, documents, passages),
        )

    # --- passages ------------------------------------------------------------------------------------------------
    def add_passages(self, passages: Sequence[Passage], embeddings: np.ndarray) -> None:
        """Add passages; their vectors wait in the pending file until the dense index takes them."""
        if len(passages) != len(embeddings):
            raise ValueError(f"{len(passages)} passages but {len(embeddings)} vectors")
        first = self._next_rowid if self._next_rowid is not None else max(self.max_rowid(), 0) + 1
        rows = [
            (first + i, p.id, p.doc_id, p.ordinal, p.source, p.title, p.text, json.dumps(p.metadata))
            for i, p in enumerate(passages)
        ]
        try:
            self._db.executemany(
                "INSERT INTO passages (rowid, id, doc_id, ordinal, source, title, text, metadata) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            self.set_embeddings(np.arange(first, first + len(rows)), embeddings)
            self._next_rowid = first + len(rows)
        except sqlite3.IntegrityError:
            for passage in passages:
                row = next(iter(self._rows("SELECT source FROM passages WHERE id = ?", (passage.id,))), None)
                if row:
                    raise InputError(
                        f"document id '{passage.doc_id}' in '{passage.source}' is already used by '{row[0]}': "
                        "document ids must be unique across the store"
                    ) from None
            raise

    def set_embeddings(self, rowids: np.ndarray, embeddings: np.ndarray) -> None:
        """Give rows their (new) vectors, for the dense index this generation builds."""
        self._db.executemany(
            "INSERT OR REPLACE INTO pending.vectors (rowid, embedding) VALUES (?, ?)",
            [(int(i), np.asarray(v, dtype=np.float32).tobytes()) for i, v in zip(rowids, embeddings, strict=True)],
        )

    def count(self) -> int:
        return int(self._rows("SELECT count(*) FROM passages")[0][0])

    def count_documents(self) -> int:
        return int(self._rows("SELECT count(DISTINCT doc_id) FROM passages")[0][0])

    def count_sources(self) -> int:
        return int(self._rows("SELECT count(*) FROM sources")[0][0])

    def iter_texts(self, above: int = -1, batch: int = 4096) -> Iterator[tuple[np.ndarray, list[str]]]:
        """(row ids, embedding texts) of the rows above row id `above`, in row-id order; each batch is its own query
        (keyset paging), so rows may be updated between batches."""
        last = above
        while rows := self._rows(
            "SELECT rowid, title, text FROM passages WHERE rowid > ? ORDER BY rowid LIMIT ?", (last, batch)
        ):
            last = rows[-1][0]
            yield np.array([r[0] for r in rows], dtype=np.int64), [embedding_text(r[1], r[2]) for r in rows]

    def texts_of_sources(self, keys: Iterable[str]) -> tuple[np.ndarray, list[str]]:
        """(row ids, embedding texts) of every passage of the sources `keys`."""
        rows = list(self._select_in("SELECT rowid, title, text FROM passages WHERE source IN ({marks})", keys))
        return np.array([r[0] for r in rows], dtype=np.int64), [embedding_text(r[1], r[2]) for r in rows]

    def rowid_of(self, passage_id: str) -> int:
        row = next(iter(self._rows("SELECT rowid FROM passages WHERE id = ?", (passage_id,))), None)
        if row is None:
            raise StoreError(f"passage '{passage_id}' is not in the store")
        return int(row[0])

    def sibling_texts(self, passage_ids: Iterable[str]) -> dict[str, list[str]]:
        """Passage id → the embedding texts of every passage of its document (itself included)."""
        doc_of = dict(self._select_in("SELECT id, doc_id FROM passages WHERE id IN ({marks})", passage_ids))
        texts_of_doc = self.document_texts(doc_of.values())
        return {pid: texts_of_doc.get(doc, []) for pid, doc in doc_of.items()}

    def passage_texts_of(self, passage_ids: Iterable[str]) -> dict[str, str]:
        """Passage id → its embedding text (ids the store lacks are left out)."""
        return {
            pid: embedding_text(title, text)
            for pid, title, text in self._select_in("SELECT id, title, text FROM passages WHERE id IN ({marks})",
                                                    passage_ids)  # fmt: skip
        }

    def document_texts(self, doc_ids: Iterable[str]) -> dict[str, list[str]]:
        """Document id → the embedding texts of its passages, in order (ids the store lacks are left out)."""
        texts_of_doc: dict[str, list[str]] = {}
        for doc_id, title, text in self._select_in(
            "SELECT doc_id, title, text FROM passages WHERE doc_id IN ({marks}) ORDER BY rowid", doc_ids
        ):
            texts_of_doc.setdefault(doc_id, []).append(embedding_text(title, text))
        return texts_of_doc

    def _select_in(self, sql: str, values: Iterable[str], chunk: int = 500) -> Iterator[tuple[Any, ...]]:
        """Rows of `sql` whose `IN ({marks})` takes the distinct `values`, in chunks under SQLite's variable limit."""
        distinct = list(dict.fromkeys(values))
        for start in range(0, len(distinct), chunk):
            part = distinct[start : start + chunk]
            yield from self._rows(sql.format(marks=",".join("?" * len(part))), part)

    def iter_passages(self, batch: int = 2048) -> Iterator[Passage]:
        """Every passage in document order (keyset paging, as `iter_texts`)."""
        last = -1
        while rows := self._rows(
            "SELECT rowid, id, doc_id, ordinal, title, text, source, metadata FROM passages WHERE rowid > ? "
            "ORDER BY rowid LIMIT ?",
            (last, batch),
        ):
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
        rows = self._rows(
            f"SELECT rowid, id, doc_id, title, text, source, metadata FROM passages WHERE rowid IN ({marks})", ids
        )
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
        """Row ids of passages that satisfy every filter (`ragtune.store.protocol.filter_sql` says how keys match)."""
        where, params = filter_sql(
            filters, "?", "CAST(json_extract(metadata, ?) AS TEXT) = ?", lambda key: "$." + json.dumps(key)
        )
        rows = self._rows(f"SELECT rowid FROM passages WHERE {where}", params)
        return np.array([r[0] for r in rows], dtype=np.int64)

    def stats(self) -> dict[str, int]:
        return {"sources": self.count_sources(), "documents": self.count_documents(), "passages": self.count()}


def salvage_passages(damaged: Path, into: PassageTable, batch: int = 256) -> tuple[int, int, int]:
    """Copy every readable, whole source of a damaged passage table into `into` (an empty table), without vectors.

    Rows are read by row-id ranges, a failing range row by row. A source is kept only if all the passages its
    record counts were read; the others are left out entirely, so the next `ragtune index` of their files adds them
    again (from the embedding cache). Returns (passages kept, passages left out, sources left out).
    """
    db = sqlite3.connect(f"file:{damaged}?mode=ro", uri=True)
    try:
        source_columns = "key, root_key, content_hash, size, mtime_ns, documents, passages"
        source_rows = {row[0]: row for row in _readable_rows(db, "sources", source_columns, batch)}
        rows: dict[str, list[tuple[Any, ...]]] = {}
        columns = "rowid, id, doc_id, ordinal, source, title, text, metadata"
        for row in _readable_rows(db, "passages", columns, batch):
            rows.setdefault(row[4], []).append(row)
    finally:
        db.close()
    kept = lost = dropped = 0
    for key, record in source_rows.items():
        passages = rows.pop(key, [])
        if len(passages) != record[6]:
            dropped += 1
            lost += record[6]
            continue
        into._db.executemany(
            "INSERT INTO passages (rowid, id, doc_id, ordinal, source, title, text, metadata) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            passages,
        )
        into._db.execute("INSERT INTO sources VALUES (?, ?, ?, ?, ?, ?, ?)", record)
        kept += len(passages)
    lost += sum(len(orphans) for orphans in rows.values())  # passages whose source record is gone
    into.commit()
    return kept, lost, dropped


def _readable_rows(db: sqlite3.Connection, table: str, columns: str, batch: int) -> Iterator[tuple[Any, ...]]:
    """The rows of `table` that can still be read, by row-id ranges; a range that fails is read row by row."""
    try:
        highest = int(db.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0] or 0)
    except sqlite3.DatabaseError:
        highest = 0
    start, empty_ranges = 1, 0
    while start <= highest or empty_ranges < 64:  # without a readable max, probe until 64 empty ranges
        try:
            found = db.execute(
                f"SELECT {columns} FROM {table} WHERE rowid BETWEEN ? AND ?", (start, start + batch - 1)
            ).fetchall()
        except sqlite3.DatabaseError:
            found = []
            for rowid in range(start, start + batch):
                try:
                    found += db.execute(f"SELECT {columns} FROM {table} WHERE rowid = ?", (rowid,)).fetchall()
                except sqlite3.DatabaseError:
                    continue
        yield from found
        empty_ranges = 0 if found else empty_ranges + 1
        start += batch
