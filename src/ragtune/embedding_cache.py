"""The user's one embedding cache: vectors keyed by (model revision, precision, sha256 of the text).

Every store, evaluation store, mining run and the quickstart read and fill the same file (by default
`~/.cache/ragtune/embeddings.sqlite`, see `ragtune.paths`), so a passage is encoded once per model and precision, an
interrupted index resumes without re-encoding, and re-indexing unchanged text costs no model time. SQLite in WAL mode
lets any number of processes read while one writes (a second writer waits its turn). The file is bounded: when an
insert takes it past its limit, the least recently used vectors are deleted and the space returned. Stores keep their
own copy of every vector they use (in the passage table), so a store copied elsewhere needs no cache.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ragtune.errors import StoreError
from ragtune.paths import embedding_cache_limit_bytes, embedding_cache_path
from ragtune.fsutil import sqlite_damage_reported, sqlite_problems

if TYPE_CHECKING:
    from ragtune.embedding import Embedder, PassageEncoder

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    model TEXT NOT NULL, precision TEXT NOT NULL, text_hash BLOB NOT NULL, vector BLOB NOT NULL, used INTEGER NOT NULL,
    PRIMARY KEY (model, precision, text_hash)
);
CREATE INDEX IF NOT EXISTS embeddings_by_use ON embeddings (used);
"""
_TOUCH_AFTER_SECONDS = 600
"""A hit refreshes its last-use time only when that is older than this: reads stay reads most of the time."""
_BUSY_TIMEOUT_SECONDS = 120.0
"""How long a writer waits for another process's write to finish before giving up."""
_EVICT_TO = 0.9
"""Eviction frees down to this share of the limit, so that the next inserts do not evict again at once."""
_CHUNK = 500


def text_hash(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def _repair_hint(path: Path) -> str:
    return f"it only saves re-encoding: run `ragtune cache clear` (or delete {path}*)"


class EmbeddingCache:
    """Vectors of one (model revision, precision) in the shared cache file. A damaged file is one `StoreError`."""

    def __init__(
        self,
        model_revision: str,
        precision: str,
        dimension: int,
        path: Path | None = None,
        limit_bytes: int | None = None,
    ) -> None:
        self.path = path or embedding_cache_path()
        self.model_revision = model_revision
        self.precision = precision
        self.dimension = dimension
        self.limit_bytes = limit_bytes if limit_bytes is not None else embedding_cache_limit_bytes()
        self.hits = 0
        self.misses = 0
        self.evicted = 0
        self.encode_seconds = 0.0
        """Time spent in the model (the `encode` callables), not in the cache."""
        self._added: list[bytes] = []  # hashes this instance stored, for discard_new
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = _connect(self.path)

    @classmethod
    def for_encoder(cls, encoder: PassageEncoder, dimension: int, path: Path | None = None) -> EmbeddingCache:
        """The cache part holding `encoder`'s vectors: its model revision and vector kind."""
        return cls(encoder.model_ref.revision, encoder.vector_kind, dimension, path)

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def _key(self) -> list[str]:
        return [self.model_revision, self.precision]

    def get_many(self, hashes: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        stale: list[bytes] = []
        now = int(time.time())
        unique = list(dict.fromkeys(hashes))
        with _damage_reported(self.path):
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start : start + _CHUNK]
                rows = self._db.execute(
                    "SELECT text_hash, vector, used FROM embeddings WHERE model = ? AND precision = ? "
                    f"AND text_hash IN ({','.join('?' * len(chunk))})",
                    [*self._key(), *chunk],
                )
                for digest, vector, used in rows:
                    found[digest] = np.frombuffer(vector, dtype=np.float32)
                    if now - used > _TOUCH_AFTER_SECONDS:
                        stale.append(digest)
            if stale:
                with _write_transaction(self._db):
                    self._db.executemany(
                        "UPDATE embeddings SET used = ? WHERE model = ? AND precision = ? AND text_hash = ?",
                        [(now, *self._key(), digest) for digest in stale],
                    )
        return found

    def put_many(self, items: Sequence[tuple[bytes, np.ndarray]]) -> None:
        now = int(time.time())
        with _damage_reported(self.path), _write_transaction(self._db):
            self._db.executemany(
                "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?)",
                [(*self._key(), h, np.asarray(v, dtype=np.float32).tobytes(), now) for h, v in items],
            )
        self._added.extend(h for h, _ in items)
        with _damage_reported(self.path):
            self.evicted += _evict_to_limit(self._db, self.limit_bytes)

    def adopt(self, items: Iterable[tuple[str, np.ndarray]]) -> int:
        """Store vectors computed elsewhere for this model (e.g. a store's, for text about to be re-chunked) unless
        the cache has them already; returns how many were new."""
        batch: dict[bytes, np.ndarray] = {}
        adopted = 0
        for text, vector in items:
            batch[text_hash(text)] = vector
            if len(batch) >= _CHUNK:
                adopted += self._put_missing(batch)
                batch = {}
        return adopted + (self._put_missing(batch) if batch else 0)

    def _put_missing(self, vectors: dict[bytes, np.ndarray]) -> int:
        known = self.get_many(list(vectors))
        fresh = [(h, v) for h, v in vectors.items() if h not in known]
        if fresh:
            self.put_many(fresh)
        return len(fresh)

    def discard_new(self) -> None:
        """Remove what this instance stored and give the space back to the filesystem (after a disk-full failure,
        so that the next run has room). Best effort: a disk too full even for this leaves the rows in place."""
        try:
            with _write_transaction(self._db):
                for start in range(0, len(self._added), _CHUNK):
                    chunk = self._added[start : start + _CHUNK]
                    self._db.execute(
                        "DELETE FROM embeddings WHERE model = ? AND precision = ? "
                        f"AND text_hash IN ({','.join('?' * len(chunk))})",
                        [*self._key(), *chunk],
                    )
            _give_space_back(self._db)
            self._added.clear()
        except sqlite3.OperationalError:
            pass

    def encode(self, texts: Sequence[str], encode: Callable[[Sequence[str]], np.ndarray]) -> np.ndarray:
        """Vectors for `texts`: cached ones are read, the rest encoded with `encode` and stored."""
        return self.encode_blocks(texts, lambda missing: iter([(np.arange(len(missing)), encode(missing))]))

    def encode_blocks(
        self, texts: Sequence[str], encode: Callable[[Sequence[str]], Iterator[tuple[np.ndarray, np.ndarray]]]
    ) -> np.ndarray:
        """Vectors for `texts`: cached ones are read; the rest go to `encode`, whose blocks (positions among the
        texts it was given, vectors) are stored as each arrives, so an interrupted run keeps what was finished."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        hashes = [text_hash(t) for t in texts]
        cached = self.get_many(hashes)
        missing = list(dict.fromkeys(h for h in hashes if h not in cached))
        if missing:
            first_text = {h: t for h, t in zip(hashes, texts)}
            started = time.perf_counter()
            for positions, vectors in encode([first_text[h] for h in missing]):
                fresh = [(missing[int(p)], v) for p, v in zip(positions, vectors, strict=True)]
                self.put_many(fresh)
                cached.update(fresh)
            self.encode_seconds += time.perf_counter() - started
            if lost := sum(1 for h in missing if h not in cached):
                raise StoreError(f"the encoder returned no vector for {lost} of {len(missing)} texts; run again")
        self.misses += len(missing)
        self.hits += len(texts) - len(missing)
        return np.vstack([cached[h] for h in hashes])


def encode_cached(
    embedder: Embedder, texts: Sequence[str], path: Path | None = None, encoder: PassageEncoder | None = None
) -> np.ndarray:
    """`embedder.encode(texts)`, through the shared cache: what was encoded before by the same model is read. With
    `encoder` (e.g. a Ray cluster's, same model), the rest is encoded there, `texts_per_call` texts at a time."""
    encoder = encoder or embedder
    step = encoder.texts_per_call
    with EmbeddingCache.for_encoder(encoder, embedder.dimension, path) as cache:
        if len(texts) <= step:
            return cache.encode_blocks(texts, encoder.encode_blocks)
        return np.vstack([cache.encode_blocks(texts[i : i + step], encoder.encode_blocks)
                          for i in range(0, len(texts), step)])  # fmt: skip


@dataclass(frozen=True)
class CacheSummary:
    path: Path
    size_bytes: int
    limit_bytes: int
    vectors: int
    by_model: list[tuple[str, str, int]]
    """(model revision, precision, vectors)."""
    problems: list[str]

    def to_json(self) -> dict[str, object]:
        return {
            "path": str(self.path), "size_bytes": self.size_bytes, "limit_bytes": self.limit_bytes,
            "vectors": self.vectors, "problems": self.problems,
            "by_model": [{"model": m, "precision": p, "vectors": n} for m, p, n in self.by_model],
        }  # fmt: skip


def cache_summary(path: Path | None = None) -> CacheSummary:
    """Size, bound, vectors per model and SQLite's quick check of the cache file (read-only)."""
    path = path or embedding_cache_path()
    limit = embedding_cache_limit_bytes()
    if not path.exists():
        return CacheSummary(path, 0, limit, 0, [], [])
    size = sum(p.stat().st_size for p in _files(path) if p.exists())
    by_model: list[tuple[str, str, int]] = []
    with _read_only(path) as db:
        problems = sqlite_problems(db, quick=True, limit=3)
        if not problems and db.execute("SELECT 1 FROM sqlite_master WHERE name = 'embeddings'").fetchone():
            by_model = db.execute(
                "SELECT model, precision, count(*) FROM embeddings GROUP BY model, precision ORDER BY 3 DESC"
            ).fetchall()
    return CacheSummary(path, size, limit, sum(n for _, _, n in by_model), by_model, problems)


def prune_cache(limit_bytes: int, path: Path | None = None) -> int:
    """Delete least recently used vectors until the cache holds at most `limit_bytes`; returns how many went."""
    path = path or embedding_cache_path()
    if not path.exists():
        return 0
    db = _connect(path)
    try:
        with _damage_reported(path):
            return _evict_to_limit(db, limit_bytes, keep_share=1.0)
    finally:
        db.close()


def prune_kind(kind: str, model: str | None = None, path: Path | None = None) -> int:
    """Delete every vector of `kind` (the `precision` column: "bf16/torch", "fp32", ...), of `model`'s revision
    only when given; returns how many went. For vectors this machine no longer makes (a kind an older ragtune
    encoded, say), which otherwise sit in the cache until the size bound evicts them."""
    path = path or embedding_cache_path()
    if not path.exists():
        return 0
    db = _connect(path)
    try:
        with _damage_reported(path), _write_transaction(db):
            if model is None:
                removed = db.execute("DELETE FROM embeddings WHERE precision = ?", (kind,)).rowcount
            else:
                removed = db.execute("DELETE FROM embeddings WHERE precision = ? AND model = ?", (kind, model)).rowcount
        _give_space_back(db)
        return int(removed)
    finally:
        db.close()


def cache_problems(path: Path) -> list[str]:
    """SQLite's quick check of a cache file, read-only; [] when sound (or absent)."""
    if not path.exists():
        return []
    with _read_only(path) as db:
        return sqlite_problems(db, quick=True, limit=3)


def remove_cache(path: Path | None = None) -> None:
    """Delete a cache file with its WAL and shared-memory files."""
    for file in _files(path or embedding_cache_path()):
        file.unlink(missing_ok=True)


def _files(path: Path) -> list[Path]:
    return [Path(f"{path}{suffix}") for suffix in ("", "-wal", "-shm")]


@contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=_BUSY_TIMEOUT_SECONDS)
    try:
        yield db
    finally:
        db.close()


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_SECONDS, isolation_level=None)  # transactions are explicit
    with _damage_reported(path):
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect on a new file: lets eviction shrink it
        db.execute("PRAGMA journal_mode=WAL")
        with _write_transaction(db):
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
    return db


def _damage_reported(path: Path):  # type: ignore[no-untyped-def]
    return sqlite_damage_reported(f"embedding cache '{path}'", _repair_hint(path))


@contextmanager
def _write_transaction(db: sqlite3.Connection) -> Iterator[None]:
    """`BEGIN IMMEDIATE` … `COMMIT` (or `ROLLBACK`): the write lock is taken up front, so a second writer waits
    for the busy timeout instead of failing on a read-to-write upgrade."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _used_bytes(db: sqlite3.Connection) -> int:
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    pages = db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
    return int(pages * page_size)


def _evict_to_limit(db: sqlite3.Connection, limit_bytes: int, keep_share: float = _EVICT_TO) -> int:
    """Delete least recently used rows while the pages in use exceed `limit_bytes`; returns how many went."""
    evicted = 0
    while (used := _used_bytes(db)) > limit_bytes:
        rows = db.execute("SELECT count(*) FROM embeddings").fetchone()[0]
        if rows == 0:
            break
        excess = used - limit_bytes * keep_share
        drop = max(1, min(rows, int(np.ceil(excess / (used / rows)))))
        with _write_transaction(db):
            db.execute(
                "DELETE FROM embeddings WHERE rowid IN (SELECT rowid FROM embeddings ORDER BY used LIMIT ?)", (drop,)
            )
        evicted += drop
        _give_space_back(db)
    return evicted


def _give_space_back(db: sqlite3.Connection) -> None:
    db.executescript("PRAGMA incremental_vacuum;")  # run to the end (a cursor frees one page per step)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

