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


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    def __init__(self, path: Path, model_revision: str, dimension: int) -> None:
        self.model_revision = model_revision
        self.dimension = dimension
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path)
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

    def get_many(self, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(hashes))
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
        with self._db:
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
