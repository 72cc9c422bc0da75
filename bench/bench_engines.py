"""The two store engines side by side on SciFact test: quality per mode, index time, size, query latency.

Builds the embedded store (SQLite + FAISS + tantivy) and the PostgreSQL store (pgvector + full-text search) of the same
corpus, the second through the embedding cache the first filled (so moving a store between engines encodes
nothing), and a third PostgreSQL store searched exactly (no HNSW index), as the embedded engine searches FAISS Flat
below 50k passages. A local PostgreSQL 18 is started for the run and stopped after it.

Usage: python bench/bench_engines.py [--data ../shared/data/scifact] [--split test] [--out bench/results]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from ragtune import Retriever, index_sources, open_store
from ragtune.evaluation import load_beir, per_query_scores
from ragtune.evaluation.metrics import mean_scores
from ragtune.evaluation.runner import documents_run
from ragtune.store import postgres
from ragtune.store.pg_server import start_server, stop_server

METRICS = ["ndcg@10", "recall@100", "mrr@10"]
MODES = ("dense", "bm25", "hybrid")


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
    }


def measure(address: str, corpus: Path, queries: dict[str, str], qrels: dict[str, dict[str, int]]) -> dict[str, object]:
    started = time.perf_counter()
    report = index_sources(address, [corpus], show_progress=False)
    result: dict[str, object] = {
        "index_seconds": time.perf_counter() - started, "encoded": report.encoded, "cached": report.cached,
        "dense_kind": report.dense_kind,
    }  # fmt: skip
    with open_store(address) as store:
        result["size_bytes"] = store.info()["size_bytes"]
        retriever = Retriever(store)
        retriever.search("warm-up", k=10)
        for mode in MODES:
            hits = dict(zip(queries, retriever.search_many(list(queries.values()), k=100, mode=mode)))
            scores = mean_scores(per_query_scores(qrels, documents_run(hits), METRICS))
            samples = []
            for text in queries.values():
                t = time.perf_counter()
                retriever.search(text, k=10, mode=mode)
                samples.append(time.perf_counter() - t)
            result[mode] = {**scores, **percentiles(samples)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--split", default="test", help="the queries to score (train: a check on unchosen queries)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    dataset = load_beir(args.data, args.split)
    corpus = args.data / "corpus.jsonl"
    workdir = Path(tempfile.mkdtemp(prefix="ragtune-engines-"))
    results: dict[str, object] = {"date": time.strftime("%Y-%m-%d"), "data": str(args.data), "split": args.split}
    results["embedded"] = measure(str(workdir / "store"), corpus, dataset.queries, dataset.qrels)
    pgdata = workdir / "pg"
    address = start_server(pgdata)
    try:
        results["postgresql"] = measure(f"{address}?store=scifact", corpus, dataset.queries, dataset.qrels)
        postgres.HNSW_FROM = 10**9  # the same corpus searched exactly (a scan), as FAISS Flat does
        results["postgresql_exact"] = measure(f"{address}?store=scifact_exact", corpus, dataset.queries, dataset.qrels)
    finally:
        stop_server(pgdata)
    for engine in ("postgresql", "postgresql_exact"):
        results[f"{engine}_minus_embedded"] = {
            mode: {m: results[engine][mode][m] - results["embedded"][mode][m] for m in METRICS}  # type: ignore[index]
            for mode in MODES
        }
    args.out.mkdir(parents=True, exist_ok=True)
    name = "engines.json" if args.split == "test" else f"engines-{args.split}.json"
    (args.out / name).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
