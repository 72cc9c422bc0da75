"""Hard-negative mining: for each (query, positive), passages the model ranks high that are not positives.

Dense candidates come from exact inner products over the corpus vectors; BM25 candidates from a temporary tantivy
index, filtered with the same rule. The margin rule is sentence-transformers' (`util.mine_hard_negatives`): keep a
candidate only if its similarity to the query is at most `positive − |positive| × relative_margin` (likely false
negatives are dropped). With `range_min = 0` and one positive per query the negatives are the library's "top"
sampling exactly (tests/test_training.py). Where it differs, on purpose:
- `range_min` skips the top candidates of the model's *raw* ranking (where unlabelled positives sit); the library
  skips the first `range_min` of what is left after positives and the margin were removed, which throws away the
  hardest valid negatives.
- a query with several positives is judged per (query, positive) pair, against that positive's score; the library
  uses the lowest positive score of the query for all of them.
- `never_negative` texts (e.g. the other passages of a positive's document) are excluded too, and a row short of
  negatives is filled with random passages below the margin instead of being dropped.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from ragtune.errors import InputError
from ragtune.embedding import Embedder
from ragtune.embedding_cache import encode_cached
from ragtune.fsutil import scratch_directory
from ragtune.models import ModelRef
from ragtune.ray_encoding import RayConfig, encoding_on
from ragtune.store.keyword import TantivyKeywordIndex, build_tantivy_index
from ragtune.training.examples import TrainingExample


class CandidateSource(str, Enum):
    dense = "dense"
    bm25 = "bm25"
    both = "both"


@dataclass(frozen=True)
class MiningConfig:
    num_negatives: int = 3
    range_min: int = 3
    range_max: int = 50
    relative_margin: float = 0.05
    source: CandidateSource = CandidateSource.dense
    batch_size: int | None = None
    """Texts per encoding batch; None: the device's (`embedding.default_batch_size`)."""


@dataclass(frozen=True)
class MiningReport:
    examples: int
    with_negatives: int
    negatives_per_example: float
    positive_score_mean: float
    negative_score_mean: float
    negative_score_max: float
    random_fills: int


def mine_hard_negatives(
    examples: Sequence[TrainingExample],
    corpus: Sequence[str],
    model: ModelRef,
    config: MiningConfig = MiningConfig(),
    corpus_encoder: Callable[[list[str]], np.ndarray] | None = None,
    never_negative: Mapping[str, Collection[str]] | None = None,
    ray: RayConfig | None = None,
) -> tuple[list[TrainingExample], MiningReport]:
    """Return the examples with `negatives` filled in (up to `num_negatives` each), and score statistics.

    The corpus is encoded through the user's embedding cache (a store indexed with `model` has put its vectors
    there), unless `corpus_encoder` (texts → unit vectors of `model`) supplies them. `never_negative` maps a query to corpus texts that must not
    be its negatives although they are not its positive: for pairs made from a passage, the other passages of the
    same document (a title's first passage is the positive, the abstract's second half is no counter-example).
    With `ray`, the corpus passages the cache lacks are encoded on that cluster.
    """
    if config.num_negatives < 1 or config.range_min < 0 or config.range_max <= config.range_min:
        raise InputError("need --negatives ≥ 1 and 0 ≤ --range-min < range-max")
    if not 0.0 <= config.relative_margin < 1.0:
        raise InputError("--relative-margin must be within [0, 1)")
    corpus = list(dict.fromkeys([*corpus, *(e.positive for e in examples)]))
    embedder = Embedder(model, batch_size=config.batch_size)
    queries = list(dict.fromkeys(e.query for e in examples))
    positives_of: dict[str, set[str]] = {}
    for e in examples:
        positives_of.setdefault(e.query, set()).add(e.positive)

    if corpus_encoder is not None:
        corpus_vectors = corpus_encoder(corpus)
    else:
        with encoding_on(embedder, ray) as encoder:
            corpus_vectors = encode_cached(embedder, corpus, encoder=encoder)
    query_vectors = embedder.encode(queries)
    position = {text: i for i, text in enumerate(corpus)}
    query_row = {q: i for i, q in enumerate(queries)}

    candidates: dict[str, list[np.ndarray]] = {q: [] for q in queries}
    if config.source in (CandidateSource.dense, CandidateSource.both):
        for query, ranked in zip(queries, dense_ranked(query_vectors, corpus_vectors, config.range_max)):
            candidates[query].append(ranked)
    if config.source in (CandidateSource.bm25, CandidateSource.both):
        for query, (ranked, _) in zip(queries, bm25_ranked(queries, corpus, config.range_max)):
            candidates[query].append(ranked)

    rng = np.random.default_rng(0)
    random_fills = 0
    mined: list[TrainingExample] = []
    positive_scores: list[float] = []
    negative_scores: list[float] = []
    for example in examples:
        q = query_vectors[query_row[example.query]]
        positive_score = float(q @ corpus_vectors[position[example.positive]])
        ceiling = positive_score - abs(positive_score) * config.relative_margin  # sign-safe, as the library
        excluded = {position[p] for p in positives_of[example.query]}
        if never_negative:
            excluded |= {position[t] for t in never_negative.get(example.query, ()) if t in position}
        chosen: list[int] = []
        lists = [ranked[config.range_min :].tolist() for ranked in candidates[example.query]]
        for index in _interleave(lists):
            if len(chosen) == config.num_negatives:
                break
            if index in excluded or index in chosen:
                continue
            if float(q @ corpus_vectors[index]) <= ceiling:
                chosen.append(index)
        # When the model ranks the positive low, every close candidate is above the margin; such examples still
        # get negatives (random passages below the margin) so all rows keep the same shape for the trainer.
        for index in rng.permutation(len(corpus))[: 20 * config.num_negatives].tolist():
            if len(chosen) == config.num_negatives:
                break
            if index not in excluded and index not in chosen and float(q @ corpus_vectors[index]) <= ceiling:
                chosen.append(index)
                random_fills += 1
        positive_scores.append(positive_score)
        negative_scores.extend(float(q @ corpus_vectors[i]) for i in chosen)
        mined.append(TrainingExample(example.query, example.positive, tuple(corpus[i] for i in chosen)))
    with_negatives = sum(1 for e in mined if e.negatives)
    report = MiningReport(
        examples=len(mined),
        with_negatives=with_negatives,
        negatives_per_example=sum(len(e.negatives) for e in mined) / max(1, len(mined)),
        positive_score_mean=statistics.fmean(positive_scores) if positive_scores else 0.0,
        negative_score_mean=statistics.fmean(negative_scores) if negative_scores else 0.0,
        negative_score_max=max(negative_scores, default=0.0),
        random_fills=random_fills,
    )
    return mined, report


def dense_ranked(query_vectors: np.ndarray, corpus_vectors: np.ndarray, depth: int) -> list[np.ndarray]:
    """Per query, the corpus rows of its top-`depth` inner products, best first (exact search)."""
    import faiss

    index = faiss.IndexFlatIP(corpus_vectors.shape[1])
    index.add(np.ascontiguousarray(corpus_vectors, dtype=np.float32))
    _, ids = index.search(np.ascontiguousarray(query_vectors, dtype=np.float32), min(depth, len(corpus_vectors)))
    return [row[row >= 0] for row in ids]


def bm25_ranked(queries: Sequence[str], corpus: Sequence[str], depth: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query, (corpus rows, BM25 scores) of its top-`depth` BM25 matches, best first (a temporary tantivy
    index over `corpus`)."""
    with scratch_directory("ragtune-mine-") as tmp:
        path = tmp / "bm25"
        build_tantivy_index(path, [(np.arange(len(corpus), dtype=np.int64), list(corpus))])
        index = TantivyKeywordIndex(path)
        ranked = []
        for query in queries:
            hits = index.search(query, depth)
            ranked.append((np.array([i for i, _ in hits], dtype=np.int64), np.array([s for _, s in hits])))
        del index  # its reader lets go of the files before they are removed
        return ranked


def _interleave(lists: list[list[int]]) -> list[int]:
    """Round-robin over candidate lists (dense, BM25) so `both` takes from each in rank order."""
    out: list[int] = []
    for rank in range(max((len(x) for x in lists), default=0)):
        out.extend(x[rank] for x in lists if rank < len(x))
    return out
