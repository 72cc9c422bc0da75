"""A persistent embedding cache keyed by (model revision, sha256 of the text).

Indexing writes every batch here as soon as it is encoded, so an interrupted run resumes without re-encoding,
and re-indexing or evaluating unchanged text costs no model time.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ragtune.store.fsutil import sqlite_damage_reported, sqlite_problems


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Vectors by (model revision, text hash). A damaged cache file is one `StoreError`: it only saves encoding
    time, so the fix is to delete it (`ragtune check --repair` does)."""

    def __init__(self, path: Path, model_revision: str, dimension: int) -> None:
        self.path = path
        self.model_revision = model_revision
        self.dimension = dimension
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path)
        with self._damage_reported():
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect on a new file: lets discard_new shrink it
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS vectors (model TEXT, text_hash TEXT, vector BLOB, PRIMARY KEY (model, text_hash))"
            )
        self.hits = 0
        self.misses = 0
        self._added: list[str] = []  # hashes this instance stored, for discard_new

    def close(self) -> None:
        self._db.close()

    def _damage_reported(self):  # type: ignore[no-untyped-def]
        fix = f"it only saves re-encoding: delete it (rm {self.path}*) or run ragtune check --repair on its store"
        return sqlite_damage_reported(f"embedding cache '{self.path}'", fix)

    def get_many(self, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(hashes))
        with self._damage_reported():
            for start in range(0, len(unique), 500):
                chunk = unique[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT text_hash, vector FROM vectors WHERE model = ? AND text_hash IN ({marks})",
                    [self.model_revision, *chunk],
                )
                found.update((h, np.frombuffer(v, dtype=np.float32)) for h, v in rows)
        return found

    def put_many(self, items: Sequence[tuple[str, np.ndarray]]) -> None:
        with self._damage_reported(), self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                [(self.model_revision, h, np.asarray(v, dtype=np.float32).tobytes()) for h, v in items],
            )
        self._added.extend(h for h, _ in items)

    def discard_new(self) -> None:
        """Remove what this instance stored and give the space back to the filesystem (after a disk-full failure,
        so that the next run has room). Best effort: a disk too full even for this leaves the rows in place."""
        try:
            with self._db:
                for start in range(0, len(self._added), 500):
                    chunk = self._added[start : start + 500]
                    self._db.execute(
                        f"DELETE FROM vectors WHERE model = ? AND text_hash IN ({','.join('?' * len(chunk))})",
                        [self.model_revision, *chunk],
                    )
            self._db.executescript("PRAGMA incremental_vacuum;")  # run to the end (a cursor frees one page a step)
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._added.clear()
        except sqlite3.OperationalError:
            pass

    def encode(self, texts: Sequence[str], encode: Callable[[Sequence[str]], np.ndarray]) -> np.ndarray:
        """Vectors for `texts`: cached ones are read, the rest encoded with `encode` and stored."""
        hashes = [text_hash(t) for t in texts]
        cached = self.get_many(hashes)
        missing = list(dict.fromkeys(h for h in hashes if h not in cached))
        if missing:
            first_text = {h: t for h, t in zip(hashes, texts)}
            vectors = encode([first_text[h] for h in missing])
            fresh = list(zip(missing, vectors))
            self.put_many(fresh)
            cached.update(fresh)
        self.misses += len(missing)
        self.hits += len(texts) - len(missing)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.vstack([cached[h] for h in hashes])


def cache_problems(path: Path) -> list[str]:
    """SQLite's quick check of a cache file, read-only; [] when sound (or absent)."""
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return sqlite_problems(db, quick=True, limit=3)
    finally:
        db.close()


def remove_cache(path: Path) -> None:
    """Delete a cache file with its WAL and shared-memory files."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
