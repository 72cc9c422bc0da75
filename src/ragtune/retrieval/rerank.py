"""Cross-encoder reranking of the top candidates.

Depth trades speed for quality: every reranked candidate costs one cross-encoder forward pass over query + passage.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from ragtune.errors import RagtuneError
from ragtune.models import quiet_transformers
from ragtune.types import Hit


def _is_cross_encoder(path: Path) -> bool:
    config = path / "config.json"
    if not config.is_file():
        return False
    data = json.loads(config.read_text(encoding="utf-8"))
    architectures = data.get("architectures") or []
    return any(a.endswith("ForSequenceClassification") for a in architectures)


class Reranker:
    """A trained cross-encoder directory (`ragtune train-reranker` writes one)."""

    def __init__(self, path: str | Path, batch_size: int = 32) -> None:
        self.path = Path(path).expanduser()
        if not self.path.is_dir():
            raise RagtuneError(f"--rerank '{path}' is not a directory")
        if not _is_cross_encoder(self.path):
            raise RagtuneError(
                f"--rerank '{path}' is not a cross-encoder (no *ForSequenceClassification config); "
                "train one with ragtune train-reranker"
            )
        quiet_transformers()
        from sentence_transformers import CrossEncoder

        self.batch_size = batch_size
        self.model = CrossEncoder(str(self.path), device="cpu", local_files_only=True)

    def rerank(self, query: str, hits: list[Hit], depth: int) -> list[Hit]:
        """Re-score the first `depth` hits; the rest keep their order below them (scores shifted under the minimum)."""
        head, tail = hits[:depth], hits[depth:]
        if not head:
            return hits
        pairs = [(query, f"{h.title} {h.text}".strip() if h.title else h.text) for h in head]
        scores = self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False)
        ranked = sorted(zip(head, (float(s) for s in scores)), key=lambda item: -item[1])
        floor = ranked[-1][1]
        return [replace(hit, score=score) for hit, score in ranked] + [
            replace(hit, score=floor - 1.0 - i) for i, hit in enumerate(tail)
        ]
