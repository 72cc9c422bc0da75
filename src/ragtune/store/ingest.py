"""The ingest pipeline every store engine shares: which sources changed, and read → chunk → encode → write.

It knows nothing of SQLite or SQL: an engine hands it a `PassageSink` (where passages and source records go) and the
sources it already holds; vectors come through the user's embedding cache, so moving a corpus between engines or
re-running an interrupted update encodes nothing twice.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ragtune.corpus import Chunker, ChunkingConfig, SkippedFile, SourceFile, read_documents
from ragtune.corpus.readers import file_hash
from ragtune.embedding import TEXTS_PER_CALL, PassageEncoder
from ragtune.embedding_cache import EmbeddingCache
from ragtune.errors import StoreError
from ragtune.faults import kill_point
from ragtune.models import ModelRef, resolve_model
from ragtune.progress import progress_bar
from ragtune.store.manifest import Manifest
from ragtune.types import Passage

EMBED_BATCH = TEXTS_PER_CALL
VANISHED = "deleted or moved while it was being indexed"


@dataclass(frozen=True)
class SourceState:
    """What the store knows about a source file, to decide whether it changed."""

    key: str
    root_key: str
    content_hash: str
    size: int
    mtime_ns: int


class PassageSink(Protocol):
    """Where ingested passages go: an engine's passage table inside its open update."""

    def add_passages(self, passages: Sequence[Passage], embeddings: np.ndarray) -> None: ...

    def record_source(self, state: SourceState, documents: int, passages: int) -> None:
        """Called once a source's passages are all added."""
        ...

    def checkpoint(self) -> None:
        """Every added passage belongs to a recorded source: an engine may commit here."""
        ...

    def abandon_source(self, key: str) -> None:
        """Forget the passages added for a source that turned out unreadable (no record is written for it)."""
        ...


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
    workers: list[dict[str, Any]] = field(default_factory=list)
    """With a Ray cluster: passages, seconds and passages/s per encoding actor."""
    files_not_read: dict[str, int] = field(default_factory=dict)
    """Files under the folders given that are of no type ragtune reads, by suffix (`""`: no extension)."""

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()

    @classmethod
    def nothing_changed(
        cls, files_seen: int, plan: ChangePlan, manifest: Manifest, started: float, not_read: dict[str, int]
    ) -> IndexReport:
        return cls(
            files_seen=files_seen, files_unchanged=plan.unchanged, files_added=0, files_modified=0, files_deleted=0,
            skipped=plan.skipped_reasons(), passages_added=0, passages_removed=0,
            passages_total=manifest.counts.get("passages", 0), encoded=0, cached=0,
            seconds=time.perf_counter() - started, generation=manifest.generation,
            dense_kind=manifest.backends.get("dense_kind", ""), files_not_read=not_read,
        )  # fmt: skip

    @classmethod
    def of_update(
        cls, files_seen: int, plan: ChangePlan, outcome: IngestOutcome, stats: dict[str, int], cache: EmbeddingCache,
        started: float, generation: str, dense_kind: str, workers: list[dict[str, Any]] | None = None,
        not_read: dict[str, int] | None = None,
    ) -> IndexReport:  # fmt: skip
        new_but_skipped = [key for key in outcome.skipped if key not in plan.modified]
        return cls(
            files_seen=files_seen, files_unchanged=plan.unchanged, files_added=max(plan.added - len(new_but_skipped), 0),
            files_modified=len([key for key in plan.modified if key not in outcome.skipped]),
            files_deleted=len(plan.deleted), skipped=plan.skipped_reasons(outcome.skipped),
            passages_added=outcome.added, passages_removed=outcome.removed, passages_total=stats["passages"],
            encoded=cache.misses, cached=cache.hits, seconds=time.perf_counter() - started, generation=generation,
            dense_kind=dense_kind, files_migrated=len(plan.migrated), encode_seconds=cache.encode_seconds,
            workers=workers or [], files_not_read=not_read or {},
        )  # fmt: skip

    @classmethod
    def of_reindex(
        cls, stats: dict[str, int], cache: EmbeddingCache, started: float, generation: str, dense_kind: str,
        workers: list[dict[str, Any]] | None = None,
    ) -> IndexReport:
        return cls(
            files_seen=0, files_unchanged=stats["sources"], files_added=0, files_modified=0, files_deleted=0,
            skipped={}, passages_added=0, passages_removed=0, passages_total=stats["passages"], encoded=cache.misses,
            cached=cache.hits, seconds=time.perf_counter() - started, generation=generation, dense_kind=dense_kind,
            encode_seconds=cache.encode_seconds, workers=workers or [],
        )  # fmt: skip


@dataclass(frozen=True)
class IngestOutcome:
    """What `ingest_sources` and the removals before it did."""

    added: int
    removed: int
    skipped: dict[str, str]


@dataclass
class ChangePlan:
    """Which discovered files must be (re)ingested and which recorded sources leave the store."""

    changed: list[tuple[SourceFile, str]] = field(default_factory=list)  # file, content hash
    added: int = 0
    modified: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    migrated: list[str] = field(default_factory=list)  # format-1 keys replaced by the same file's path key
    unchanged: int = 0
    still_skipped: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Files skipped by an earlier run and unchanged since (the manifest's records): not read again."""
    roots: list[str] = field(default_factory=list)

    def skipped_after(self, before: dict[str, dict[str, Any]], skipped_now: dict[str, str]) -> dict[str, dict[str, Any]]:
        """The manifest's record of unreadable files once this plan ran: other folders' as they were, this run's
        folders' as found now."""
        sources = {source.key: source for source, _ in self.changed}
        return (
            {key: record for key, record in before.items() if not _under_roots(key, self.roots)}
            | self.still_skipped
            | {key: {"size": sources[key].size, "mtime_ns": sources[key].mtime_ns, "reason": reason}
               for key, reason in skipped_now.items()}
        )  # fmt: skip

    def skipped_reasons(self, skipped_now: dict[str, str] | None = None) -> dict[str, str]:
        """Every unreadable file of this run's folders and why: skipped now or unchanged since it was skipped."""
        return {key: record["reason"] for key, record in self.still_skipped.items()} | (skipped_now or {})

    @property
    def leaving(self) -> list[str]:
        """Source keys whose passages are removed before the changed files are ingested."""
        return self.modified + self.deleted + self.migrated

    @property
    def is_empty(self) -> bool:
        return not self.changed and not self.deleted


def check_model(manifest: Manifest, requested: ModelRef | None) -> ModelRef:
    """The model a store must be used with; refuse a different one, naming both."""
    stored = manifest.model
    if requested is not None and requested.revision != stored["revision"]:
        raise StoreError(
            f"store was built with model '{stored['name']}' (revision {stored['revision']}) but '{requested.name}' "
            f"(revision {requested.revision}) was given; use the same model, a new --store, or ragtune reindex"
        )
    if requested is None and stored["name"] == stored.get("path") and not Path(stored["name"]).is_dir():
        raise StoreError(
            f"the store's model '{stored['name']}' (revision {stored['revision']}) is no longer there: put it back, "
            "or keep the store and the model in one folder and move that folder whole (the store finds a model at "
            "the same place relative to itself); or encode the store again with another model: ragtune reindex "
            "--store STORE --model DIR"
        )
    current = requested or resolve_model(stored["name"])
    if current.revision != stored["revision"]:
        raise StoreError(
            f"store was built with model '{stored['name']}' revision {stored['revision']}, but that name now "
            f"resolves to revision {current.revision}; rebuild the store or reinstall the original model"
        )
    return current


def check_same_chunking(manifest: Manifest, chunking: ChunkingConfig | None) -> None:
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


def plan_changes(
    files: list[SourceFile], roots: list[str], old: dict[str, SourceState],
    skipped_before: dict[str, dict[str, Any]] | None = None,
) -> ChangePlan:  # fmt: skip
    """Compare discovered files with the recorded sources: size and mtime first, the content hash when they differ.
    A file an earlier run skipped as unreadable (`skipped_before`, the manifest's record) is left out while its size
    and mtime are unchanged."""
    plan = ChangePlan(roots=roots)
    seen: set[str] = set()
    for source in files:
        seen.add(source.key)
        state = old.get(source.key)
        if state is None and _is_legacy(old.get(source.legacy_key)):
            digest = _hash_if_still_there(source)
            if digest is not None:
                plan.migrated.append(source.legacy_key)  # re-added under its path key; vectors from the cache
                plan.changed.append((source, digest))
            continue
        skipped = (skipped_before or {}).get(source.key)
        if state is None and skipped and (skipped["size"], skipped["mtime_ns"]) == (source.size, source.mtime_ns):
            plan.still_skipped[source.key] = skipped
            continue
        if state is not None and state.size == source.size and state.mtime_ns == source.mtime_ns:
            plan.unchanged += 1
            continue
        digest = _hash_if_still_there(source)
        if digest is None:  # deleted or moved since the folder was listed: as if it had not been found
            seen.discard(source.key)
            continue
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


def _hash_if_still_there(source: SourceFile) -> str | None:
    try:
        return file_hash(source.path)
    except FileNotFoundError:
        return None


def _is_legacy(state: SourceState | None) -> bool:
    """A source recorded by format 1 (`<root folder name>/<path>`), not by its absolute path."""
    return state is not None and not state.key.startswith("/")


def _under_roots(key: str, roots: list[str]) -> bool:
    """Whether a path key lies under one of the roots being indexed (a file root is its own key)."""
    return any(key == root or (root.endswith("/") and key.startswith(root)) for root in roots)


def _estimated_documents(source: SourceFile) -> int:
    if source.suffix != ".jsonl":
        return 1
    try:
        with source.path.open("rb") as handle:
            return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b"")) or 1
    except FileNotFoundError:  # gone since it was listed: reported when it is read
        return 1


def ingest_sources(
    changed: list[tuple[SourceFile, str]],
    sink: PassageSink,
    chunker: Chunker,
    encoder: PassageEncoder,
    cache: EmbeddingCache,
    show_progress: bool | None,
) -> tuple[int, dict[str, str]]:
    """Read, chunk, embed (through the cache) and write the changed files. Returns (passages added, skipped).

    Passages are encoded `encoder.texts_per_call` at a time across files (a folder of small files is not encoded a
    file at a time; a cluster gets a window large enough to keep its workers busy). A file's record is written once
    all its passages are, and the sink is given a checkpoint only at a file boundary with nothing buffered (about
    every `texts_per_call` passages): whatever it commits there is whole files."""
    per_call = encoder.texts_per_call
    skipped: dict[str, str] = {}
    buffer: list[Passage] = []
    finished: list[tuple[SourceState, int, int]] = []  # files read whole since the last checkpoint
    written = since_checkpoint = 0

    def flush() -> None:
        nonlocal written, since_checkpoint
        if buffer:
            vectors = cache.encode_blocks([p.embedding_text() for p in buffer], encoder.encode_blocks)
            sink.add_passages(buffer, vectors)
            written += len(buffer)
            since_checkpoint += len(buffer)
            buffer.clear()
            kill_point("index-batch")

    def checkpoint() -> None:
        nonlocal since_checkpoint
        flush()
        for state, documents, passages in finished:
            sink.record_source(state, documents, passages)
        finished.clear()
        sink.checkpoint()
        since_checkpoint = 0

    with progress_bar(show_progress) as progress:
        task = progress.add_task("indexing", total=sum(_estimated_documents(s) for s, _ in changed), unit="docs")
        for source, digest in changed:
            documents = passages = 0
            try:
                for document in read_documents(source):
                    for passage in chunker.chunk(document):
                        buffer.append(passage)
                        passages += 1
                        if len(buffer) >= per_call:
                            flush()
                    documents += 1
                    progress.advance(task)
            except (SkippedFile, FileNotFoundError) as problem:
                if isinstance(problem, FileNotFoundError) and source.path.exists():
                    raise  # another file is missing, not this source
                skipped[source.key] = problem.reason if isinstance(problem, SkippedFile) else VANISHED
                buffer[:] = [p for p in buffer if p.source != source.key]
                sink.abandon_source(source.key)
                continue
            finished.append((SourceState(source.key, source.root_key, digest, source.size, source.mtime_ns),
                             documents, passages))  # fmt: skip
            if since_checkpoint + len(buffer) >= per_call:
                checkpoint()
        checkpoint()
    return written, skipped
