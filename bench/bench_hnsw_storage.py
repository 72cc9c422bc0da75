"""HNSW over float32 vectors (IndexHNSWFlat, what stores kept before format 2) against float16 vectors
(IndexHNSWSQ fp16, what `FaissDenseIndex.create` builds now), same graph settings, same synthetic clustered vectors
as bench_scale.py, one process: build seconds, file size, single-query search p50/p99 (the two indexes queried in
turns, so a slow spell of the machine hits both), recall@10 against exact search.

Usage: python bench/bench_hnsw_storage.py [--size 200000] [--queries 500] [--out bench/results/hnsw-storage.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
from bench_scale import BATCH, DIM, Synthetic, exact_top10, percentiles, synthetic_queries

from ragtune.store.dense import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M, FaissDenseIndex


def float32_hnsw() -> FaissDenseIndex:
    hnsw = faiss.IndexHNSWFlat(DIM, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    hnsw.hnsw.efSearch = HNSW_EF_SEARCH
    return FaissDenseIndex(faiss.IndexIDMap2(hnsw), "hnsw")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("bench/results/hnsw-storage.json"))
    args = parser.parse_args()
    data = Synthetic(args.size)
    queries = synthetic_queries(data, args.queries)
    truth = exact_top10(data, queries)
    result: dict = {"date": time.strftime("%Y-%m-%d"), "size": args.size, "queries": args.queries,
                    "hnsw": {"m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION, "ef_search": HNSW_EF_SEARCH}}  # fmt: skip
    indexes = {"float32": float32_hnsw(), "float16": FaissDenseIndex.create(DIM, args.size, exact_threshold=0)}
    folder = Path(tempfile.mkdtemp(prefix="hnsw-storage-"))
    for name, index in indexes.items():
        started = time.perf_counter()
        for batch in data.batches():
            vectors = data.vectors(batch)
            index.add(np.arange(batch * BATCH, batch * BATCH + len(vectors)) + 1, vectors)  # row ids as exact_top10's
        seconds = time.perf_counter() - started
        index.save(folder / f"{name}.faiss")
        result[name] = {"storage": index.storage, "build_s": round(seconds, 1),
                        "file_gb": round((folder / f"{name}.faiss").stat().st_size / 1e9, 3)}  # fmt: skip
        print(name, result[name], flush=True)
    latency: dict[str, list[float]] = {name: [] for name in indexes}
    found: dict[str, list[set[int]]] = {name: [] for name in indexes}
    for query in queries:
        for name, index in indexes.items():
            started = time.perf_counter()
            _, ids = index.search(query[None, :], 10)
            latency[name].append(time.perf_counter() - started)
            found[name].append(set(ids[0].tolist()))
    for name in indexes:
        recall = np.mean([len(f & set(t.tolist())) / 10 for f, t in zip(found[name], truth, strict=True)])
        result[name].update(search_only=percentiles(latency[name]), recall_at_10=round(float(recall), 4))
    result["float16_vs_float32"] = {
        "build": round(result["float16"]["build_s"] / result["float32"]["build_s"], 2),
        "file": round(result["float16"]["file_gb"] / result["float32"]["file_gb"], 2),
        "search_p50": round(result["float16"]["search_only"]["p50_ms"] / result["float32"]["search_only"]["p50_ms"], 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
