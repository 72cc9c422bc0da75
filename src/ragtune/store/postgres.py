"""The PostgreSQL engine: a store in one schema of a PostgreSQL ≥ 16 database with the pgvector extension.

Address: `postgresql://USER@HOST:PORT/DB` (or `postgres://`), the password from `$PGPASSWORD` or `~/.pgpass` as libpq
reads it; `?store=NAME` picks the schema (default `ragtune`), so one database holds several stores. The HNSW settings
are address parameters too: `ef_search=N` (query time: how many graph candidates a dense search visits, 1–1000) and
`m=N` / `ef_construction=N` (used when the index is built, after the first bulk load; recorded in the manifest).

Tables in the schema: `manifest` (one row: the same fields as the embedded engine's manifest.json, plus the schema
version), `sources` (what each indexed file was), `passages` (text, jsonb metadata, a `vector(d)` embedding and a
generated english `tsvector` with a GIN index), and the BM25 statistics `lexemes` (passages per lexeme) and
`keyword_totals`, which every writer keeps in step inside its transactions. Dense search orders by cosine distance —
exactly (a scan) below `HNSW_FROM` passages, through an HNSW index (vector_cosine_ops) above. Keyword search is
PostgreSQL full-text search (english stemming and stop words) for matching, scored by Okapi BM25 in SQL
(`keyword_sql`) rather than `ts_rank`, which has no inverse document frequency (SciFact: ts_rank 0.593 nDCG@10, this
0.686, tantivy 0.681); each passage's BM25 length is a generated `tokens` column. Filters become SQL predicates.

Writers are serialised by an advisory lock. Files are ingested in transactions of whole files, about every 512
passages (old passages removed, new ones copied in with COPY, records written, statistics updated), so a killed writer
leaves every file either as it was or complete, and the next run finishes the rest without re-encoding (vectors come
from the embedding cache).
"""

from __future__ import annotations

import json
import re
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

from ragtune.corpus import Chunker, ChunkingConfig, discover_sources
from ragtune.embedding import Embedder
from ragtune.embedding_cache import EmbeddingCache
from ragtune.errors import InputError, StoreError, missing_dependency
from ragtune.faults import kill_point
from ragtune.models import DEFAULT_EMBEDDING_MODEL, ModelRef, resolve_model
from ragtune.progress import progress_bar
from ragtune.ray_encoding import RayConfig, encoding_on, worker_report
from ragtune.store.ingest import (
    IndexReport,
    IngestOutcome,
    SourceState,
    check_model,
    check_same_chunking,
    ingest_sources,
    plan_changes,
)
from ragtune.store.manifest import FORMAT_VERSION, Manifest
from ragtune.store.protocol import Filters, QueryEmbedding, filter_sql, store_info
from ragtune.types import Hit, Passage, embedding_text

SCHEMA_VERSION = 3
"""2: BM25 statistics (lexemes, keyword_totals) kept by the writers. 3: BM25 passage lengths in indexed tokens, as
tantivy counts them (a `tokens` column; version 2 used distinct lexemes); a writer upgrades a version-2 store in place
(`_upgrade_schema`)."""
UPGRADABLE_SCHEMA_VERSION = 2
DEFAULT_STORE = "ragtune"
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH = 128
"""At 1M synthetic passages (BENCHMARKS.md): m 32 / ef_construction 200 find the exact top 10 (recall 1.000 at
ef_search 128, 7 ms p50) where pgvector's usual m 16 / ef_construction 64 found 0.77 (0.94 at ef_search 1000); the
price is a 3× longer build and 2× longer inserts (10,000 passages: 44 s against 21 s). The embedded engine uses the
same graph settings."""
HNSW_SETTINGS = {"m": (2, 100), "ef_construction": (4, 1000), "ef_search": (1, 1000)}
"""Address parameters for the HNSW index and their ranges (pgvector's own limits)."""
BUILD_MEMORY_FLOOR = "1GB"
"""`maintenance_work_mem` for the HNSW build when the server's own setting is lower; a larger server setting is kept
(a graph that does not fit is finished on disk, several times slower: BENCHMARKS.md)."""
HNSW_INDEX = "passages_embedding_hnsw"
HNSW_FROM = 1_000
"""Passages from which dense search goes through the HNSW index: exact scans of 10k SciFact passages took 40 ms a
query against 5 ms through HNSW at the same nDCG@10 (BENCHMARKS.md); below 1k a scan takes a few ms."""
BM25_K1 = 1.2
BM25_B = 0.75
BM25_MATCH_MAX_SHARE = 0.1
"""Lexemes in more passages than this share still score a candidate but do not make one: scoring unnests each
candidate's tsvector, and a query's common words would make most of the store a candidate (seconds a query at 200k
passages). A passage holding only a query's common words would rank low anyway (their idf is under 2.3)."""
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_POOL_SIZE = 8


def _psycopg():  # type: ignore[no-untyped-def]
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise missing_dependency("psycopg", "'ragtune[pg]'  (PostgreSQL stores)") from exc
    return psycopg


@dataclass(frozen=True)
class PostgresAddress:
    """A parsed `--store postgresql://…` address."""

    conninfo: str
    """What libpq connects with (the address without `store=`)."""
    schema: str
    display: str
    """The address as shown to users: no password."""
    m: int = HNSW_M
    ef_construction: int = HNSW_EF_CONSTRUCTION
    ef_search: int = HNSW_EF_SEARCH

    @classmethod
    def parse(cls, address: str) -> PostgresAddress:
        parts = urlsplit(address)
        host = parts.netloc.rpartition("@")[2]
        user = parts.netloc.rpartition("@")[0].partition(":")[0]
        shown = urlunsplit((parts.scheme, f"{user}@{host}" if user else host, parts.path, parts.query, ""))
        query = parse_qsl(parts.query, keep_blank_values=True)
        names = [value for key, value in query if key == "store"]
        schema = names[-1] if names else DEFAULT_STORE
        if not _NAME.match(schema):
            raise InputError(
                f"store name '{schema}' in '{shown}' must be lower-case letters, digits and _ (a PostgreSQL schema)"
            )
        settings = {key: _hnsw_setting(key, value, shown) for key, value in query if key in HNSW_SETTINGS}
        rest = urlencode([(key, value) for key, value in query if key != "store" and key not in HNSW_SETTINGS])
        conninfo = urlunsplit((parts.scheme, parts.netloc, parts.path, rest, ""))
        return cls(conninfo=conninfo, schema=schema, display=shown, **settings)

    def table(self, name: str) -> str:
        return f'"{self.schema}"."{name}"'


def _hnsw_setting(key: str, value: str, shown: str) -> int:
    low, high = HNSW_SETTINGS[key]
    if not value.isdigit() or not low <= int(value) <= high:
        raise InputError(f"'{key}={value}' in '{shown}' must be a whole number from {low} to {high}")
    return int(value)


def _connect(address: PostgresAddress, autocommit: bool = True):  # type: ignore[no-untyped-def]
    psycopg = _psycopg()
    try:
        connection = psycopg.connect(address.conninfo, autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise StoreError(
            f"cannot connect to PostgreSQL at '{address.display}' ({str(exc).strip()}); start one with: "
            "ragtune pg start --data DIR"
        ) from exc
    return connection


def _register_vector(connection) -> None:  # type: ignore[no-untyped-def]
    from pgvector.psycopg import register_vector

    register_vector(connection)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _read_manifest(connection, address: PostgresAddress) -> Manifest | None:  # type: ignore[no-untyped-def]
    """The store's manifest, or None when the schema holds no store."""
    exists = connection.execute("SELECT to_regclass(%s)", (address.table("manifest"),)).fetchone()[0]
    if exists is None:
        return None
    row = connection.execute(f"SELECT schema_version, value FROM {address.table('manifest')}").fetchone()
    if row is None:
        return None
    if row[0] != SCHEMA_VERSION:
        what_to_do = (
            "upgrade it in place (nothing is re-encoded; the passage table and its indexes are rebuilt once) with: "
            f"ragtune index SOURCE --store {address.display}"
            if row[0] == UPGRADABLE_SCHEMA_VERSION
            else "index your documents into a new store (another ?store=NAME); the embedding cache makes it quick"
        )
        raise StoreError(
            f"store '{address.display}' has schema version {row[0]}; this ragtune reads version {SCHEMA_VERSION}: "
            + what_to_do
        )
    return Manifest(**row[1])


def _write_manifest(connection, address: PostgresAddress, manifest: Manifest) -> None:  # type: ignore[no-untyped-def]
    connection.execute(
        f"INSERT INTO {address.table('manifest')} (id, schema_version, value) VALUES (1, %s, %s) "
        "ON CONFLICT (id) DO UPDATE SET schema_version = EXCLUDED.schema_version, value = EXCLUDED.value",
        (SCHEMA_VERSION, json.dumps(manifest.to_json())),
    )


_KEYWORD_TEXT = "CASE WHEN title = '' THEN text ELSE title || ' ' || text END"
"""What keyword search indexes of a passage: title and text as one field, as the embedded engine does."""


def _create_token_function(connection, address: PostgresAddress) -> None:  # type: ignore[no-untyped-def]
    """`indexed_tokens(tsvector)`: a passage's BM25 length, its indexed tokens (stop words left out), counted from
    its tsvector's positions once, when the passage is written."""
    connection.execute(
        f'CREATE OR REPLACE FUNCTION "{address.schema}".indexed_tokens(tsvector) RETURNS int LANGUAGE sql IMMUTABLE '
        "PARALLEL SAFE AS $$ SELECT coalesce(sum(coalesce(array_length(positions, 1), 1)), 0)::int FROM unnest($1) $$"
    )


def _tokens_column(address: PostgresAddress) -> str:
    function = f'"{address.schema}".indexed_tokens'
    return f"tokens int GENERATED ALWAYS AS ({function}(to_tsvector('english', {_KEYWORD_TEXT}))) STORED"


def _create_schema(connection, address: PostgresAddress, dimension: int) -> None:  # type: ignore[no-untyped-def]
    t = address.table
    connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{address.schema}"')
    _create_token_function(connection, address)
    connection.execute(
        f"CREATE TABLE IF NOT EXISTS {t('manifest')} (id int PRIMARY KEY CHECK (id = 1), "
        "schema_version int NOT NULL, value jsonb NOT NULL)"
    )
    connection.execute(
        f"CREATE TABLE IF NOT EXISTS {t('sources')} (key text PRIMARY KEY, root_key text NOT NULL, "
        "content_hash text NOT NULL, size bigint NOT NULL, mtime_ns bigint NOT NULL, documents int NOT NULL, "
        "passages int NOT NULL)"
    )
    connection.execute(
        f"CREATE TABLE IF NOT EXISTS {t('passages')} (rowid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
        "id text NOT NULL UNIQUE, doc_id text NOT NULL, ordinal int NOT NULL, source text NOT NULL, "
        f"title text NOT NULL, text text NOT NULL, metadata jsonb NOT NULL, embedding vector({int(dimension)}) NOT NULL, "
        f"tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', {_KEYWORD_TEXT})) STORED, {_tokens_column(address)})"
    )
    connection.execute(f"CREATE TABLE IF NOT EXISTS {t('lexemes')} (word text PRIMARY KEY, ndoc bigint NOT NULL)")
    connection.execute(
        f"CREATE TABLE IF NOT EXISTS {t('keyword_totals')} (id int PRIMARY KEY CHECK (id = 1), "
        "passages bigint NOT NULL, tokens bigint NOT NULL)"
    )
    connection.execute(f"INSERT INTO {t('keyword_totals')} VALUES (1, 0, 0) ON CONFLICT (id) DO NOTHING")
    connection.execute(f"CREATE INDEX IF NOT EXISTS passages_source ON {t('passages')} (source)")
    connection.execute(f"CREATE INDEX IF NOT EXISTS passages_doc ON {t('passages')} (doc_id)")
    connection.execute(f"CREATE INDEX IF NOT EXISTS passages_tsv ON {t('passages')} USING gin (tsv)")


def _ensure_vector_extension(connection, address: PostgresAddress) -> None:  # type: ignore[no-untyped-def]
    psycopg = _psycopg()
    try:
        connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.Error as exc:
        raise StoreError(
            f"PostgreSQL at '{address.display}' lacks the pgvector extension or the right to create it ({exc}); "
            "install pgvector on the server, or ask its administrator to run: CREATE EXTENSION vector"
        ) from exc


def _lock_key(address: PostgresAddress) -> int:
    return zlib.crc32(f"ragtune:{address.schema}".encode()) - (1 << 31)


@contextmanager
def writer_connection(address: PostgresAddress) -> Iterator[Any]:
    """A connection holding the store's advisory lock (one writer at a time; released if the writer dies)."""
    connection = _connect(address, autocommit=True)
    try:
        _ensure_vector_extension(connection, address)
        _register_vector(connection)
        if not connection.execute("SELECT pg_try_advisory_lock(%s)", (_lock_key(address),)).fetchone()[0]:
            raise StoreError(f"store '{address.display}' is being written by another process; wait for it to finish")
        connection.autocommit = False
        _upgrade_schema(connection, address)
        yield connection
    finally:
        connection.close()


def _upgrade_schema(connection, address: PostgresAddress) -> None:  # type: ignore[no-untyped-def]
    """Bring a version-2 store to version 3 (BM25 lengths counted in tokens), in one transaction: the passage table
    is rewritten with its new `tokens` column and its indexes are rebuilt (as long as the first HNSW build took:
    about 40 minutes per million passages on 2 cores); readers wait for the commit."""
    t = address.table
    if connection.execute("SELECT to_regclass(%s)", (t("manifest"),)).fetchone()[0] is None:
        return
    row = connection.execute(f"SELECT schema_version FROM {t('manifest')}").fetchone()
    if row is None or row[0] != UPGRADABLE_SCHEMA_VERSION:
        return
    _create_token_function(connection, address)
    connection.execute(f"ALTER TABLE {t('passages')} ADD COLUMN {_tokens_column(address)}")
    connection.execute(f"ALTER TABLE {t('keyword_totals')} RENAME COLUMN lexemes TO tokens")
    connection.execute(
        f"UPDATE {t('keyword_totals')} SET tokens = (SELECT coalesce(sum(tokens), 0) FROM {t('passages')})"
    )
    connection.execute(f"UPDATE {t('manifest')} SET schema_version = %s", (SCHEMA_VERSION,))
    connection.commit()


class _PostgresSink:
    """The open update of one writer: a source's removal, passages and record commit together, at the checkpoints
    the ingest pipeline gives between whole files."""

    def __init__(self, connection, address: PostgresAddress) -> None:  # type: ignore[no-untyped-def]
        self._db = connection
        self._address = address

    def _count_keywords(self, key: str, sign: int) -> None:
        """Add (sign 1) or take away (-1) a source's passages from the BM25 statistics: how many passages hold each
        lexeme, how many passages and indexed tokens there are."""
        t = self._address.table
        passages = f"SELECT tsv FROM {t('passages')} WHERE source = %L"
        self._db.execute(
            f"INSERT INTO {t('lexemes')} AS l SELECT word, %s * ndoc FROM ts_stat(format(%s, %s::text)) "
            "ON CONFLICT (word) DO UPDATE SET ndoc = l.ndoc + EXCLUDED.ndoc",
            (sign, passages, key),
        )
        self._db.execute(
            f"UPDATE {t('keyword_totals')} SET passages = passages + %s * c.n, tokens = tokens + %s * c.total "
            f"FROM (SELECT count(*) AS n, coalesce(sum(tokens), 0) AS total FROM {t('passages')} "
            "WHERE source = %s) c",
            (sign, sign, key),
        )

    def remove_source(self, key: str) -> int:
        t = self._address.table
        self._count_keywords(key, -1)
        removed = self._db.execute(f"DELETE FROM {t('passages')} WHERE source = %s", (key,)).rowcount
        self._db.execute(f"DELETE FROM {t('sources')} WHERE key = %s", (key,))
        return int(removed)

    def abandon_source(self, key: str) -> None:
        self._db.execute(f"DELETE FROM {self._address.table('passages')} WHERE source = %s", (key,))

    def add_passages(self, passages: Sequence[Passage], embeddings: np.ndarray) -> None:
        from psycopg.types.json import Jsonb

        psycopg = _psycopg()
        columns = "id, doc_id, ordinal, source, title, text, metadata, embedding"
        try:
            with self._db.cursor() as cursor, cursor.copy(
                f"COPY {self._address.table('passages')} ({columns}) FROM STDIN WITH (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["text", "text", "int4", "text", "text", "text", "jsonb", "vector"])
                for passage, vector in zip(passages, embeddings, strict=True):
                    copy.write_row(
                        [passage.id, passage.doc_id, passage.ordinal, passage.source, passage.title, passage.text,
                         Jsonb(passage.metadata), np.asarray(vector, dtype=np.float32)]
                    )  # fmt: skip
        except psycopg.errors.UniqueViolation:
            self._db.rollback()
            raise self._duplicate_error(passages) from None

    def _duplicate_error(self, passages: Sequence[Passage]) -> InputError:
        ids = [p.id for p in passages]
        rows = self._db.execute(
            f"SELECT id, source FROM {self._address.table('passages')} WHERE id = ANY(%s)", (ids,)
        ).fetchall()
        self._db.rollback()
        held = dict(rows)
        for passage in passages:
            if passage.id in held:
                return InputError(
                    f"document id '{passage.doc_id}' in '{passage.source}' is already used by '{held[passage.id]}': "
                    "document ids must be unique across the store"
                )
        return InputError(f"'{passages[0].source}' repeats a document id: document ids must be unique across the store")

    def record_source(self, state: SourceState, documents: int, passages: int) -> None:
        self._count_keywords(state.key, 1)
        self._db.execute(
            f"INSERT INTO {self._address.table('sources')} VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (key) "
            "DO UPDATE SET root_key = EXCLUDED.root_key, content_hash = EXCLUDED.content_hash, size = EXCLUDED.size, "
            "mtime_ns = EXCLUDED.mtime_ns, documents = EXCLUDED.documents, passages = EXCLUDED.passages",
            (state.key, state.root_key, state.content_hash, state.size, state.mtime_ns, documents, passages),
        )

    def checkpoint(self) -> None:
        self._db.commit()
        kill_point("pg-commit")

    def vectors_of_sources(self, keys: Iterable[str]) -> Iterator[tuple[str, np.ndarray]]:
        rows = self._db.execute(
            f"SELECT title, text, embedding FROM {self._address.table('passages')} WHERE source = ANY(%s)",
            (list(keys),),
        ).fetchall()
        for title, text, vector in rows:
            yield embedding_text(title, text), vector.to_numpy().astype(np.float32, copy=False)


def _sources(connection, address: PostgresAddress) -> dict[str, SourceState]:  # type: ignore[no-untyped-def]
    rows = connection.execute(
        f"SELECT key, root_key, content_hash, size, mtime_ns FROM {address.table('sources')}"
    ).fetchall()
    return {row[0]: SourceState(*row) for row in rows}


def _stats(connection, address: PostgresAddress) -> dict[str, int]:  # type: ignore[no-untyped-def]
    t = address.table
    sources = connection.execute(f"SELECT count(*) FROM {t('sources')}").fetchone()[0]
    documents, passages = connection.execute(f"SELECT count(DISTINCT doc_id), count(*) FROM {t('passages')}").fetchone()
    return {"sources": int(sources), "documents": int(documents), "passages": int(passages)}


def _ensure_dense_index(connection, address: PostgresAddress, passages: int) -> str:  # type: ignore[no-untyped-def]
    """Exact search below `HNSW_FROM` passages; from there on an HNSW index, built once (after the first bulk load)
    and then kept up to date by PostgreSQL on every insert. Returns the dense kind ("exact" or "hnsw")."""
    name = address.table(HNSW_INDEX)
    if connection.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is not None:
        return "hnsw"
    if passages < HNSW_FROM:
        return "exact"
    connection.execute(
        "SELECT set_config('maintenance_work_mem', %s, true) "
        "WHERE pg_size_bytes(current_setting('maintenance_work_mem')) < pg_size_bytes(%s)",
        (BUILD_MEMORY_FLOOR, BUILD_MEMORY_FLOOR),
    )
    connection.execute(
        f"CREATE INDEX {HNSW_INDEX} ON {address.table('passages')} USING hnsw "
        f"(embedding vector_cosine_ops) WITH (m = {address.m}, ef_construction = {address.ef_construction})"
    )
    return "hnsw"


def _dense_index_options(connection, address: PostgresAddress) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The built HNSW index's own settings (`{"hnsw": "m=16,ef_construction=64"}`), for the manifest; none when
    dense search is exact."""
    row = connection.execute(
        "SELECT reloptions FROM pg_class WHERE oid = to_regclass(%s)", (address.table(HNSW_INDEX),)
    ).fetchone()
    return {"hnsw": ",".join(row[0] or [])} if row else {}


def _new_manifest(
    previous: Manifest | None, model_ref: ModelRef, dimension: int, chunking: ChunkingConfig, dense_kind: str,
    counts: dict[str, int], index_options: dict[str, str],
) -> Manifest:  # fmt: skip
    number = int(previous.generation.removeprefix("gen-")) + 1 if previous else 1
    return Manifest(
        format_version=FORMAT_VERSION, generation=f"gen-{number:06d}", model=model_ref.to_json(), dimension=dimension,
        chunking=chunking.to_json(),
        backends={
            "engine": "postgresql", "dense": "pgvector", "dense_kind": dense_kind, "keyword": "postgresql-fts",
            **index_options,
        },
        counts=counts, created=previous.created if previous else _now(), updated=_now(),
        search=previous.search if previous and previous.model.get("revision") == model_ref.revision else {},
        skipped=previous.skipped if previous else {},
    )  # fmt: skip


def index_sources(
    address: str,
    sources: Sequence[str | Path],
    model: str | None = None,
    chunking: ChunkingConfig | None = None,
    show_progress: bool | None = None,
    ray: RayConfig | None = None,
) -> IndexReport:
    """Index files and folders into the PostgreSQL store at `address`, creating it or updating what changed; with
    `ray`, the passages are encoded on that cluster."""
    started = time.perf_counter()
    parsed = PostgresAddress.parse(address)
    with writer_connection(parsed) as db:
        previous = _read_manifest(db, parsed)
        requested = resolve_model(model) if model else None
        model_ref = check_model(previous, requested) if previous else requested or resolve_model(DEFAULT_EMBEDDING_MODEL)
        files, roots, not_read = discover_sources(sources)
        old_sources = _sources(db, parsed) if previous else {}
        plan = plan_changes(files, roots, old_sources, previous.skipped if previous else None)
        if previous is not None:
            check_same_chunking(previous, chunking)
            if plan.is_empty:
                db.rollback()
                return IndexReport.nothing_changed(len(files), plan, previous, started, not_read)
        embedder = Embedder(model_ref)
        if previous is None:
            config = (chunking or ChunkingConfig()).resolve(
                embedder.max_seq_length, embedder.tokenizer.num_special_tokens_to_add()
            )
            _create_schema(db, parsed, embedder.dimension)
            base = _new_manifest(None, model_ref, embedder.dimension, config, "exact", {}, {})
            _write_manifest(db, parsed, base)  # an empty store: readers may open it while the first files load
            db.commit()
        else:
            config, base = ChunkingConfig(**previous.chunking), previous
        sink = _PostgresSink(db, parsed)
        with (
            encoding_on(embedder, ray) as encoder,
            EmbeddingCache.for_encoder(encoder, embedder.dimension) as cache,
        ):
            cache.adopt(sink.vectors_of_sources(plan.leaving))  # edited files keep the vectors of unchanged text
            removed = sum(sink.remove_source(key) for key in plan.leaving)
            added, skipped = ingest_sources(
                plan.changed, sink, Chunker(embedder.tokenizer, config), encoder, cache, show_progress
            )
            stats = _stats(db, parsed)
            dense_kind = _ensure_dense_index(db, parsed, stats["passages"])
            options = _dense_index_options(db, parsed)
            manifest = replace(
                _new_manifest(base, model_ref, embedder.dimension, config, dense_kind, stats, options),
                skipped=plan.skipped_after(base.skipped, skipped),
            )
            _write_manifest(db, parsed, manifest)
            db.commit()
        outcome = IngestOutcome(added, removed, skipped)
        return IndexReport.of_update(
            len(files), plan, outcome, stats, cache, started, manifest.generation, dense_kind, worker_report(encoder),
            not_read,
        )


def reindex_store(
    address: str, model: str, show_progress: bool | None = None, ray: RayConfig | None = None
) -> IndexReport:
    """Re-embed every passage with another model in one transaction: readers keep the old vectors until it commits
    (or, when the new model's dimension differs, wait for the commit)."""
    started = time.perf_counter()
    parsed = PostgresAddress.parse(address)
    with writer_connection(parsed) as db:
        previous = _read_manifest(db, parsed)
        if previous is None:
            raise StoreError(f"store '{parsed.display}' does not exist; create it with: ragtune index SOURCE --store ADDR")
        model_ref = resolve_model(model)
        embedder = Embedder(model_ref)
        t = parsed.table
        if embedder.dimension != previous.dimension:  # a new column: readers wait for the commit instead
            db.execute(f"DROP INDEX IF EXISTS {parsed.table(HNSW_INDEX)}")
            db.execute(f"ALTER TABLE {t('passages')} DROP COLUMN embedding")
            db.execute(f"ALTER TABLE {t('passages')} ADD COLUMN embedding vector({int(embedder.dimension)})")
        with (
            encoding_on(embedder, ray) as encoder,
            EmbeddingCache.for_encoder(encoder, embedder.dimension) as cache,
            progress_bar(show_progress) as progress,
        ):
            total = int(db.execute(f"SELECT count(*) FROM {t('passages')}").fetchone()[0])
            task = progress.add_task("re-embedding", total=total, unit="passages")
            last = 0
            while rows := db.execute(
                f"SELECT rowid, title, text FROM {t('passages')} WHERE rowid > %s ORDER BY rowid LIMIT %s",
                (last, encoder.texts_per_call),
            ).fetchall():
                last = rows[-1][0]
                vectors = cache.encode_blocks([embedding_text(r[1], r[2]) for r in rows], encoder.encode_blocks)
                with db.cursor() as cursor:
                    cursor.executemany(
                        f"UPDATE {t('passages')} SET embedding = %s WHERE rowid = %s",
                        [(np.asarray(v, dtype=np.float32), r[0]) for r, v in zip(rows, vectors, strict=True)],
                    )
                progress.advance(task, len(rows))
                kill_point("reindex-batch")
            db.execute(f"ALTER TABLE {t('passages')} ALTER COLUMN embedding SET NOT NULL")
            stats = _stats(db, parsed)
            dense_kind = _ensure_dense_index(db, parsed, stats["passages"])
            config = ChunkingConfig(**previous.chunking)
            options = _dense_index_options(db, parsed)
            manifest = _new_manifest(previous, model_ref, embedder.dimension, config, dense_kind, stats, options)
            _write_manifest(db, parsed, manifest)
            db.commit()
        return IndexReport.of_reindex(
            stats, cache, started, manifest.generation, dense_kind, worker_report(encoder)
        )


def record_search_settings(address: str, settings: dict[str, Any]) -> Manifest:
    """Record the store's default search settings in its manifest row; contents are untouched."""
    parsed = PostgresAddress.parse(address)
    with writer_connection(parsed) as db:
        previous = _read_manifest(db, parsed)
        if previous is None:
            raise StoreError(f"store '{parsed.display}' does not exist")
        manifest = replace(previous, search=dict(settings), updated=_now())
        _write_manifest(db, parsed, manifest)
        db.commit()
    return manifest


def keyword_sql(address: PostgresAddress, where: str) -> str:
    """Okapi BM25 (k1 1.2, b 0.75, Lucene's idf, as tantivy scores) over PostgreSQL full-text search: a passage's
    length is its number of indexed tokens and a term's frequency its number of positions (tantivy counts tokens too,
    stop words included; SciFact: hybrid 0.7035 with lengths in distinct lexemes, 0.7085 in tokens, tantivy 0.7086).
    Candidates are the passages holding a query lexeme found in at most `BM25_MATCH_MAX_SHARE` of the
    passages (every query lexeme when none is that rare); each candidate is scored over all the query's lexemes.
    Parameters: the query text, the filter's parameters, k."""
    t = address.table
    return (
        "WITH q AS (SELECT DISTINCT lexeme AS word FROM unnest(to_tsvector('english', %s))), "
        f"totals AS (SELECT greatest(passages, 1)::float8 AS n, greatest(tokens, 1)::float8 / greatest(passages, 1) "
        f"AS avgdl FROM {t('keyword_totals')}), "
        "w AS (SELECT q.word, ln(1 + (totals.n - l.ndoc + 0.5) / (l.ndoc + 0.5)) AS idf, "
        f"l.ndoc <= {BM25_MATCH_MAX_SHARE} * totals.n AS selective "
        f"FROM q JOIN {t('lexemes')} l ON l.word = q.word, totals WHERE l.ndoc > 0), "
        "tq AS (SELECT to_tsquery('simple', string_agg(quote_literal(word), ' | ')) AS query FROM w "
        "WHERE selective OR NOT EXISTS (SELECT 1 FROM w WHERE selective)) "
        f"SELECT p.rowid, sum(w.idf * tf * {BM25_K1 + 1} / (tf + {BM25_K1} * "
        f"(1 - {BM25_B} + {BM25_B} * p.tokens / totals.avgdl))) AS score "
        f"FROM {t('passages')} p CROSS JOIN tq CROSS JOIN totals "
        "CROSS JOIN LATERAL (SELECT lexeme, coalesce(array_length(positions, 1), 1)::float8 AS tf FROM unnest(p.tsv)) u "
        "JOIN w ON w.word = u.lexeme "
        f"WHERE p.tsv @@ tq.query AND {where} GROUP BY p.rowid ORDER BY score DESC, p.rowid LIMIT %s"
    )


class PostgresStore(QueryEmbedding):
    """A PostgreSQL store opened for reading, through a connection pool (safe to share between threads)."""

    def __init__(self, address: PostgresAddress, manifest: Manifest, pool: Any) -> None:
        self._address = address
        self.manifest = manifest
        self._pool = pool
        self._embedder = None

    @classmethod
    def open(cls, address: str) -> PostgresStore:
        parsed = PostgresAddress.parse(address)
        with _connect(parsed) as connection:
            manifest = _read_manifest(connection, parsed)
        if manifest is None:
            raise StoreError(
                f"store '{parsed.display}' does not exist; create it with: ragtune index SOURCE --store {parsed.display}"
            )
        from psycopg_pool import ConnectionPool

        pool = ConnectionPool(
            parsed.conninfo, min_size=1, max_size=_POOL_SIZE, kwargs={"autocommit": True},
            configure=_register_vector, open=True, name=f"ragtune-{parsed.schema}",
        )  # fmt: skip
        return cls(parsed, manifest, pool)

    @property
    def address(self) -> str:
        return self._address.display

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._pool.connection() as connection:
            return connection.execute(sql, params).fetchall()

    def changed_since_open(self) -> bool:
        """Whether the manifest row differs in any field from the one opened: recorded search settings keep the
        generation, and `updated` counts whole seconds, so comparing those two missed a change within a second."""
        opened = json.dumps(self.manifest.to_json())
        row = self._rows(f"SELECT value <> %s::jsonb FROM {self._address.table('manifest')}", (opened,))
        return not row or bool(row[0][0])

    def count(self) -> int:
        return int(self._rows(f"SELECT count(*) FROM {self._address.table('passages')}")[0][0])

    def iter_passages(self, batch: int = 2048) -> Iterator[Passage]:
        last = 0
        while rows := self._rows(
            f"SELECT rowid, id, doc_id, ordinal, title, text, source, metadata FROM "
            f"{self._address.table('passages')} WHERE rowid > %s ORDER BY rowid LIMIT %s",
            (last, batch),
        ):
            last = rows[-1][0]
            for row in rows:
                yield Passage(row[1], row[2], row[3], row[4], row[5], row[6], row[7])

    def passage_texts(self) -> Iterator[str]:
        for passage in self.iter_passages():
            yield passage.embedding_text()

    def document_texts(self, doc_ids: Iterable[str]) -> dict[str, list[str]]:
        texts: dict[str, list[str]] = {}
        for doc_id, title, text in self._rows(
            f"SELECT doc_id, title, text FROM {self._address.table('passages')} WHERE doc_id = ANY(%s) ORDER BY rowid",
            (list(dict.fromkeys(doc_ids)),),
        ):
            texts.setdefault(doc_id, []).append(embedding_text(title, text))
        return texts

    def passage_texts_of(self, passage_ids: Iterable[str]) -> dict[str, str]:
        return {
            pid: embedding_text(title, text)
            for pid, title, text in self._rows(
                f"SELECT id, title, text FROM {self._address.table('passages')} WHERE id = ANY(%s)",
                (list(dict.fromkeys(passage_ids)),),
            )
        }

    def sibling_texts(self, passage_ids: Iterable[str]) -> dict[str, list[str]]:
        doc_of = dict(
            self._rows(
                f"SELECT id, doc_id FROM {self._address.table('passages')} WHERE id = ANY(%s)",
                (list(dict.fromkeys(passage_ids)),),
            )
        )
        texts_of_doc = self.document_texts(doc_of.values())
        return {pid: texts_of_doc.get(doc, []) for pid, doc in doc_of.items()}

    def embedding(self, passage_id: str) -> np.ndarray:
        rows = self._rows(f"SELECT embedding FROM {self._address.table('passages')} WHERE id = %s", (passage_id,))
        if not rows:
            raise StoreError(f"passage '{passage_id}' is not in the store")
        return rows[0][0].to_numpy().astype(np.float32, copy=False)

    def dense_search(self, vectors: np.ndarray, k: int, filters: Filters = ()) -> list[list[tuple[int, float]]]:
        """Top-k (row id, cosine) per query vector; HNSW keeps scanning until k rows pass the filters."""
        where, params = filter_sql(filters, "%s", "metadata ->> %s = %s")
        sql = (
            f"SELECT rowid, 1 - (embedding <=> %s) FROM {self._address.table('passages')} WHERE {where} "
            "ORDER BY embedding <=> %s LIMIT %s"
        )
        results: list[list[tuple[int, float]]] = []
        with self._pool.connection() as connection, connection.transaction():
            ef_search = max(self._address.ef_search, k)
            connection.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(ef_search),))
            connection.execute("SELECT set_config('hnsw.iterative_scan', 'strict_order', true)")
            for vector in np.atleast_2d(vectors):
                query = np.asarray(vector, dtype=np.float32)
                rows = connection.execute(sql, (query, *params, query, k)).fetchall()
                results.append([(int(r[0]), float(r[1])) for r in rows])
        return results

    def keyword_search(self, queries: Sequence[str], k: int, filters: Filters = ()) -> list[list[tuple[int, float]]]:
        """Top-k (row id, BM25) per query: passages holding any of the query's english lexemes (the GIN index finds
        them), scored by Okapi BM25 from the lexeme statistics the writers keep (`keyword_sql`)."""
        where, params = filter_sql(filters, "%s", "metadata ->> %s = %s")
        sql = keyword_sql(self._address, where)
        with self._pool.connection() as connection:
            return [
                [(int(r[0]), float(r[1])) for r in connection.execute(sql, (query, *params, k)).fetchall()]
                for query in queries
            ]

    def hits(self, scored: Iterable[tuple[int, float]]) -> list[Hit]:
        scored = list(scored)
        if not scored:
            return []
        rows = self._rows(
            f"SELECT rowid, id, doc_id, title, text, source, metadata FROM {self._address.table('passages')} "
            "WHERE rowid = ANY(%s)",
            ([rowid for rowid, _ in scored],),
        )
        by_rowid = {row[0]: row for row in rows}
        return [
            Hit(id=row[1], doc_id=row[2], score=float(score), title=row[3], text=row[4], source=row[5], metadata=row[6])
            for rowid, score in scored
            if (row := by_rowid.get(rowid)) is not None
        ]

    def info(self) -> dict[str, Any]:
        t = self._address.table
        sizes = self._rows(
            "SELECT pg_total_relation_size(%s), pg_relation_size(%s), "
            "coalesce(pg_relation_size(to_regclass(%s)), 0), pg_relation_size(to_regclass(%s))",
            (t("passages"), t("passages"), self._address.table(HNSW_INDEX),
             self._address.table("passages_tsv")),
        )[0]  # fmt: skip
        with self._pool.connection() as connection:
            counts = _stats(connection, self._address)
        size_bytes = {"passages": int(sizes[1]), "dense": int(sizes[2]), "keyword": int(sizes[3]), "total": int(sizes[0])}
        return store_info(self._address.display, self.manifest, counts, size_bytes)
