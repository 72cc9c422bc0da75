"""Reading sources into documents and cutting documents into passages."""

from ragtune.corpus.chunking import Chunker, ChunkingConfig
from ragtune.corpus.readers import SkippedFile, SourceFile, discover_sources, read_documents

__all__ = ["Chunker", "ChunkingConfig", "SkippedFile", "SourceFile", "discover_sources", "read_documents"]
