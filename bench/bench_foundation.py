"""Foundation benchmark on SciFact: index time, re-index time, store size, BM25 quality, query latency, ANN recall.

Peers measured in the same run: plain `SentenceTransformer.encode` (encoding time) and rank-bm25 (BM25 quality
and latency). Usage: python bench/bench_foundation.py [--data ../shared/data/scifact] [--out bench/results]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from ragtune import Retriever, index_sources, open_store
from ragtune.evaluation import load_beir, per_query_scores
from ragtune.evaluation.metrics import mean_scores
from ragtune.evaluation.runner import documents_run
from ragtune.models import load_sentence_transformer, resolve_model
from ragtune.store.dense import FaissDenseIndex


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "qps": len(ordered) / sum(ordered),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--skip-peer-encode", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, object] = {"date": time.strftime("%Y-%m-%d"), "data": str(args.data)}
    dataset = load_beir(args.data, "test")
    queries, qrels = dataset.queries, dataset.qrels
    corpus = [json.loads(line) for line in dataset.corpus_path.open()]
    metrics = ["ndcg@10", "recall@100", "mrr@10"]

    workdir = Path(tempfile.mkdtemp(prefix="ragtune-bench-"))
    store_dir = workdir / "store"
    start = time.perf_counter()
    report = index_sources(store_dir, [args.data / "corpus.jsonl"], show_progress=True)
    first = time.perf_counter() - start
    start = time.perf_counter()
    again = index_sources(store_dir, [args.data / "corpus.jsonl"], show_progress=False)
    rerun = time.perf_counter() - start
    results["index"] = {
        "documents": len(corpus), "passages": report.passages_total, "seconds": first,
        "passages_per_s": report.passages_total / first, "rerun_unchanged_seconds": rerun,
        "rerun_encoded": again.encoded, "rerun_fraction": rerun / first,
    }  # fmt: skip

    if not args.skip_peer_encode:
        model = load_sentence_transformer(resolve_model("minilm").path)
        texts = [f"{d['title']} {d['text']}".strip() for d in corpus]
        start = time.perf_counter()
        model.encode(texts, batch_size=64, normalize_embeddings=True)
        peer = time.perf_counter() - start
        results["index"]["peer_plain_st_encode_seconds"] = peer  # type: ignore[index]
        results["index"]["ratio_index_vs_peer_encode"] = first / peer  # type: ignore[index]

    with open_store(store_dir) as store:
        results["store"] = store.info()["size_bytes"]
        retriever = Retriever(store)
        quality: dict[str, object] = {}
        latency: dict[str, object] = {}
        for mode in ("bm25", "dense", "hybrid"):
            hits = dict(zip(queries, retriever.search_many(list(queries.values()), k=100, mode=mode)))
            quality[mode] = mean_scores(per_query_scores(qrels, documents_run(hits), metrics))
            samples = []
            for text in queries.values():
                t = time.perf_counter()
                retriever.search(text, k=10, mode=mode)
                samples.append(time.perf_counter() - t)
            latency[mode] = percentiles(samples)
        results["quality"] = quality
        results["latency_k10"] = latency

        # ANN recall on the real SciFact vectors: HNSW vs exact
        ids, vectors = [], []
        for batch_ids, batch_vectors in store.dense.iter_live():
            ids.append(batch_ids)
            vectors.append(batch_vectors)
        all_ids, all_vectors = np.concatenate(ids), np.vstack(vectors)
        query_vectors = store.embedder.encode(list(queries.values()))
        exact = FaissDenseIndex.create(all_vectors.shape[1], len(all_ids))
        exact.add(all_ids, all_vectors)
        ann = FaissDenseIndex.create(all_vectors.shape[1], len(all_ids), exact_threshold=0)
        ann.add(all_ids, all_vectors)
        _, truth = exact.search(query_vectors, 10)
        _, found = ann.search(query_vectors, 10)
        results["ann_recall@10_vs_exact"] = float(np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found)]))

    # peer: rank-bm25 (Okapi, whitespace+lowercase tokens, no stemming) on the same documents
    try:
        from rank_bm25 import BM25Okapi
    except ImportError:
        results["peer_rank_bm25"] = "not installed (pip install rank-bm25)"
    else:
        tokenize = lambda text: re.findall(r"\w+", text.lower())  # noqa: E731
        start = time.perf_counter()
        bm25 = BM25Okapi([tokenize(f"{d['title']} {d['text']}") for d in corpus])
        build = time.perf_counter() - start
        run, samples = {}, []
        for qid, text in queries.items():
            t = time.perf_counter()
            scores = bm25.get_scores(tokenize(text))
            top = np.argsort(-scores)[:100]
            samples.append(time.perf_counter() - t)
            run[qid] = {corpus[i]["_id"]: float(scores[i]) for i in top}
        peer_quality = mean_scores(per_query_scores(qrels, run, metrics))
        peer_latency = percentiles(samples)
        results["peer_rank_bm25"] = {
            "build_seconds": build, "quality": peer_quality, "latency": peer_latency,
            "ratio_qps_ragtune_vs_peer": latency["bm25"]["qps"] / peer_latency["qps"],  # type: ignore[index]
        }  # fmt: skip
    shutil.rmtree(workdir, ignore_errors=True)
    (args.out / "foundation.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
