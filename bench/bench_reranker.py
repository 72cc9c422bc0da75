"""Train a cross-encoder reranker on SciFact train and measure hybrid vs hybrid + rerank on SciFact test.

Usage: python bench/bench_reranker.py [--embedder runs/mnrl-neg1-b/tuned-mnrl-neg1-b] [--budget-minutes 14.5]
Dev for best-checkpoint selection: 10 % of the train queries (never test).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from ragtune.evaluation import evaluate_systems, load_beir, write_report
from ragtune.evaluation.runner import default_cache_dir, eval_store_dir
from ragtune.corpus import ChunkingConfig
from ragtune.models import resolve_model
from ragtune.retrieval import Reranker, Retriever
from ragtune.store import Store
from ragtune.training.examples import examples_from_beir, read_training_jsonl, write_training_jsonl
from ragtune.training.mining import MiningConfig, mine_hard_negatives
from ragtune.training.reranker import RerankerConfig, train_reranker


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--embedders", nargs="+", default=["minilm", "runs/mnrl-neg1-b/tuned-mnrl-neg1-b"])
    parser.add_argument("--negatives", type=int, default=3)
    parser.add_argument("--loss", default="bce")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--budget-minutes", type=float, default=14.5)
    parser.add_argument("--depth", type=int, default=20)
    args = parser.parse_args()
    work, out = Path("runs/reranker"), Path("bench/results/reranker")
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    mined_path = work / f"train-mined{args.negatives}.jsonl"
    start = time.perf_counter()
    if mined_path.exists():
        examples = read_training_jsonl(mined_path)
    else:
        pairs, corpus = examples_from_beir(args.data, "train")
        examples, _ = mine_hard_negatives(
            pairs, list(corpus.values()), resolve_model("minilm"), MiningConfig(num_negatives=args.negatives)
        )
        write_training_jsonl(mined_path, examples)
    timings["mining_s"] = time.perf_counter() - start

    config = RerankerConfig(
        loss=args.loss, negatives=args.negatives, epochs=args.epochs, threads=2,
        time_budget_minutes=args.budget_minutes,
    )  # fmt: skip
    result = train_reranker(examples, work / "cross-encoder", config)
    timings["train_s"] = result.train_seconds
    print("dev", result.dev_before.get("ndcg@10"), "->", result.dev_after.get("ndcg@10"), "steps", result.steps)

    test = load_beir(args.data, "test")
    start = time.perf_counter()
    evaluation = evaluate_systems(
        test, models=args.embedders, modes=["hybrid"], k=100, reranker=work / "cross-encoder", rerank_depth=args.depth
    )
    timings["eval_s"] = time.perf_counter() - start
    data = write_report(evaluation, out)

    latency: dict[str, dict[str, float]] = {}
    store_dir = eval_store_dir(default_cache_dir(), test, resolve_model("minilm").revision, ChunkingConfig())
    reranker = Reranker(work / "cross-encoder")
    queries = list(test.queries.values())[:50]
    with Store.open(store_dir) as store:
        for depth in (20, 50, 100):
            retriever = Retriever(store, reranker=reranker, rerank_depth=depth)
            samples = []
            for query in queries:
                t = time.perf_counter()
                retriever.search(query, k=10, mode="hybrid")
                samples.append(time.perf_counter() - t)
            ordered = sorted(samples)
            latency[str(depth)] = {"p50_ms": 1000 * statistics.median(ordered), "p99_ms": 1000 * ordered[-1]}
    summary = {
        "args": vars(args) | {"data": str(args.data)}, "timings": timings, "steps": result.steps,
        "dev_before": result.dev_before, "dev_after": result.dev_after,
        "test": {s["label"]: s["metrics"] for s in data["systems"]}, "comparisons": data["comparisons"],
        "latency_hybrid_plus_rerank_k10": latency,
    }  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(json.dumps({k: summary[k] for k in ("timings", "test", "latency_hybrid_plus_rerank_k10")}, indent=2))


if __name__ == "__main__":
    main()
