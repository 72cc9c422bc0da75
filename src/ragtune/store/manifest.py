"""The store manifest: what a store was built with, and which generation of its files is current."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ragtune.errors import StoreError
from ragtune.fsutil import atomic_write_text

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


def read_manifest(store_dir: Path) -> Manifest:
    path = manifest_path(store_dir)
    if not store_dir.exists():
        raise StoreError(f"store '{store_dir}' does not exist; create it with: ragtune index SOURCE --store {store_dir}")
    if not path.exists():
        if any(store_dir.glob("gen-*")):
            raise StoreError(
                f"store '{store_dir}' is incomplete (no {MANIFEST_NAME}: the first index run was interrupted); "
                f"re-run: ragtune index SOURCE --store {store_dir}"
            )
        raise StoreError(f"'{store_dir}' is not a ragtune store (no {MANIFEST_NAME})")
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
    return manifest


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
