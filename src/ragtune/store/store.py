"""The embedded store: a directory with a manifest and generations of (passage table, dense index, keyword index).

Writes never touch the current generation. `index_sources` builds the next generation in `gen-N.partial/`, renames
it into place, and only then points the manifest at it (an atomic rename), so a crash at any moment leaves the
previous store readable. Embeddings are saved to the user's embedding cache as they are computed, so the next run
finishes the work without encoding the same text twice (and another store of the same text encodes nothing).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ragtune.corpus import Chunker, ChunkingConfig, SkippedFile, SourceFile, discover_sources, read_documents
from ragtune.corpus.readers import file_hash
from ragtune.embedding import Embedder
from ragtune.embedding_cache import EmbeddingCache
from ragtune.errors import StoreError
from ragtune.faults import kill_point
from ragtune.models import DEFAULT_EMBEDDING_MODEL, ModelRef, resolve_model
from ragtune.progress import progress_bar
from ragtune.store.dense import EXACT_THRESHOLD, FaissDenseIndex
from ragtune.store.fsutil import exclusive_lock, free_space_text, fsync_dir, is_disk_full
from ragtune.store.keyword import TantivyKeywordIndex, build_tantivy_index
from ragtune.store.manifest import FORMAT_VERSION, Manifest, manifest_path, read_manifest, write_manifest
from ragtune.store.passages import PassageTable, SourceState
from ragtune.types import Passage

PASSAGES_FILE = "passages.sqlite"
DENSE_FILE = "dense.faiss"
KEYWORD_DIR = "keyword"
LEGACY_CACHE_FILE = "embeddings.sqlite"
"""Where format-1 stores kept their own embedding cache; the shared cache (`ragtune.embedding_cache`) replaced it."""
_EMBED_BATCH = 512


@dataclass(frozen=True)
class IndexReport:
    """What one `index` run did."""

    files_seen: int
    files_unchanged: int
    files_added: int
    files_modified: int
    files_deleted: int
    skipped: dict[str, str]
    passages_added: int
    passages_removed: int
    passages_total: int
    encoded: int
    cached: int
    seconds: float
    generation: str
    dense_kind: str
    files_migrated: int = 0
    encode_seconds: float = 0.0
    """Of `seconds`, the time the model spent encoding (0 when every vector came from the cache)."""

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class _Plan:
    changed: list[tuple[SourceFile, str]] = field(default_factory=list)  # file, content hash
    added: int = 0
    modified: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    migrated: list[str] = field(default_factory=list)  # format-1 keys replaced by the same file's path key
    unchanged: int = 0


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_model(manifest: Manifest, requested: ModelRef | None) -> ModelRef:
    """The model a store must be used with; refuse a different one, naming both."""
    stored = manifest.model
    if requested is not None and requested.revision != stored["revision"]:
        raise StoreError(
            f"store was built with model '{stored['name']}' (revision {stored['revision']}) but '{requested.name}' "
            f"(revision {requested.revision}) was given; use the same model, a new --store, or ragtune reindex"
        )
    current = requested or resolve_model(stored["name"])
    if current.revision != stored["revision"]:
        raise StoreError(
            f"store was built with model '{stored['name']}' revision {stored['revision']}, but that name now "
            f"resolves to revision {current.revision}; rebuild the store or reinstall the original model"
        )
    return current


def index_sources(
    store_dir: str | Path,
    sources: Sequence[str | Path],
    model: str | None = None,
    chunking: ChunkingConfig | None = None,
    show_progress: bool | None = None,
) -> IndexReport:
    """Index files and folders into the store at `store_dir`, creating it or updating it incrementally."""
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
        files, roots = discover_sources(sources)
        old_sources = _sources_of(store_dir, previous)
        plan = _plan(files, roots, old_sources)
        if previous is not None:
            _check_same_chunking(previous, chunking)
            if not plan.changed and not plan.deleted:
                return IndexReport(
                    files_seen=len(files), files_unchanged=plan.unchanged, files_added=0, files_modified=0,
                    files_deleted=0, skipped={}, passages_added=0, passages_removed=0,
                    passages_total=previous.counts.get("passages", 0), encoded=0, cached=0,
                    seconds=time.perf_counter() - started, generation=previous.generation,
                    dense_kind=previous.backends.get("dense_kind", ""),
                )  # fmt: skip
        embedder = Embedder(model_ref)
        config = (chunking or ChunkingConfig()).resolve(
            embedder.max_seq_length, embedder.tokenizer.num_special_tokens_to_add()
        )
        if previous is not None:
            config = ChunkingConfig(**previous.chunking)

        cache = EmbeddingCache.for_embedder(embedder)
        with cache, _building_generation(store_dir, previous, cache) as (generation, partial, table):
            leaving = plan.modified + plan.deleted + plan.migrated
            cache.adopt(table.vectors_of_sources(leaving))  # moved or edited files keep the vectors of unchanged text
            removed = sum(table.remove_source(key) for key in leaving)
            added, skipped = _ingest(plan.changed, table, Chunker(embedder.tokenizer, config), embedder, cache, show_progress)
            stats, dense_kind = _commit_and_build_indexes(table, partial, embedder.dimension)
            _publish_generation(store_dir, partial, previous, model_ref, embedder.dimension, config, dense_kind, stats)
        return IndexReport(
            files_seen=len(files), files_unchanged=plan.unchanged, files_added=plan.added,
            files_modified=len(plan.modified), files_deleted=len(plan.deleted), skipped=skipped,
            passages_added=added, passages_removed=removed, passages_total=stats["passages"], encoded=cache.misses,
            cached=cache.hits, seconds=time.perf_counter() - started, generation=generation, dense_kind=dense_kind,
            files_migrated=len(plan.migrated), encode_seconds=cache.encode_seconds,
        )  # fmt: skip


def reindex_store(store_dir: str | Path, model: str, show_progress: bool | None = None) -> IndexReport:
    """Re-embed every passage of a store with another model (e.g. a fine-tuned one) and switch to it atomically.

    Passages, chunking and the keyword index stay as they are; readers keep the old generation until the switch.
    """
    started = time.perf_counter()
    store_dir = Path(store_dir).expanduser()
    with exclusive_lock(store_dir):
        previous = read_manifest(store_dir)
        model_ref = resolve_model(model)
        embedder = Embedder(model_ref)
        cache = EmbeddingCache.for_embedder(embedder)
        with cache, _building_generation(store_dir, previous, cache) as (generation, partial, table):
            with progress_bar(show_progress) as progress:
                task = progress.add_task("re-embedding", total=table.count(), unit="passages")
                for ids, texts, _ in table.iter_for_indexing(batch=_EMBED_BATCH):
                    table.set_embeddings(ids, cache.encode(texts, embedder.encode))
                    progress.advance(task, len(ids))
                    kill_point("reindex-batch")
            stats, dense_kind = _commit_and_build_indexes(table, partial, embedder.dimension)
            config = ChunkingConfig(**previous.chunking)
            _publish_generation(store_dir, partial, previous, model_ref, embedder.dimension, config, dense_kind, stats)
        return IndexReport(
            files_seen=0, files_unchanged=stats["sources"], files_added=0, files_modified=0, files_deleted=0,
            skipped={}, passages_added=0, passages_removed=0, passages_total=stats["passages"], encoded=cache.misses,
            cached=cache.hits, seconds=time.perf_counter() - started, generation=generation, dense_kind=dense_kind,
            encode_seconds=cache.encode_seconds,
        )  # fmt: skip


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
    manifest_path(store_dir).with_name(manifest_path(store_dir).name + ".tmp").unlink(missing_ok=True)
    return current


def rebuild_generation(store_dir: Path, manifest: Manifest, fill: Callable[[PassageTable], None]) -> Manifest:
    """Publish a new generation whose passage table `fill` writes (from scratch), with indexes built from it and
    the manifest's model and chunking. The caller holds the store's lock. Returns the new manifest."""
    model_ref = ModelRef(manifest.model["name"], Path(manifest.model.get("path", "")), manifest.model["revision"])
    with _building_generation(store_dir, None, None) as (_, partial, table):
        fill(table)
        stats, dense_kind = _commit_and_build_indexes(table, partial, manifest.dimension)
        config = ChunkingConfig(**manifest.chunking)
        _publish_generation(store_dir, partial, manifest, model_ref, manifest.dimension, config, dense_kind, stats)
    return read_manifest(store_dir)


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
) -> None:
    """Flush the finished generation, rename it into place, then switch the manifest to it (the atomic step)."""
    generation = partial.name.removesuffix(".partial")
    manifest = Manifest(
        format_version=FORMAT_VERSION, generation=generation, model=model_ref.to_json(), dimension=dimension,
        chunking=chunking.to_json(), backends={"dense": "faiss", "dense_kind": dense_kind, "keyword": "tantivy"},
        counts=counts, created=previous.created if previous else _now(), updated=_now(),
        search=previous.search if previous and previous.model.get("revision") == model_ref.revision else {},
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


def _check_same_chunking(manifest: Manifest, chunking: ChunkingConfig | None) -> None:
    """An existing store keeps its chunking; asking for different settings is refused, not silently ignored."""
    if chunking is None:
        return
    stored = ChunkingConfig(**manifest.chunking)
    wanted_tokens = chunking.chunk_tokens if chunking.chunk_tokens is not None else stored.chunk_tokens
    if (wanted_tokens, chunking.overlap_tokens) != (stored.chunk_tokens, stored.overlap_tokens):
        raise StoreError(
            f"store was built with chunk_tokens={stored.chunk_tokens} overlap={stored.overlap_tokens}, not "
            f"chunk_tokens={wanted_tokens} overlap={chunking.overlap_tokens}; use the same settings or a new --store"
        )


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


def _plan(files: list[SourceFile], roots: list[str], old: dict[str, SourceState]) -> _Plan:
    plan = _Plan()
    seen: set[str] = set()
    for source in files:
        seen.add(source.key)
        state = old.get(source.key)
        if state is None and _is_legacy(old.get(source.legacy_key)):
            plan.migrated.append(source.legacy_key)  # re-added under its path key; vectors from the cache
            plan.changed.append((source, file_hash(source.path)))
            continue
        if state is not None and state.size == source.size and state.mtime_ns == source.mtime_ns:
            plan.unchanged += 1
            continue
        digest = file_hash(source.path)
        if state is not None and state.content_hash == digest:
            plan.unchanged += 1
            continue
        plan.changed.append((source, digest))
        if state is None:
            plan.added += 1
        else:
            plan.modified.append(source.key)
    plan.deleted = [key for key in old if key not in seen and _under_roots(key, roots)]
    return plan


def _is_legacy(state: SourceState | None) -> bool:
    """A source recorded by format 1 (`<root folder name>/<path>`), not by its absolute path."""
    return state is not None and not state.key.startswith("/")


def _under_roots(key: str, roots: list[str]) -> bool:
    """Whether a path key lies under one of the roots being indexed (a file root is its own key)."""
    return any(key == root or (root.endswith("/") and key.startswith(root)) for root in roots)


def _estimated_documents(source: SourceFile) -> int:
    if source.suffix != ".jsonl":
        return 1
    with source.path.open("rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b"")) or 1


def _ingest(
    changed: list[tuple[SourceFile, str]],
    table: PassageTable,
    chunker: Chunker,
    embedder: Embedder,
    cache: EmbeddingCache,
    show_progress: bool | None,
) -> tuple[int, dict[str, str]]:
    """Read, chunk, embed (through the cache) and store the changed files. Returns (passages added, skipped)."""
    skipped: dict[str, str] = {}
    added = 0
    buffer: list[Passage] = []

    def flush() -> None:
        nonlocal added
        if buffer:
            vectors = cache.encode([p.embedding_text() for p in buffer], embedder.encode)
            table.add_passages(buffer, vectors)
            added += len(buffer)
            buffer.clear()
            kill_point("index-batch")

    with progress_bar(show_progress) as progress:
        task = progress.add_task(
            "indexing", total=sum(_estimated_documents(s) for s, _ in changed), unit="docs"
        )
        for source, digest in changed:
            documents = passages = 0
            try:
                for document in read_documents(source):
                    for passage in chunker.chunk(document):
                        buffer.append(passage)
                        passages += 1
                        if len(buffer) >= _EMBED_BATCH:
                            flush()
                    documents += 1
                    progress.advance(task)
            except SkippedFile as skip:
                skipped[source.key] = skip.reason
            flush()
            if source.key not in skipped:
                state = SourceState(source.key, source.root_key, digest, source.size, source.mtime_ns)
                table.record_source(state, documents, passages)
    return added, skipped


def _build_indexes(table: PassageTable, directory: Path, dimension: int, size: int) -> str:
    """Build the dense and keyword indexes from the passage table (two passes, so memory holds no texts)."""
    dense = FaissDenseIndex.create(dimension, size, EXACT_THRESHOLD)
    for ids, _, vectors in table.iter_for_indexing():
        dense.add(ids, vectors)
    dense.save(directory / DENSE_FILE)
    build_tantivy_index(directory / KEYWORD_DIR, ((ids, texts) for ids, texts, _ in table.iter_for_indexing()))
    return dense.kind


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


class Store:
    """A store opened for reading: passages, dense and keyword indexes, and its embedding model (loaded lazily)."""

    def __init__(self, directory: Path, manifest: Manifest) -> None:
        self.directory = directory
        self.manifest = manifest
        generation = directory / manifest.generation
        if not generation.is_dir():
            raise StoreError(
                f"store '{directory}' is corrupt: its manifest names '{manifest.generation}', which is missing; "
                f"run: ragtune check --store {directory} --repair"
            )
        self.passages = PassageTable(generation / PASSAGES_FILE, read_only=True)
        self.dense = FaissDenseIndex.load(generation / DENSE_FILE)
        self.keyword = TantivyKeywordIndex(generation / KEYWORD_DIR)
        if len(self.dense) != self.passages.count() or len(self.keyword) != self.passages.count():
            raise StoreError(
                f"store '{directory}' is corrupt: {self.passages.count()} passages but {len(self.dense)} vectors "
                f"and {len(self.keyword)} keyword entries; run: ragtune check --store {directory} --repair"
            )
        self._embedder: Embedder | None = None

    @classmethod
    def open(cls, directory: str | Path) -> Store:
        path = Path(directory).expanduser()
        return cls(path, read_manifest(path))

    def close(self) -> None:
        self.passages.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def embedder(self) -> Embedder:
        """The store's embedding model, for queries; loading it is refused if its weights differ from the ones
        indexed."""
        if self._embedder is None:
            self._embedder = Embedder(check_model(self.manifest, None), purpose="queries")
        return self._embedder

    def info(self) -> dict[str, Any]:
        generation = self.directory / self.manifest.generation
        size = sum(p.stat().st_size for p in generation.rglob("*") if p.is_file())
        return {
            "store": str(self.directory),
            "generation": self.manifest.generation,
            "model": self.manifest.model,
            "dimension": self.manifest.dimension,
            "chunking": self.manifest.chunking,
            "backends": self.manifest.backends,
            "counts": self.passages.stats(),
            "size_bytes": {
                "passages": (generation / PASSAGES_FILE).stat().st_size,
                "dense": (generation / DENSE_FILE).stat().st_size,
                "keyword": sum(p.stat().st_size for p in (generation / KEYWORD_DIR).rglob("*") if p.is_file()),
                "total": size,
            },
            "created": self.manifest.created,
            "updated": self.manifest.updated,
            "search": self.manifest.search,
        }
