"""The embedded engine's writes: a directory with a manifest and generations of (passage table, dense index, keyword
index). Its read side is `embedded_reader.Store`.

Writes never touch the current generation. `index_sources` builds the next generation in `gen-N.partial/`, renames
it into place, and only then points the manifest at it (an atomic rename), so a crash at any moment leaves the
previous store readable. Embeddings are saved to the user's embedding cache as they are computed, so the next run
finishes the work without encoding the same text twice (and another store of the same text encodes nothing).
Inside a generation each vector is kept once, in the dense index; the new vectors of an update wait in the partial
generation's pending file until the index takes them.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ragtune.corpus import Chunker, ChunkingConfig, discover_sources
from ragtune.embedding import Embedder, PassageEncoder
from ragtune.embedding_cache import EmbeddingCache
from ragtune.errors import StoreError
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
from ragtune.store.dense import EXACT_THRESHOLD, REBUILD_DELETED_SHARE, FaissDenseIndex
from ragtune.fsutil import exclusive_lock, free_space_text, fsync_dir, is_disk_full, remove_abandoned_temporaries
from ragtune.store.keyword import build_tantivy_index, update_tantivy_index
from ragtune.store.manifest import (
    FORMAT_VERSION, Manifest, manifest_path, model_record, read_manifest, write_manifest,
)  # fmt: skip
from ragtune.store.layout import DENSE_FILE, KEYWORD_DIR, LEGACY_CACHE_FILE, PASSAGES_FILE
from ragtune.store.passages import PassageTable



def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def index_sources(
    store_dir: str | Path,
    sources: Sequence[str | Path],
    model: str | None = None,
    chunking: ChunkingConfig | None = None,
    show_progress: bool | None = None,
    ray: RayConfig | None = None,
) -> IndexReport:
    """Index files and folders into the store at `store_dir`, creating it or updating it incrementally; with `ray`,
    the passages are encoded on that cluster."""
    started = time.perf_counter()
    store_dir = Path(store_dir).expanduser()
    _refuse_foreign_directory(store_dir)
    with exclusive_lock(store_dir):
        previous = read_manifest(store_dir) if manifest_path(store_dir).exists() else None
        requested = resolve_model(model) if model else None
        if previous is None:
            model_ref = requested or resolve_model(DEFAULT_EMBEDDING_MODEL)
        else:
            model_ref = check_model(previous, requested)
        files, roots, not_read = discover_sources(sources, leave_out=[store_dir])
        old_sources = _sources_of(store_dir, previous)
        plan = plan_changes(files, roots, old_sources, previous.skipped if previous else None)
        if previous is not None:
            check_same_chunking(previous, chunking)
            if plan.is_empty:
                return IndexReport.nothing_changed(len(files), plan, previous, started, not_read)
        embedder = Embedder(model_ref)
        config = (chunking or ChunkingConfig()).resolve(
            embedder.max_seq_length, embedder.tokenizer.num_special_tokens_to_add()
        )
        if previous is not None:
            config = ChunkingConfig(**previous.chunking)

        with (
            encoding_on(embedder, ray) as encoder,
            EmbeddingCache.for_encoder(encoder, embedder.dimension) as cache,
            _building_generation(store_dir, previous, cache) as (generation, partial, table),
        ):
            leaving = plan.leaving
            change = _IndexChange.start(store_dir, previous, table, leaving)
            cache.adopt(change.vectors_leaving(table, leaving))  # moved or edited files keep unchanged text's vectors
            removed = sum(table.remove_source(key) for key in leaving)
            chunker = Chunker(embedder.tokenizer, config)
            added, skipped = ingest_sources(plan.changed, table, chunker, encoder, cache, show_progress)
            table.commit()
            stats = table.stats()
            dense_kind = change.apply(table, partial, embedder.dimension, stats["passages"])
            unreadable = plan.skipped_after(previous.skipped if previous else {}, skipped)
            _publish_generation(store_dir, partial, previous, model_ref, embedder.dimension, config, dense_kind, stats,
                                unreadable)  # fmt: skip
        outcome = IngestOutcome(added, removed, skipped)
        return IndexReport.of_update(
            len(files), plan, outcome, stats, cache, started, generation, dense_kind, worker_report(encoder),
            not_read,
        )


def reindex_store(
    store_dir: str | Path, model: str, show_progress: bool | None = None, ray: RayConfig | None = None
) -> IndexReport:
    """Re-embed every passage of a store with another model (e.g. a fine-tuned one) and switch to it atomically.

    Passages, chunking and the keyword index stay as they are; readers keep the old generation until the switch.
    """
    started = time.perf_counter()
    store_dir = Path(store_dir).expanduser()
    with exclusive_lock(store_dir):
        previous = read_manifest(store_dir)
        model_ref = resolve_model(model)
        embedder = Embedder(model_ref)
        with (
            encoding_on(embedder, ray) as encoder,
            EmbeddingCache.for_encoder(encoder, embedder.dimension) as cache,
            _building_generation(store_dir, previous, cache) as (generation, partial, table),
        ):
            with progress_bar(show_progress) as progress:
                task = progress.add_task("re-embedding", total=table.count(), unit="passages")

                def advance(passages: int) -> None:
                    progress.advance(task, passages)
                    kill_point("reindex-batch")

                _embed_every_row(table, encoder, cache, advance)
            stats, dense_kind = _commit_and_build_indexes(table, partial, embedder.dimension)
            config = ChunkingConfig(**previous.chunking)
            _publish_generation(store_dir, partial, previous, model_ref, embedder.dimension, config, dense_kind, stats)
        return IndexReport.of_reindex(stats, cache, started, generation, dense_kind, worker_report(encoder))


@contextmanager
def _building_generation(
    store_dir: Path, previous: Manifest | None, cache: EmbeddingCache | None
) -> Iterator[tuple[str, Path, PassageTable]]:
    """The next generation's passage table in `gen-N.partial/` (a copy of the current one), closed however the block
    ends. If the disk fills up, the unfinished generation and what this run added to `cache` are removed at once and
    the one `StoreError` says so (the store stays at its last generation)."""
    generation = _next_generation(store_dir)
    partial = store_dir / f"{generation}.partial"
    table: PassageTable | None = None
    try:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        if previous is not None:
            _copy_sqlite(store_dir / previous.generation / PASSAGES_FILE, partial / PASSAGES_FILE)
        table = PassageTable(partial / PASSAGES_FILE)
        yield generation, partial, table
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        if table is not None:
            table.close()
        current = _remove_unpublished(store_dir, generation)
        if cache is not None:
            cache.discard_new()
        kept = f"it is unchanged at {current}" if current else "nothing was written"
        raise StoreError(
            f"disk full while writing store '{store_dir}' ({free_space_text(store_dir)} now): the unfinished update "
            f"was removed and {kept}; free space on that disk (or use a --store elsewhere) and run the same command again"
        ) from None
    finally:
        if table is not None:
            table.close()


def _remove_unpublished(store_dir: Path, generation: str) -> str | None:
    """Delete `generation` unless the manifest points to it (its `.partial` build or its renamed folder), and a
    half-written manifest. Returns the generation the manifest points to."""
    current = read_manifest(store_dir).generation if manifest_path(store_dir).exists() else None
    if generation != current:
        shutil.rmtree(store_dir / f"{generation}.partial", ignore_errors=True)
        shutil.rmtree(store_dir / generation, ignore_errors=True)
    remove_abandoned_temporaries(manifest_path(store_dir))
    return current


def rebuild_generation(store_dir: Path, manifest: Manifest, fill: Callable[[PassageTable], None]) -> Manifest:
    """Publish a new generation whose passage table `fill` writes (from scratch, without vectors), with the
    manifest's model and chunking, and indexes built from it; the vectors come from the user's embedding cache, and
    passages it lacks are encoded again. The caller holds the store's lock. Returns the new manifest."""
    model_ref = ModelRef(manifest.model["name"], Path(manifest.model.get("path", "")), manifest.model["revision"])
    with _building_generation(store_dir, None, None) as (_, partial, table):
        fill(table)
        _embed_salvaged_rows(table, model_ref, manifest.dimension)
        stats, dense_kind = _commit_and_build_indexes(table, partial, manifest.dimension)
        config = ChunkingConfig(**manifest.chunking)
        _publish_generation(store_dir, partial, manifest, model_ref, manifest.dimension, config, dense_kind, stats)
    return read_manifest(store_dir)


def _embed_every_row(
    table: PassageTable,
    encoder: PassageEncoder,
    cache: EmbeddingCache,
    after_batch: Callable[[int], None] | None = None,
) -> None:
    """Give every row of `table` its vector through `cache` (encoding what it lacks); `after_batch` is told each
    batch's size."""
    for ids, texts in table.iter_texts(batch=encoder.texts_per_call):
        table.set_embeddings(ids, cache.encode_blocks(texts, encoder.encode_blocks))
        if after_batch is not None:
            after_batch(len(ids))


def _embed_salvaged_rows(table: PassageTable, model_ref: ModelRef, dimension: int) -> None:
    embedder = Embedder(model_ref)
    if embedder.dimension != dimension:
        raise StoreError(
            f"model '{model_ref.name}' now gives {embedder.dimension}-dimensional vectors, the store holds "
            f"{dimension}; reinstall the store's model or rebuild the store with ragtune index"
        )
    with EmbeddingCache.for_encoder(embedder, dimension) as cache:
        _embed_every_row(table, embedder, cache)


def _commit_and_build_indexes(table: PassageTable, partial: Path, dimension: int) -> tuple[dict[str, int], str]:
    table.commit()
    stats = table.stats()
    return stats, _build_indexes(table, partial, dimension, stats["passages"])


def _publish_generation(
    store_dir: Path,
    partial: Path,
    previous: Manifest | None,
    model_ref: ModelRef,
    dimension: int,
    chunking: ChunkingConfig,
    dense_kind: str,
    counts: dict[str, int],
    skipped: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Flush the finished generation, rename it into place, then switch the manifest to it (the atomic step).
    `skipped`: the unreadable files to remember (default: the previous manifest's)."""
    generation = partial.name.removesuffix(".partial")
    manifest = Manifest(
        format_version=FORMAT_VERSION, generation=generation, model=model_record(model_ref.to_json(), store_dir),
        dimension=dimension,
        chunking=chunking.to_json(), backends={"dense": "faiss", "dense_kind": dense_kind, "keyword": "tantivy"},
        counts=counts, created=previous.created if previous else _now(), updated=_now(),
        search=previous.search if previous and previous.model.get("revision") == model_ref.revision else {},
        skipped=skipped if skipped is not None else previous.skipped if previous else {},
    )  # fmt: skip  # search settings chosen for one model do not carry over to another
    write_manifest(partial, manifest)  # a copy inside the generation, from which `check --repair` can restore
    _sync_tree(partial)
    kill_point("publish-rename")
    partial.rename(store_dir / generation)
    fsync_dir(store_dir)
    kill_point("publish-manifest")
    write_manifest(store_dir, manifest)
    _remove_old_generations(store_dir, keep={generation, previous.generation if previous else generation})


def record_search_settings(store_dir: str | Path, settings: dict[str, Any]) -> Manifest:
    """Record the store's default search settings (e.g. the system the quickstart chose on dev queries) in its
    manifest and the current generation's copy; contents are untouched. Returns the new manifest."""
    store_dir = Path(store_dir).expanduser()
    with exclusive_lock(store_dir):
        manifest = replace(read_manifest(store_dir), search=dict(settings), updated=_now())
        write_manifest(store_dir / manifest.generation, manifest)
        write_manifest(store_dir, manifest)
    return manifest


def _sources_of(store_dir: Path, manifest: Manifest | None) -> dict[str, SourceState]:
    if manifest is None:
        return {}
    table = PassageTable(store_dir / manifest.generation / PASSAGES_FILE, read_only=True)
    try:
        return table.sources()
    finally:
        table.close()


def _refuse_foreign_directory(store_dir: Path) -> None:
    if store_dir.exists() and not store_dir.is_dir():
        raise StoreError(f"--store '{store_dir}' is a file; give a directory")
    if store_dir.is_dir() and not manifest_path(store_dir).exists():
        own = {".lock", LEGACY_CACHE_FILE, LEGACY_CACHE_FILE + "-wal", LEGACY_CACHE_FILE + "-shm"}
        foreign = [p.name for p in store_dir.iterdir() if p.name not in own and not p.name.startswith("gen-")]
        if foreign:
            raise StoreError(
                f"--store '{store_dir}' is a non-empty directory that is not a ragtune store (holds '{foreign[0]}'); "
                "give an empty or new directory"
            )


@dataclass
class _IndexChange:
    """An update's change to the previous generation's indexes: rows removed, rows added above `high_water`."""

    previous: Path | None
    dense: FaissDenseIndex | None
    removed: np.ndarray
    high_water: int

    @classmethod
    def start(cls, store_dir: Path, previous: Manifest | None, table: PassageTable, leaving: list[str]) -> _IndexChange:
        """Before the update's removals: note the rows that will go, and number the rows to come above every id the
        previous dense index holds."""
        if previous is None:
            return cls(None, None, np.empty(0, dtype=np.int64), -1)
        folder = store_dir / previous.generation
        dense = FaissDenseIndex.load(folder / DENSE_FILE)
        high_water = max(table.max_rowid(), dense.highest_id())
        table.number_new_rows_above(high_water)
        return cls(folder, dense, table.rowids_of_sources(leaving), high_water)

    def vectors_leaving(self, table: PassageTable, leaving: list[str]) -> Iterator[tuple[str, np.ndarray]]:
        """(embedding text, vector) of the passages of the sources that leave (their vectors are in the previous
        dense index only)."""
        if self.dense is None or not leaving:
            return
        rowids, texts = table.texts_of_sources(leaving)
        yield from zip(texts, self.dense.vectors(rowids), strict=True)

    def apply(self, table: PassageTable, partial: Path, dimension: int, size: int) -> str:
        """Write the new generation's indexes: the previous ones with the change applied, or built from the table
        when there are none, the index kind must change (Flat ↔ HNSW at `EXACT_THRESHOLD`) or too many removed
        vectors would linger in HNSW. Returns the dense kind."""
        dense, self.dense = self.dense, None  # the update owns it from here; memory goes with it
        if self.previous is None or dense is None:
            return _build_indexes(table, partial, dimension, size)
        dense.remove(self.removed)
        wanted = "flat" if size < EXACT_THRESHOLD else "hnsw"
        if dense.kind != wanted or dense.deleted_share >= REBUILD_DELETED_SHARE:
            return _build_indexes(table, partial, dimension, size, kept=dense)
        for ids, vectors in table.iter_pending_vectors():
            dense.add(ids, vectors)
        _check_holds_every_passage(dense, size)
        dense.save(partial / DENSE_FILE)
        update_tantivy_index(
            self.previous / KEYWORD_DIR, partial / KEYWORD_DIR, self.removed, table.iter_texts(above=self.high_water)
        )
        table.drop_pending_vectors()
        return dense.kind


def _build_indexes(
    table: PassageTable, directory: Path, dimension: int, size: int, kept: FaissDenseIndex | None = None
) -> str:
    """Build the dense index from the vectors `kept` holds (the previous generation's, removed ones excluded) and
    the table's pending vectors, and the keyword index from the table's texts."""
    dense = FaissDenseIndex.create(dimension, size, EXACT_THRESHOLD)
    for ids, vectors in kept.iter_live() if kept is not None else ():
        dense.add(ids, vectors)
    for ids, vectors in table.iter_pending_vectors():
        dense.add(ids, vectors)
    _check_holds_every_passage(dense, size)
    dense.save(directory / DENSE_FILE)
    build_tantivy_index(directory / KEYWORD_DIR, table.iter_texts())
    table.drop_pending_vectors()
    return dense.kind


def _check_holds_every_passage(dense: FaissDenseIndex, passages: int) -> None:
    if len(dense) != passages:
        raise StoreError(
            f"the new dense index holds {len(dense)} vectors for {passages} passages; nothing was published, "
            "run the same command again (and report this if it repeats)"
        )


def _copy_sqlite(source: Path, target: Path) -> None:
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def _sync_tree(directory: Path) -> None:
    """Flush every file of a finished generation to disk before it is renamed into place."""
    for path in directory.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    fsync_dir(directory)


def _next_generation(store_dir: Path) -> str:
    numbers = [int(p.name[4:10]) for p in store_dir.glob("gen-*") if p.name[4:10].isdigit()]
    return f"gen-{max(numbers, default=0) + 1:06d}"


def _remove_old_generations(store_dir: Path, keep: set[str]) -> None:
    """Keep the current generation and the one before it (a reader may still have it open)."""
    for path in store_dir.glob("gen-*"):
        if path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)
