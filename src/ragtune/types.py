"""The plain data passed between stages. Every stage takes and returns these, nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def embedding_text(title: str, text: str) -> str:
    """What the embedder, the keyword index and the reranker see of a passage: title and body, as BEIR encodes
    documents."""
    return f"{title} {text}".strip() if title else text


@dataclass(frozen=True)
class Document:
    """One document read from a source.

    `text` holds the content; a very large plain-text file instead names `stream_path`, and the chunker
    reads it paragraph by paragraph so memory stays bounded.
    """

    id: str
    title: str
    text: str
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)
    stream_path: Path | None = None


@dataclass(frozen=True)
class Passage:
    """A chunk of a document that fits the embedding model's window. `id` is `<doc id>#<n>`."""

    id: str
    doc_id: str
    ordinal: int
    title: str
    text: str
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def embedding_text(self) -> str:
        return embedding_text(self.title, self.text)


@dataclass(frozen=True)
class Hit:
    """A retrieved passage with its score (higher is better; the scale depends on the mode)."""

    id: str
    doc_id: str
    score: float
    text: str
    title: str
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "doc_id": self.doc_id,
            "score": self.score,
            "title": self.title,
            "source": self.source,
            "text": self.text,
            "metadata": self.metadata,
        }

    def embedding_text(self) -> str:
        return embedding_text(self.title, self.text)
