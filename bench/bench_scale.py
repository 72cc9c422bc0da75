"""A synthetic large store: build time, peak memory, ANN recall@10 against exact search, and query latency.

Passages get random words (Zipf-distributed vocabulary) and clustered random unit vectors; the store is written through
the same passage table → index build → manifest path as `ragtune index`, then searched through `Retriever` with real
MiniLM query encoding, so latency covers everything a query does.
Usage: python bench/bench_scale.py [--size 1000000] [--queries 300] [--out bench/results/scale-1M.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

from ragtune.corpus import ChunkingConfig
from ragtune.models import resolve_model
from ragtune.retrieval import Retriever
from ragtune.store import open_store
from ragtune.store.passages import PassageTable
from ragtune.store.store import PASSAGES_FILE, _commit_and_build_indexes, _publish_generation
from ragtune.types import Passage

DIM = 384
BATCH = 20_000


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


class Synthetic:
    """Deterministic batches: batch b is regenerated identically for the ground truth pass."""

    def __init__(self, size: int, clusters: int = 2048, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.size = size
        self.centres = rng.standard_normal((clusters, DIM)).astype(np.float32)
        self.centres /= np.linalg.norm(self.centres, axis=1, keepdims=True)
        self.vocabulary = [f"w{i}" for i in range(50_000)]
        ranks = np.arange(1, len(self.vocabulary) + 1)
        self.word_p = (1 / ranks) / (1 / ranks).sum()

    def vectors(self, batch: int) -> np.ndarray:
        rng = np.random.default_rng(1000 + batch)
        count = min(BATCH, self.size - batch * BATCH)
        assignment = rng.integers(0, len(self.centres), count)
        noisy = self.centres[assignment] + 0.06 * rng.standard_normal((count, DIM)).astype(np.float32)
        return (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)

    def texts(self, batch: int, count: int) -> list[str]:
        rng = np.random.default_rng(5000 + batch)
        words = rng.choice(len(self.vocabulary), size=(count, 60), p=self.word_p)
        return [" ".join(self.vocabulary[w] for w in row) for row in words]

    def batches(self) -> range:
        return range((self.size + BATCH - 1) // BATCH)


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": 1000 * statistics.median(ordered), "p99_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--store", type=Path, default=Path("runs/scale-store"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/scale-1M.json"))
    args = parser.parse_args()
    data = Synthetic(args.size)
    model = resolve_model("minilm")
    shutil.rmtree(args.store, ignore_errors=True)
    partial = args.store / "gen-000001.partial"
    partial.mkdir(parents=True)
    result: dict = {"size": args.size, "dimension": DIM}

    started = time.perf_counter()
    table = PassageTable(partial / PASSAGES_FILE)
    for batch in data.batches():
        vectors = data.vectors(batch)
        texts = data.texts(batch, len(vectors))
        passages = [
            Passage(f"d{batch * BATCH + i}#0", f"d{batch * BATCH + i}", 0, "", text, f"synthetic/{batch}.txt")
            for i, text in enumerate(texts)
        ]
        table.add_passages(passages, vectors)
    result["passage_table_s"] = time.perf_counter() - started
    started = time.perf_counter()
    stats, kind = _commit_and_build_indexes(table, partial, DIM)
    table.close()
    result["index_build_s"] = time.perf_counter() - started
    result["dense_kind"] = kind
    chunking = ChunkingConfig().resolve(256, 2)
    _publish_generation(args.store, partial, None, model, DIM, chunking, kind, stats)
    result["peak_rss_gb_after_build"] = peak_rss_gb()
    result["store_size_gb"] = sum(p.stat().st_size for p in args.store.rglob("*") if p.is_file()) / 1e9
    print(json.dumps(result), flush=True)

    rng = np.random.default_rng(7)
    queries = data.centres[rng.integers(0, len(data.centres), args.queries)] + 0.06 * rng.standard_normal(
        (args.queries, DIM)
    ).astype(np.float32)
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    best_scores = np.full((args.queries, 10), -np.inf, dtype=np.float32)
    best_ids = np.zeros((args.queries, 10), dtype=np.int64)
    for batch in data.batches():  # exact top 10 by brute force, batch by batch
        scores = queries @ data.vectors(batch).T
        ids = np.arange(batch * BATCH, batch * BATCH + scores.shape[1]) + 1  # row ids start at 1
        merged_scores = np.concatenate([best_scores, scores], axis=1)
        merged_ids = np.concatenate([best_ids, np.broadcast_to(ids, scores.shape)], axis=1)
        top = np.argsort(-merged_scores, axis=1)[:, :10]
        best_scores = np.take_along_axis(merged_scores, top, axis=1)
        best_ids = np.take_along_axis(merged_ids, top, axis=1)

    with open_store(args.store) as store:
        recall, dense_latency = [], []
        for i, query in enumerate(queries):
            started = time.perf_counter()
            _, ids = store.dense.search(query[None, :], 10, None)
            dense_latency.append(time.perf_counter() - started)
            recall.append(len(set(ids[0].tolist()) & set(best_ids[i].tolist())) / 10)
        result["ann_recall@10"] = float(np.mean(recall))
        result["ann_search_only"] = percentiles(dense_latency)
        retriever = Retriever(store)
        texts = [" ".join(t.split()[:4]) for t in data.texts(999_999, args.queries)]
        retriever.search("warm up", k=10, mode="hybrid")
        for mode in ("bm25", "dense", "hybrid"):
            samples = []
            for text in texts:
                started = time.perf_counter()
                retriever.search(text, k=10, mode=mode)
                samples.append(time.perf_counter() - started)
            result[f"{mode}_query"] = percentiles(samples)
    result["peak_rss_gb"] = peak_rss_gb()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
