"""A synthetic large store on either engine: build time, disk size, peak memory, ANN recall@10 against exact search,
query latency per mode, and adding 10,000 passages to the built store.

Passages get random words (Zipf-distributed vocabulary) and clustered random unit vectors. The vectors are put in the
embedding cache first, so `ragtune index` of the JSONL corpus runs the real path (read → chunk → cache → store →
indexes) without spending hours encoding random words; the 10,000 added passages are new text, encoded for real by
MiniLM (the report splits encoding from the store's own work). Queries go through `Retriever` with real MiniLM query
encoding, so latency covers everything a query does.
On PostgreSQL, `--m`/`--ef-construction` set the HNSW build and `--ef-search 128,256,…` measures recall@10 and dense
latency at each query-time setting of the one built index.
Usage: python bench/bench_scale.py [--size 1000000] [--queries 300] [--engine embedded|postgresql]
       [--modes bm25,dense,hybrid] [--m 16] [--ef-construction 64] [--ef-search 128]
       [--out bench/results/scale-1M.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from ragtune.embedding import Embedder
from ragtune.embedding_cache import EmbeddingCache, text_hash
from ragtune.models import resolve_model
from ragtune.retrieval import Retriever
from ragtune.store import index_sources, open_store

DIM = 384
BATCH = 20_000
ADDED = 10_000


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def folder_gb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e9


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


def synthetic_queries(data: Synthetic, count: int, seed: int = 7) -> np.ndarray:
    """Unit query vectors near the set's cluster centres (the same noise as its passages)."""
    rng = np.random.default_rng(seed)
    queries = data.centres[rng.integers(0, len(data.centres), count)] + 0.06 * rng.standard_normal(
        (count, DIM)
    ).astype(np.float32)
    return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": 1000 * statistics.median(ordered), "p99_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))]}


def write_corpus(data: Synthetic, folder: Path, cache: EmbeddingCache) -> Path:
    """The corpus as one JSONL file, each text's vector put in the embedding cache under the model's key."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "corpus.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for batch in data.batches():
            vectors = data.vectors(batch)
            texts = data.texts(batch, len(vectors))
            cache.put_many([(text_hash(t), v) for t, v in zip(texts, vectors, strict=True)])
            for i, text in enumerate(texts):
                out.write(json.dumps({"_id": f"d{batch * BATCH + i}", "title": "", "text": text}) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--engine", choices=["embedded", "postgresql"], default="embedded")
    parser.add_argument("--workdir", type=Path, default=None, help="Where the corpus and store go (default: a temp dir).")
    parser.add_argument("--out", type=Path, default=Path("bench/results/scale-1M.json"))
    parser.add_argument("--modes", default="bm25,dense,hybrid", help="Query modes timed end to end.")
    parser.add_argument("--m", type=int, default=None, help="PostgreSQL: HNSW m (default: the engine's).")
    parser.add_argument("--ef-construction", type=int, default=None, help="PostgreSQL: HNSW ef_construction.")
    parser.add_argument(
        "--ef-search", default="", help="PostgreSQL: comma-separated ef_search values for the recall sweep."
    )
    args = parser.parse_args()
    if args.engine == "embedded" and (args.ef_search or args.m or args.ef_construction):
        parser.error("--m, --ef-construction and --ef-search are PostgreSQL settings")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ragtune-scale-"))
    os.environ["RAGTUNE_EMBEDDING_CACHE"] = str(workdir / "cache" / "embeddings.sqlite")
    os.environ["RAGTUNE_EMBEDDING_CACHE_GB"] = "100"
    data = Synthetic(args.size)
    embedder = Embedder(resolve_model("minilm"))
    result: dict = {"date": time.strftime("%Y-%m-%d"), "size": args.size, "dimension": DIM, "engine": args.engine}
    started = time.perf_counter()
    with EmbeddingCache.for_encoder(embedder, embedder.dimension) as cache:
        corpus = write_corpus(data, workdir / "corpus", cache)
    result["corpus_and_cache_s"] = time.perf_counter() - started

    pgdata = workdir / "pg"
    if args.engine == "postgresql":
        from ragtune.store.pg_server import start_server

        settings = {"m": args.m, "ef_construction": args.ef_construction}
        store: str = start_server(pgdata) + "?store=scale" + "".join(
            f"&{name}={value}" for name, value in settings.items() if value is not None
        )
    else:
        store = str(workdir / "store")
    try:
        measure(args, data, corpus, store, workdir, result)
    finally:
        if args.engine == "postgresql":
            from ragtune.store.pg_server import stop_server

            result["store_size_gb_on_disk"] = folder_gb(pgdata)
            stop_server(pgdata)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


def measure(args: argparse.Namespace, data: Synthetic, corpus: Path, store: str, workdir: Path, result: dict) -> None:
    started = time.perf_counter()
    built = index_sources(store, [corpus], show_progress=False)
    result["build_s"] = time.perf_counter() - started
    result["build_encoded"] = built.encoded  # 0: every vector came from the cache
    result["dense_kind"] = built.dense_kind
    result["peak_rss_gb_after_build"] = peak_rss_gb()
    if args.engine == "embedded":
        result["store_size_gb"] = folder_gb(Path(store))
    print(json.dumps(result), flush=True)

    queries = synthetic_queries(data, args.queries)
    truth = exact_top10(data, queries)
    query_texts = [" ".join(t.split()[:4]) for t in data.texts(999_999, args.queries)]
    for ef_search in [int(value) for value in args.ef_search.split(",") if value]:
        with open_store(f"{store}&ef_search={ef_search}") as opened:
            recall, latency = ann_recall(opened, queries, truth)
            result.setdefault("ef_search_sweep", []).append(
                {"ef_search": ef_search, "ann_recall@10": recall, "ann_search_only": latency}
            )
            print(json.dumps(result["ef_search_sweep"][-1]), flush=True)
    with open_store(store) as opened:
        info = opened.info()
        result["store_info_size_bytes"], result["backends"] = info["size_bytes"], info["backends"]
        result["ann_recall@10"], result["ann_search_only"] = ann_recall(opened, queries, truth)
        retriever = Retriever(opened)
        retriever.search("warm up", k=10, mode="hybrid")
        for mode in args.modes.split(","):
            samples = []
            for text in query_texts:
                started = time.perf_counter()
                retriever.search(text, k=10, mode=mode)
                samples.append(time.perf_counter() - started)
            result[f"{mode}_query"] = percentiles(samples)

    added = workdir / "added"  # 10,000 new passages: encoded by MiniLM, then added to the built store
    added.mkdir(exist_ok=True)
    with (added / "new.jsonl").open("w", encoding="utf-8") as out:
        for i, text in enumerate(data.texts(777_777, ADDED)):
            out.write(json.dumps({"_id": f"new{i}", "title": "", "text": text}) + "\n")
    started = time.perf_counter()
    report = index_sources(store, [corpus, added / "new.jsonl"], show_progress=False)
    result["add_10k"] = {
        "seconds": time.perf_counter() - started, "encode_seconds": report.encode_seconds,
        "store_seconds": time.perf_counter() - started - report.encode_seconds, "encoded": report.encoded,
        "passages_total": report.passages_total, "dense_kind": report.dense_kind,
    }  # fmt: skip
    if args.engine == "embedded":
        result["store_size_gb_after_add"] = folder_gb(Path(store))
    result["peak_rss_gb"] = peak_rss_gb()


def ann_recall(opened, queries: np.ndarray, truth: np.ndarray) -> tuple[float, dict[str, float]]:  # type: ignore[no-untyped-def]
    """Recall@10 of the store's dense search against the exact top 10, and its latency (search only)."""
    recall, latency = [], []
    for i, query in enumerate(queries):
        started = time.perf_counter()
        [found] = opened.dense_search(query[None, :], 10)
        latency.append(time.perf_counter() - started)
        recall.append(len({rowid for rowid, _ in found} & set(truth[i].tolist())) / 10)
    return float(np.mean(recall)), percentiles(latency)


def exact_top10(data: Synthetic, queries: np.ndarray) -> np.ndarray:
    """Row ids of the exact top 10 by brute force, batch by batch (row ids start at 1, in corpus order)."""
    best_scores = np.full((len(queries), 10), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), 10), dtype=np.int64)
    for batch in data.batches():
        scores = queries @ data.vectors(batch).T
        ids = np.arange(batch * BATCH, batch * BATCH + scores.shape[1]) + 1
        merged_scores = np.concatenate([best_scores, scores], axis=1)
        merged_ids = np.concatenate([best_ids, np.broadcast_to(ids, scores.shape)], axis=1)
        top = np.argsort(-merged_scores, axis=1)[:, :10]
        best_scores = np.take_along_axis(merged_scores, top, axis=1)
        best_ids = np.take_along_axis(merged_ids, top, axis=1)
    return best_ids


if __name__ == "__main__":
    main()
