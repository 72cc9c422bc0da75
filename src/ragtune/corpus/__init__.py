"""Reading sources into documents and cutting documents into passages."""

from ragtune.corpus.chunking import Chunker, ChunkingConfig
from ragtune.corpus.readers import (
    SUPPORTED_SUFFIXES,
    Discovered,
    SkippedFile,
    SourceFile,
    discover_sources,
    not_read_text,
    read_documents,
)

__all__ = [
    "SUPPORTED_SUFFIXES", "Chunker", "ChunkingConfig", "Discovered", "SkippedFile", "SourceFile", "discover_sources",
    "not_read_text", "read_documents",
]  # fmt: skip
