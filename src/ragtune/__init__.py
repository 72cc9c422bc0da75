"""ragtune: domain-tuned retrieval-augmented generation.

The public API; the `ragtune` command is a thin shell over these.
"""

from ragtune.corpus import ChunkingConfig
from ragtune.errors import RagtuneError
from ragtune.retrieval import Fusion, Retriever, SearchMode, parse_filters
from ragtune.store import IndexReport, Store, StoreReader, index_sources, open_store
from ragtune.types import Document, Hit, Passage

__version__ = "0.1.0"

__all__ = [
    "ChunkingConfig",
    "Document",
    "Fusion",
    "Hit",
    "IndexReport",
    "Passage",
    "RagtuneError",
    "Retriever",
    "SearchMode",
    "Store",
    "StoreReader",
    "index_sources",
    "open_store",
    "parse_filters",
]
