"""File names inside an embedded store's generation folder (shared by its writer, reader and checker)."""

PASSAGES_FILE = "passages.sqlite"
DENSE_FILE = "dense.faiss"
KEYWORD_DIR = "keyword"
LEGACY_CACHE_FILE = "embeddings.sqlite"
"""Where format-1 stores kept their own embedding cache; the shared cache (`ragtune.embedding_cache`) replaced it."""
