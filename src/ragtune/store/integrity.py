"""Checking a store's files against each other, and repairing what can be rebuilt from what is intact.

`check_store` reads: the manifest's fields, SQLite's own check of the passage table (and of the user's embedding cache),
the dense index's dimension, the dense and keyword indexes' counts against the table, and leftovers of interrupted
runs. `repair_store` restores a damaged manifest from the copy each generation holds, and rebuilds a damaged generation
from the readable, whole sources of its passage table, their vectors from the embedding cache (encoded again where the
cache lacks them); the next `ragtune index` re-adds the sources left out.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragtune.embedding_cache import cache_problems, remove_cache
from ragtune.errors import NotAStore, StoreBusy, StoreError
from ragtune.paths import embedding_cache_path
from ragtune.store.dense import FaissDenseIndex
from ragtune.fsutil import exclusive_lock
from ragtune.store.keyword import TantivyKeywordIndex
from ragtune.store.manifest import (
    GENERATION_NAME, Manifest, manifest_problem, read_manifest, store_missing, write_manifest,
)  # fmt: skip
from ragtune.store.passages import PassageTable, salvage_passages
from ragtune.store.layout import DENSE_FILE, KEYWORD_DIR, LEGACY_CACHE_FILE, PASSAGES_FILE
from ragtune.store.store import rebuild_generation


@dataclass
class CheckReport:
    """What a check found (`problems`: the store cannot be trusted) and did (`actions`, by a repair)."""

    store: str
    generation: str | None = None
    problems: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"store": self.store, "generation": self.generation, "healthy": self.healthy,
                "problems": self.problems, "leftovers": self.leftovers, "actions": self.actions}  # fmt: skip


def check_store(store_dir: str | Path, quick: bool = False) -> CheckReport:
    """Check a store without changing it. `quick` uses SQLite's quick_check (what `ragtune info` runs)."""
    store_dir = Path(store_dir).expanduser()
    report = CheckReport(str(store_dir))
    try:
        manifest = read_manifest(store_dir)
    except (StoreBusy, NotAStore):
        raise  # being built, or no store at all: nothing to check or repair
    except StoreError as exc:
        report.problems.append(str(exc))
        return report
    report.generation = manifest.generation
    report.problems += _generation_problems(store_dir / manifest.generation, manifest, quick)
    if not quick:
        report.problems += [f"embedding cache: {p}" for p in cache_problems(embedding_cache_path())]
    report.leftovers = _leftovers(store_dir, manifest)
    return report


def repair_store(store_dir: str | Path) -> CheckReport:
    """Repair what `check_store` finds, holding the store's write lock; a healthy store is left as it is (only
    leftovers of interrupted runs are removed)."""
    store_dir = Path(store_dir).expanduser()
    if not store_dir.exists():  # the lock would make the folder: refuse first, as `check` does
        raise store_missing(store_dir)
    with exclusive_lock(store_dir):
        report = check_store(store_dir)
        if report.generation is None:
            manifest = _restore_manifest(store_dir)
            report.actions.append(f"restored manifest.json from {manifest.generation}'s copy")
            report = _recheck(store_dir, report.actions)
        if any(problem.startswith("embedding cache:") for problem in report.problems):
            remove_cache(embedding_cache_path())
            report.actions.append("removed the damaged embedding cache (vectors are encoded again when needed)")
            report = _recheck(store_dir, report.actions)
        if report.problems and not (store_dir / read_manifest(store_dir).generation).is_dir():
            manifest = _restore_manifest(store_dir)
            report.actions.append(f"pointed the manifest at {manifest.generation}, the newest generation on disk")
            report = _recheck(store_dir, report.actions)
        if report.problems:
            manifest = read_manifest(store_dir)
            table_path = store_dir / manifest.generation / PASSAGES_FILE
            counts: list[int] = []

            def fill(table: PassageTable) -> None:
                counts.extend(salvage_passages(table_path, table))

            new = rebuild_generation(store_dir, manifest, fill)
            kept, left_out, sources = counts
            report.actions.append(
                f"rebuilt {manifest.generation} as {new.generation}: {kept} passages kept"
                + (f"; {left_out} passages of {sources} damaged sources left out: run ragtune index on their folders "
                   "again to add them back" if sources or left_out else "")
            )  # fmt: skip
            report = _recheck(store_dir, report.actions)
        for leftover in report.leftovers:
            if leftover == LEGACY_CACHE_FILE:
                remove_cache(store_dir / LEGACY_CACHE_FILE)
            shutil.rmtree(store_dir / leftover, ignore_errors=True)
            report.actions.append(f"removed leftover {leftover}")
        report.leftovers = []
        return report


def _recheck(store_dir: Path, actions: list[str]) -> CheckReport:
    report = check_store(store_dir)
    report.actions = actions
    return report


def _generation_problems(generation: Path, manifest: Manifest, quick: bool) -> list[str]:
    if not generation.is_dir():
        return [f"the manifest names {manifest.generation}, which is missing"]
    try:
        table = PassageTable(generation / PASSAGES_FILE, read_only=True)
    except StoreError as exc:
        return [str(exc)]
    try:
        problems = [f"passage table: {p}" for p in table.integrity_problems(quick=quick)]
        if problems:
            return problems
        counts = table.stats()
    except StoreError as exc:
        return [str(exc)]
    finally:
        table.close()
    if manifest.counts and manifest.counts != counts:
        problems.append(f"the manifest counts {manifest.counts}, the passage table holds {counts}")
    for name, opener in (("dense", lambda: FaissDenseIndex.load(generation / DENSE_FILE, memory_map=True)),
                         ("keyword", lambda: TantivyKeywordIndex(generation / KEYWORD_DIR))):  # fmt: skip
        try:
            index = opener()
        except StoreError as exc:
            problems.append(str(exc))
            continue
        size = len(index)
        if isinstance(index, FaissDenseIndex) and index.dimension != manifest.dimension:
            problems.append(
                f"the dense index holds {index.dimension}-dimensional vectors, the manifest says {manifest.dimension}"
            )
        if size != counts["passages"]:
            problems.append(f"the {name} index holds {size} entries for {counts['passages']} passages")
    return problems


def _leftovers(store_dir: Path, manifest: Manifest) -> list[str]:
    """Folders of interrupted runs: unfinished `.partial` builds and generations no manifest points to, except the
    one before the current (kept for readers that still have it open), and a format-1 store's own embedding cache
    (the user's shared cache replaced it)."""
    numbers = sorted(p.name for p in store_dir.glob("gen-*") if GENERATION_NAME.match(p.name))
    keep = {manifest.generation}
    older = [name for name in numbers if name < manifest.generation]
    if older:
        keep.add(older[-1])
    partial = [p.name for p in store_dir.glob("gen-*.partial")]
    legacy = [LEGACY_CACHE_FILE] if (store_dir / LEGACY_CACHE_FILE).exists() else []
    return sorted(partial + [name for name in numbers if name not in keep]) + legacy


def _restore_manifest(store_dir: Path) -> Manifest:
    """Put back the newest generation's own copy of the manifest."""
    for generation in sorted((p for p in store_dir.glob("gen-*") if GENERATION_NAME.match(p.name)), reverse=True):
        try:
            data = json.loads((generation / "manifest.json").read_text(encoding="utf-8"))
            manifest = Manifest(**data)
        except (OSError, ValueError, TypeError):
            continue
        if manifest.generation == generation.name and manifest_problem(manifest) is None:
            write_manifest(store_dir, manifest)
            return manifest
    raise StoreError(
        f"cannot repair '{store_dir}': no generation holds a readable copy of the manifest (stores written before "
        "ragtune kept one); rebuild it with ragtune index into a new directory"
    )
