"""The on-disk collection: manifest, passage table, dense index, keyword index."""

from ragtune.store.store import IndexReport, Store, index_sources, record_search_settings, reindex_store

__all__ = ["IndexReport", "Store", "index_sources", "record_search_settings", "reindex_store"]
