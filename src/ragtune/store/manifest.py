"""The store manifest: what a store was built with, and which generation of its files is current."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ragtune.errors import NotAStore, StoreBusy, StoreError
from ragtune.fsutil import atomic_write_text, is_locked

FORMAT_VERSION = 2
"""2: the passage table holds no vectors (the dense index keeps them). Version 1 stores are read as they are; their
first update drops the table's copy of the vectors."""
READABLE_FORMATS = (1, 2)
MANIFEST_NAME = "manifest.json"
GENERATION_NAME = re.compile(r"^gen-\d{6}$")
"""A generation is a folder directly inside the store; a manifest naming anything else is refused."""


@dataclass(frozen=True)
class Manifest:
    format_version: int
    generation: str
    model: dict[str, str]
    dimension: int
    chunking: dict[str, Any]
    backends: dict[str, str]
    counts: dict[str, int] = field(default_factory=dict)
    created: str = ""
    updated: str = ""
    search: dict[str, Any] = field(default_factory=dict)
    """Default search settings chosen for this store (mode, fusion, alpha, rrf_k, and why); empty = the defaults."""
    skipped: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Files the store could not read, by key: {"size", "mtime_ns", "reason"}. While such a file is unchanged the next
    runs report it again without reading it, and build no new generation for it."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def manifest_path(store_dir: Path) -> Path:
    return store_dir / MANIFEST_NAME


def store_missing(store_dir: Path) -> NotAStore:
    return NotAStore(f"store '{store_dir}' does not exist; create it with: ragtune index SOURCE --store {store_dir}")


def read_manifest(store_dir: Path) -> Manifest:
    path = manifest_path(store_dir)
    if not store_dir.exists():
        raise store_missing(store_dir)
    if not store_dir.is_dir():
        raise NotAStore(f"store '{store_dir}' is a file, not a store folder: check the --store path")
    if not path.exists():
        if is_locked(store_dir):
            raise StoreBusy(f"store '{store_dir}' is being built by another process (its first index run); wait for "
                            "it to finish")  # fmt: skip
        if any(store_dir.glob("gen-*")):
            raise StoreError(
                f"store '{store_dir}' is incomplete (no {MANIFEST_NAME}: the first index run was interrupted); "
                f"re-run: ragtune index SOURCE --store {store_dir}"
            )
        raise NotAStore(f"'{store_dir}' is not a ragtune store (no {MANIFEST_NAME})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        manifest = Manifest(**data)
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
        raise StoreError(
            f"store '{store_dir}' has a corrupt {MANIFEST_NAME} ({exc}); run: ragtune check --store {store_dir} --repair"
        ) from exc
    if manifest.format_version not in READABLE_FORMATS:
        raise StoreError(
            f"store '{store_dir}' has format version {manifest.format_version}; this ragtune reads versions "
            f"{', '.join(map(str, READABLE_FORMATS))}: rebuild it with ragtune index"
        )
    problem = manifest_problem(manifest)
    if problem:
        raise StoreError(
            f"store '{store_dir}' has a corrupt {MANIFEST_NAME} ({problem}); run: ragtune check --store {store_dir} --repair"
        )
    return _model_moved_with_the_store(store_dir, manifest)


MODEL_PATH_FROM_STORE = "path_from_store"
"""In `Manifest.model`, for a model given as a directory: its path relative to the store's folder."""


def model_record(model: dict[str, str], store_dir: Path) -> dict[str, str]:
    """The manifest's record of a model (`ModelRef.to_json()`): a directory model also by its path from the store, so
    that a store moved together with its model (a quickstart run's folder, say) still finds it."""
    if model["name"] != model["path"]:  # a packaged model, found by its short name
        return model
    return {**model, MODEL_PATH_FROM_STORE: os.path.relpath(model["path"], store_dir.resolve())}


def _model_moved_with_the_store(store_dir: Path, manifest: Manifest) -> Manifest:
    """Where a directory model is no longer at its recorded path but is at the same place relative to the store, the
    manifest as read names it there (its revision is still checked before use)."""
    model = manifest.model
    relative = model.get(MODEL_PATH_FROM_STORE)
    if not relative or Path(model["path"]).is_dir():
        return manifest
    moved = (store_dir.resolve() / relative).resolve()
    if not moved.is_dir():
        return manifest
    return replace(manifest, model={**model, "name": str(moved), "path": str(moved)})


def manifest_problem(manifest: Manifest) -> str | None:
    """What is wrong with a parsed manifest's fields, or None."""
    if not isinstance(manifest.generation, str) or not GENERATION_NAME.match(manifest.generation):
        return f"generation {manifest.generation!r} is not a generation folder of the store (gen-NNNNNN)"
    model = manifest.model
    if not isinstance(model, dict) or not all(isinstance(model.get(key), str) for key in ("name", "revision")):
        return "model lacks its name or revision"
    if not isinstance(manifest.dimension, int) or manifest.dimension < 1:
        return f"dimension {manifest.dimension!r} is not a positive integer"
    chunking = manifest.chunking
    if not isinstance(chunking, dict) or not {"chunk_tokens", "overlap_tokens"} <= set(chunking):
        return "chunking lacks chunk_tokens or overlap_tokens"
    if not isinstance(manifest.backends, dict) or not isinstance(manifest.counts, dict):
        return "backends or counts is not an object"
    if not isinstance(manifest.search, dict):
        return "search is not an object"
    return None


def write_manifest(store_dir: Path, manifest: Manifest) -> None:
    atomic_write_text(manifest_path(store_dir), json.dumps(manifest.to_json(), indent=2) + "\n")
