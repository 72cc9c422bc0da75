"""Stores: one read protocol (`StoreReader`), engines chosen by address (a directory or postgresql://)."""

from ragtune.store.engines import (
    index_sources,
    is_postgres_address,
    named_store,
    open_store,
    record_search_settings,
    reindex_store,
)
from ragtune.store.ingest import IndexReport
from ragtune.store.protocol import StoreReader, query_embedder
from ragtune.store.embedded_reader import Store

__all__ = [
    "IndexReport",
    "Store",
    "StoreReader",
    "index_sources",
    "is_postgres_address",
    "named_store",
    "open_store",
    "query_embedder",
    "record_search_settings",
    "reindex_store",
]
