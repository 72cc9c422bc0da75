"""Teachers for distillation: each training query gets hard negatives from the hybrid (BM25 + dense) ranking, and a
teacher scores its positive and those negatives; the bi-encoder is then trained to reproduce the teacher's scores
(`finetune --loss distill`, `mnrl-distill`, `margin-mse`, `mnrl-margin-mse`).

Two teachers:
- "hybrid": the convex fusion below, scores in [0, 1] (for the KL-divergence losses, `distill`).
- "cross-encoder": a trained reranker (`ragtune train-reranker`: on labels, or on synthetic pairs — the GPL recipe)
  scores every (query, passage) pair; its raw logits are the labels, for MarginMSE. A reranker trained with softmax
  cross-entropy over its logits lives on the same scale as the student's cosine × 20 that MNRL trains.

Why: on a vocabulary the base model does not know, the lexical signal is what the dense model lacks, and the
(BM25 + dense) hybrid ranks real questions better than either alone. Synthetic pairs alone say only "this passage,
not those"; the teacher says *how much* better each candidate is, so a near-duplicate or an unlabelled answer among
the negatives is not pushed away as hard as an unrelated passage (the point of GPL's pseudo-labels). No pretrained
cross-encoder can be had offline: the hybrid needs none, the cross-encoder teacher one trained here.
Measured (BENCHMARKS.md): neither teacher beats the quickstart's label-free default (GISTEmbed) on real questions;
a reranker trained on the synthetic pairs made the dense model 0.06–0.11 nDCG@10 worse on SciFact.

Hybrid teacher score (per query, over its candidates; also what picks every teacher's negatives), the convex fusion
ragtune searches with:
    weight × minmax(dense cosine over the query's dense top-`depth`) + (1 − weight) × minmax(BM25 over its BM25
    top-`depth`), a candidate outside a list scoring 0 there, the dense part clipped to [0, 1].
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace

from ragtune.embedding import Embedder
from ragtune.embedding_cache import encode_cached
from ragtune.errors import InputError
from ragtune.models import ModelRef
from ragtune.retrieval.rerank import Reranker
from ragtune.training.examples import TrainingExample
from ragtune.training.mining import bm25_ranked, dense_ranked


TEACHERS = ("hybrid", "cross-encoder")


@dataclass(frozen=True)
class TeacherConfig:
    kind: str = "hybrid"
    cross_encoder: str | None = None
    """The reranker directory that scores the pairs when `kind` is "cross-encoder"."""
    negatives: int = 2
    """Negatives per query, drawn at random from the teacher's top `pool` candidates that are not positives."""
    pool: int = 20
    depth: int = 100
    """How deep each of the dense and BM25 lists goes (their min-max normalisation spans this depth)."""
    dense_weight: float = 0.5
    seed: int = 0
    batch_size: int = 64

    def check(self) -> None:
        if self.kind not in TEACHERS:
            raise InputError(f"--teacher {self.kind}: the teacher is one of {', '.join(TEACHERS)}")
        if (self.kind == "cross-encoder") != (self.cross_encoder is not None):
            raise InputError("--teacher cross-encoder needs --reranker DIR (a trained reranker), and only it takes one")
        if self.negatives < 1 or self.pool < self.negatives or self.depth < self.pool:
            raise InputError("the teacher needs 1 ≤ negatives ≤ pool ≤ depth")
        if not 0.0 <= self.dense_weight <= 1.0:
            raise InputError("the teacher's dense weight must be within [0, 1]")


@dataclass(frozen=True)
class TeacherReport:
    examples: int
    positive_score_mean: float
    negative_score_mean: float
    positive_first_share: float
    """Share of queries whose positive the teacher scores above all of its chosen negatives."""

    def to_json(self) -> dict[str, float | int]:
        return dict(self.__dict__)


def teacher_scored_examples(
    examples: Sequence[TrainingExample],
    corpus: Sequence[str],
    model: ModelRef,
    config: TeacherConfig = TeacherConfig(),
    never_negative: Mapping[str, Collection[str]] | None = None,
) -> tuple[list[TrainingExample], TeacherReport]:
    """The examples with `negatives` drawn from the hybrid ranking's top candidates and `scores` = the teacher's
    scores of (positive, *negatives). Corpus vectors come from the user's embedding cache (the store's model)."""
    config.check()
    reranker = None if config.cross_encoder is None else Reranker(config.cross_encoder, batch_size=config.batch_size)
    corpus = list(dict.fromkeys([*corpus, *(e.positive for e in examples)]))
    position = {text: i for i, text in enumerate(corpus)}
    embedder = Embedder(model, batch_size=config.batch_size)
    corpus_vectors = encode_cached(embedder, corpus)
    queries = list(dict.fromkeys(e.query for e in examples))
    query_vectors = embedder.encode(queries)
    depth = min(config.depth, len(corpus))
    dense_lists = dense_ranked(query_vectors, corpus_vectors, depth)
    bm25_lists = bm25_ranked(queries, corpus, depth)
    examples_of: dict[str, list[TrainingExample]] = {}
    for e in examples:
        examples_of.setdefault(e.query, []).append(e)

    rng = random.Random(config.seed)
    scored: list[TrainingExample] = []
    for row, query in enumerate(queries):
        vector = query_vectors[row]
        dense_ids = dense_lists[row]
        dense_top = float(vector @ corpus_vectors[dense_ids[0]])
        dense_low = float(vector @ corpus_vectors[dense_ids[-1]])
        bm25_ids, bm25_scores = bm25_lists[row]
        bm25 = _min_max(dict(zip(bm25_ids.tolist(), bm25_scores.tolist(), strict=True)))

        def teacher(index: int) -> float:
            cosine = float(vector @ corpus_vectors[index])
            span = dense_top - dense_low
            dense = min(1.0, max(0.0, (cosine - dense_low) / span)) if span > 0 else 1.0
            return config.dense_weight * dense + (1.0 - config.dense_weight) * bm25.get(index, 0.0)

        excluded = {position[e.positive] for e in examples_of[query]}
        if never_negative:
            excluded |= {position[t] for t in never_negative.get(query, ()) if t in position}
        scores = {i: teacher(i) for i in dict.fromkeys([*dense_ids.tolist(), *bm25_ids.tolist()]) if i not in excluded}
        pool = sorted(scores, key=lambda i: -scores[i])[: config.pool]
        if len(pool) < config.negatives:
            continue
        chosen = sorted(rng.sample(range(len(pool)), config.negatives))
        negatives = [pool[i] for i in chosen]
        negative_values = [scores[i] for i in negatives]
        for example in examples_of[query]:
            scored.append(TrainingExample(example.query, example.positive, tuple(corpus[i] for i in negatives),
                                          scores=(teacher(position[example.positive]), *negative_values)))  # fmt: skip
    if reranker is not None:
        scored = cross_encoder_scored(scored, reranker)
    positive_scores: list[float] = []
    negative_scores: list[float] = []
    first = 0
    for example in scored:
        positive_scores.append(example.scores[0])
        negative_scores.extend(example.scores[1:])
        first += example.scores[0] > max(example.scores[1:])
    report = TeacherReport(
        examples=len(scored),
        positive_score_mean=statistics.fmean(positive_scores) if positive_scores else 0.0,
        negative_score_mean=statistics.fmean(negative_scores) if negative_scores else 0.0,
        positive_first_share=first / max(1, len(scored)),
    )
    return scored, report


def cross_encoder_scored(examples: Sequence[TrainingExample], reranker: Reranker) -> list[TrainingExample]:
    """The examples with `scores` replaced by a cross-encoder's logits for (query, positive) and each (query,
    negative), all pairs scored in one batched pass."""
    pairs = [(e.query, text) for e in examples for text in (e.positive, *e.negatives)]
    flat = reranker.score_pairs(pairs, logits=True)
    rescored, offset = [], 0
    for e in examples:
        count = 1 + len(e.negatives)
        rescored.append(replace(e, scores=tuple(flat[offset : offset + count])))
        offset += count
    return rescored


def _min_max(scores: dict[int, float]) -> dict[int, float]:
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    span = high - low
    return {key: (value - low) / span if span > 0 else 1.0 for key, value in scores.items()}
