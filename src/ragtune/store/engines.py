"""Pick the store engine from what `--store` names: a directory (the embedded engine) or a postgresql:// address.

No caller names an engine class: they open, index, re-embed and record settings through these functions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ragtune.corpus import ChunkingConfig
from ragtune.ray_encoding import RayConfig
from ragtune.store import store as embedded
from ragtune.store.embedded_reader import Store
from ragtune.fsutil import exclusive_lock
from ragtune.store.ingest import IndexReport
from ragtune.store.manifest import Manifest
from ragtune.store.protocol import StoreReader

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_address(address: str | Path) -> bool:
    return isinstance(address, str) and address.startswith(POSTGRES_SCHEMES)


def named_store(address: str, name: str) -> str:
    """The PostgreSQL `address` pointed at the store (schema) `name` instead of the one it names."""
    parts = urlsplit(address)
    query = [(key, value) for key, value in parse_qsl(parts.query, keep_blank_values=True) if key != "store"]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode([*query, ("store", name)]), ""))


def open_store(address: str | Path) -> StoreReader:
    """Open a store for reading: `DIR` (embedded) or `postgresql://USER@HOST:PORT/DB[?store=NAME]`."""
    if is_postgres_address(address):
        from ragtune.store.postgres import PostgresStore

        return PostgresStore.open(str(address))
    return Store.open(address)


@contextmanager
def write_lock(address: str | Path) -> Iterator[None]:
    """Hold the store's writer lock (what every update takes): another writer is refused until the block ends."""
    if is_postgres_address(address):
        from ragtune.store import postgres

        with postgres.writer_connection(postgres.PostgresAddress.parse(str(address))):
            yield
        return
    with exclusive_lock(Path(address).expanduser()):
        yield


def index_sources(
    address: str | Path,
    sources: Sequence[str | Path],
    model: str | None = None,
    chunking: ChunkingConfig | None = None,
    show_progress: bool | None = None,
    ray: RayConfig | None = None,
) -> IndexReport:
    """Index files and folders into the store at `address`, creating it or updating only what changed. With `ray`,
    passages are encoded on that Ray cluster (reading, chunking and writing stay here)."""
    if is_postgres_address(address):
        from ragtune.store import postgres

        return postgres.index_sources(str(address), sources, model, chunking, show_progress, ray)
    return embedded.index_sources(address, sources, model, chunking, show_progress, ray)


def reindex_store(
    address: str | Path, model: str, show_progress: bool | None = None, ray: RayConfig | None = None
) -> IndexReport:
    """Re-embed every passage with another model (e.g. a fine-tuned one); readers see the old vectors until the end."""
    if is_postgres_address(address):
        from ragtune.store import postgres

        return postgres.reindex_store(str(address), model, show_progress, ray)
    return embedded.reindex_store(address, model, show_progress, ray)


def record_search_settings(address: str | Path, settings: dict[str, Any]) -> Manifest:
    """Record the store's default search settings (e.g. the system the quickstart chose) in its manifest."""
    if is_postgres_address(address):
        from ragtune.store import postgres

        return postgres.record_search_settings(str(address), settings)
    return embedded.record_search_settings(address, settings)
