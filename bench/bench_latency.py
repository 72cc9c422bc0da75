"""Query latency on a SciFact store (query encoding included): torch vs OpenVINO query encoding in the same run.

Usage: python bench/bench_latency.py [--store DIR] [--data ../shared/data/scifact]
Without --store, the evaluation store of all-MiniLM-L6-v2 (built by `ragtune eval` or the benchmarks) is used.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from ragtune.corpus import ChunkingConfig
from ragtune.embedding import Embedder
from ragtune.evaluation import load_beir
from ragtune.evaluation.runner import default_cache_dir, eval_store_dir
from ragtune.models import resolve_model
from ragtune.retrieval import Retriever
from ragtune.store import index_sources, open_store


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": 1000 * statistics.median(ordered), "p99_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/latency-scifact.json"))
    args = parser.parse_args()
    test = load_beir(args.data, "test")
    model = resolve_model("minilm")
    store_dir = args.store or eval_store_dir(default_cache_dir(), test, model.revision, ChunkingConfig())
    if args.store is None:
        index_sources(store_dir, [test.corpus_path], model="minilm", show_progress=False)
    queries = list(test.queries.values())
    result: dict = {"store": str(store_dir), "queries": len(queries), "rounds": args.rounds}
    with open_store(store_dir) as store:
        result["passages"] = store.count()
        for backend, precision in (("torch", "bf16"), ("openvino", "bf16"), ("openvino", "fp32")):
            store.use_embedder(Embedder(model, precision=precision, backend=backend))
            retriever = Retriever(store)
            retriever.search("warm up", k=10, mode="hybrid")
            for mode in ("bm25", "dense", "hybrid"):
                samples = []
                for _ in range(args.rounds):
                    for query in queries:
                        started = time.perf_counter()
                        retriever.search(query, k=10, mode=mode)
                        samples.append(time.perf_counter() - started)
                result[f"{mode}_{backend}_{precision}"] = percentiles(samples)
                print(mode, backend, precision, result[f"{mode}_{backend}_{precision}"], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
