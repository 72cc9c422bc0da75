"""Cross-encoder reranking of the top candidates.

Depth trades speed for quality: every reranked candidate costs one cross-encoder forward pass over query + passage.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ragtune.errors import RagtuneError
from ragtune.linear_packing import packs_linear_weights, prepare_for_inference
from ragtune.models import inference_device, inference_precision, quiet_transformers
from ragtune.types import Hit


def _is_cross_encoder(path: Path) -> bool:
    config = path / "config.json"
    if not config.is_file():
        return False
    data = json.loads(config.read_text(encoding="utf-8"))
    architectures = data.get("architectures") or []
    return any(a.endswith("ForSequenceClassification") for a in architectures)


def min_max_normalised(values: Sequence[float]) -> list[float]:
    """Scores mapped onto [0, 1] within their list (all 0.0 when they are equal): how the head's scores are mixed."""
    if not values:
        return []
    low, high = min(values), max(values)
    span = high - low
    return [(v - low) / span if span > 0 else 0.0 for v in values]


class Reranker:
    """A trained cross-encoder directory (`ragtune train-reranker` writes one).

    `weight` is the cross-encoder's share of the final score: 1.0 orders the head by the cross-encoder alone; below
    that, both the cross-encoder's and the first stage's scores are min-max normalised within the head and mixed
    (weight · cross-encoder + (1 − weight) · first stage), the usual interpolation when a reranker is strong on some
    queries and weak on others. `precision` as for embedding (bf16 where the CPU has it; there, linear layers packed
    for oneDNN, `ragtune.linear_packing`).
    """

    def __init__(
        self, path: str | Path, batch_size: int = 32, weight: float = 1.0, precision: str | None = None
    ) -> None:
        self.path = Path(path).expanduser()
        if not 0.0 < weight <= 1.0:
            raise RagtuneError(f"--rerank-weight {weight} must be in (0, 1]: 1 is the cross-encoder alone")
        if not self.path.is_dir():
            raise RagtuneError(f"reranker '{path}' is not a directory")
        if not _is_cross_encoder(self.path):
            raise RagtuneError(
                f"reranker '{path}' is not a cross-encoder (no *ForSequenceClassification config); "
                "train one with ragtune train-reranker"
            )
        quiet_transformers()
        from sentence_transformers import CrossEncoder

        self.batch_size = batch_size
        self.weight = weight
        device = inference_device()
        self.model = CrossEncoder(str(self.path), device=device, local_files_only=True)
        precision = inference_precision(precision, device)
        prepare_for_inference(self.model, precision, packs_linear_weights(precision, device))  # scores, never trains

    def rerank(self, query: str, hits: list[Hit], depth: int) -> list[Hit]:
        return self.rerank_many([query], [hits], depth)[0]

    def rerank_many(self, queries: Sequence[str], results: Sequence[list[Hit]], depth: int) -> list[list[Hit]]:
        """Re-score the first `depth` hits of each list in one batched pass; the rest keep their order below them
        (scores shifted under the minimum)."""
        return self.apply(results, self.score(queries, results, depth))

    def score(self, queries: Sequence[str], results: Sequence[list[Hit]], depth: int) -> list[list[float]]:
        """Cross-encoder scores of the first `depth` hits of each list (all pairs batched together)."""
        heads = [hits[:depth] for hits in results]
        flat = self.score_pairs([(q, h.embedding_text()) for q, head in zip(queries, heads) for h in head])
        scores, offset = [], 0
        for head in heads:
            scores.append(flat[offset : offset + len(head)])
            offset += len(head)
        return scores

    def score_pairs(self, pairs: Sequence[tuple[str, str]], logits: bool = False) -> list[float]:
        """The cross-encoder's score of each (query, passage) pair, batched: its activation (the library's default,
        a sigmoid for one label) applied, or the raw `logits`."""
        if not pairs:
            return []
        import torch

        activation = torch.nn.Identity() if logits else None
        scores = self.model.predict(list(pairs), batch_size=self.batch_size, show_progress_bar=False,
                                    activation_fn=activation)  # fmt: skip
        return [float(s) for s in scores]

    def apply(self, results: Sequence[list[Hit]], scores: Sequence[list[float]]) -> list[list[Hit]]:
        """Order each list's head (as many hits as it has scores) by `score`'s output mixed per `self.weight`."""
        reranked = []
        for hits, head_scores in zip(results, scores, strict=True):
            head, tail = hits[: len(head_scores)], hits[len(head_scores) :]
            reranked.append(self._order(head, head_scores) + self._below(tail, head_scores) if head else list(hits))
        return reranked

    def _order(self, head: list[Hit], cross_scores: list[float]) -> list[Hit]:
        if self.weight < 1.0:
            first_stage = min_max_normalised([h.score for h in head])
            cross_scores = [self.weight * c + (1.0 - self.weight) * f
                            for c, f in zip(min_max_normalised(cross_scores), first_stage)]  # fmt: skip
        ranked = sorted(zip(head, cross_scores), key=lambda item: -item[1])
        return [replace(hit, score=score) for hit, score in ranked]

    def _below(self, tail: list[Hit], head_scores: list[float]) -> list[Hit]:
        floor = 0.0 if self.weight < 1.0 else min(head_scores)
        return [replace(hit, score=floor - 1.0 - i) for i, hit in enumerate(tail)]
