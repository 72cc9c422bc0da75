"""The store manifest: what a store was built with, and which generation of its files is current."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ragtune.errors import StoreError
from ragtune.store.fsutil import atomic_write_text

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"


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
            f"store '{store_dir}' has a corrupt {MANIFEST_NAME} ({exc}); rebuild it into a new directory with ragtune index"
        ) from exc
    if manifest.format_version != FORMAT_VERSION:
        raise StoreError(
            f"store '{store_dir}' has format version {manifest.format_version}; this ragtune reads version "
            f"{FORMAT_VERSION}: rebuild it with ragtune index"
        )
    return manifest


def write_manifest(store_dir: Path, manifest: Manifest) -> None:
    atomic_write_text(manifest_path(store_dir), json.dumps(manifest.to_json(), indent=2) + "\n")
