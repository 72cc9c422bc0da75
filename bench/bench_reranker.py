"""Train a cross-encoder reranker on SciFact train; measure hybrid (or --first-stage dense) vs + rerank on SciFact test.

Usage: python bench/bench_reranker.py [--train-only] [--model-dir DIR] [--embedders minilm runs/…/tuned]
Dev (for best-checkpoint selection and for choosing the interpolation weight): the same 10 % of the train queries
that the embedding fine-tune held out, so neither model has trained on them. Test is never looked at until the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict
from pathlib import Path

from ragtune.corpus import ChunkingConfig
from ragtune.evaluation import load_beir
from ragtune.evaluation.metrics import mean_scores, per_query_scores
from ragtune.evaluation.runner import default_cache_dir, documents_run, eval_store_dir
from ragtune.evaluation.significance import compare
from ragtune.models import resolve_model
from ragtune.retrieval import Fusion, Reranker, Retriever, min_max_normalised
from ragtune.store import index_sources, open_store
from ragtune.training.examples import examples_from_beir, held_out_queries, read_training_jsonl, write_training_jsonl
from ragtune.training.mining import CandidateSource, MiningConfig, mine_hard_negatives
from ragtune.training.reranker import RerankerConfig, train_reranker
from ragtune.types import Hit

WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
ALPHAS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # dense weights of the convex first stage (--first-stage convex); 1 = dense
METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")


def _train(args: argparse.Namespace, work: Path) -> tuple[Path, list]:  # type: ignore[type-arg]
    mined_path = work / f"train-mined{args.negatives}-{args.source}.jsonl"
    start = time.perf_counter()
    if mined_path.exists():
        examples = read_training_jsonl(mined_path)
    else:
        pairs, corpus = examples_from_beir(args.data, "train")
        examples, _ = mine_hard_negatives(
            pairs, list(corpus.values()), resolve_model("minilm"),
            MiningConfig(num_negatives=args.negatives, source=CandidateSource(args.source)),
        )  # fmt: skip
        write_training_jsonl(mined_path, examples)
    mining_s = time.perf_counter() - start
    start_from = "" if args.base == "minilm" else "-from-" + Path(args.base).name
    model_dir = args.model_dir or work / f"ce-{args.loss}-n{args.negatives}-{args.source}-lr{args.lr:g}{start_from}"
    if model_dir.exists():
        return model_dir, examples
    config = RerankerConfig(
        base=args.base, loss=args.loss, negatives=args.negatives, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.lr, max_length=args.max_length, bf16=not args.fp32, threads=args.threads,
        in_batch_negatives=args.in_batch_negatives, seed=args.seed,
        time_budget_minutes=args.budget_minutes,
    )  # fmt: skip
    result = train_reranker(examples, model_dir, config, show_progress=True)
    print("dev", result.dev_before.get("ndcg@10"), "->", result.dev_after.get("ndcg@10"), "steps", result.steps)
    record = {
        "config": config.to_json(), "steps": result.steps, "train_s": result.train_seconds, "mining_s": mining_s,
        "dev_before": result.dev_before, "dev_after": result.dev_after, "log_history": result.log_history,
    }  # fmt: skip
    (model_dir.parent / (model_dir.name + ".train.json")).write_text(json.dumps(record, indent=2))
    return model_dir, examples


def _ndcg(qrels, queries: dict[str, str], hits: list[list[Hit]]) -> dict[str, dict[str, float]]:  # type: ignore[no-untyped-def]
    return per_query_scores(qrels, documents_run(dict(zip(queries, hits))), METRICS)


def _splits(args: argparse.Namespace, examples: list) -> tuple:  # type: ignore[type-arg]
    """(test set, dev queries, dev qrels): dev = the train queries the fine-tunes held out."""
    test, train = load_beir(args.data, "test"), load_beir(args.data, "train")
    dev_queries = held_out_queries(train, examples, 0.1, 42)
    return test, dev_queries, {qid: train.qrels[qid] for qid in dev_queries}


def _indexed_store(embedder: str, test) -> Path:  # type: ignore[no-untyped-def]
    """The evaluation store of the test corpus under `embedder`, built or brought up to date."""
    store_dir = eval_store_dir(default_cache_dir(), test, resolve_model(embedder).revision, ChunkingConfig())
    index_sources(store_dir, [test.corpus_path], model=embedder, chunking=ChunkingConfig())
    return store_dir


class _CachedCrossScores:
    """Cross-encoder scores of (query, passage) pairs, each pair scored once however many first stages list it."""

    def __init__(self, reranker: Reranker) -> None:
        self.reranker = reranker
        self.cache: dict[tuple[str, str], float] = {}

    def score(self, queries: list[str], results: list[list[Hit]], depth: int) -> list[list[float]]:
        missing = [[h for h in hits[:depth] if (q, h.id) not in self.cache] for q, hits in zip(queries, results)]
        fresh = self.reranker.score(queries, missing, depth)
        for query, hits, scores in zip(queries, missing, fresh):
            self.cache.update({(query, h.id): s for h, s in zip(hits, scores)})
        return [[self.cache[(q, h.id)] for h in hits[:depth]] for q, hits in zip(queries, results)]


class _MeanCrossScores:
    """Two cross-encoders as one: per query, the mean of each model's scores min-max normalised over the head."""

    def __init__(self, first: _CachedCrossScores, second: _CachedCrossScores) -> None:
        self.parts = (first, second)

    def score(self, queries: list[str], results: list[list[Hit]], depth: int) -> list[list[float]]:
        each = [part.score(queries, results, depth) for part in self.parts]
        return [[(a + b) / 2 for a, b in zip(min_max_normalised(x), min_max_normalised(y))] for x, y in zip(*each)]


def _evaluate_convex(args: argparse.Namespace, model_dir: Path, examples: list) -> dict:  # type: ignore[type-arg]
    """Convex first stage: its dense weight (alpha) and the cross-encoder's weight chosen together on dev.

    With --ensemble-with, three systems share the first stage: this reranker, the other one, and the two averaged."""
    test, dev_queries, dev_qrels = _splits(args, examples)
    split_queries = {"dev": dev_queries, "test": test.queries}
    first: dict[float, dict[str, list[list[Hit]]]] = {}
    with open_store(_indexed_store(args.embedders[-1], test)) as store:
        for alpha in ALPHAS:
            retriever = Retriever(store, fusion=Fusion.convex, alpha=alpha, depth=100)
            first[alpha] = {split: retriever.search_many(list(q.values()), k=100, mode="hybrid")
                            for split, q in split_queries.items()}  # fmt: skip
    first_stage_dev = {
        str(alpha): mean_scores(_ndcg(dev_qrels, dev_queries, first[alpha]["dev"]))["ndcg@10"] for alpha in ALPHAS
    }
    main = _CachedCrossScores(Reranker(model_dir))
    scorers: dict[str, _CachedCrossScores | _MeanCrossScores] = {"tuned": main}
    if args.ensemble_with:
        other = _CachedCrossScores(Reranker(args.ensemble_with))
        scorers.update({"other": other, "ensemble": _MeanCrossScores(main, other)})
    interpolate = main.reranker  # apply() mixes by its `weight`, whichever model made the scores
    results = {}
    for name, cross in scorers.items():
        start = time.perf_counter()
        entry: dict = {"first_stage_dev": first_stage_dev}  # type: ignore[type-arg]
        for depth in args.depths:
            grid = {}
            for alpha in ALPHAS:
                scores = cross.score(list(dev_queries.values()), first[alpha]["dev"], depth)
                for weight in WEIGHTS:
                    interpolate.weight = weight
                    reranked = interpolate.apply(first[alpha]["dev"], scores)
                    grid[(alpha, weight)] = mean_scores(_ndcg(dev_qrels, dev_queries, reranked))
            alpha, weight = max(grid, key=lambda key: grid[key]["ndcg@10"])
            base = _ndcg(test.qrels, test.queries, first[alpha]["test"])
            scores = cross.score(list(test.queries.values()), first[alpha]["test"], depth)
            interpolate.weight = weight
            per_query = _ndcg(test.qrels, test.queries, interpolate.apply(first[alpha]["test"], scores))
            entry[f"rerank@{depth}"] = {
                "alpha": alpha, "weight": weight, "dev": grid[(alpha, weight)]["ndcg@10"],
                "first_stage_test": mean_scores(base), "test": mean_scores(per_query),
                "vs_first_stage": [asdict(compare(m, base[m], per_query[m])) for m in METRICS],
            }  # fmt: skip
            entry[f"rerank@{depth}:dev_grid"] = {f"{a} {w}": v["ndcg@10"] for (a, w), v in grid.items()}
        entry["cross_encoder_seconds"] = time.perf_counter() - start
        print(name, json.dumps({k: v for k, v in entry.items() if "grid" not in k}, indent=1)[:4000])
        results[name] = entry
    if len(results) > 1:  # the system the held-out claims pick, as a user would deploy it
        name, depth = max(((n, d) for n in results for d in args.depths),
                          key=lambda key: results[key[0]][f"rerank@{key[1]}"]["dev"])  # fmt: skip
        results["chosen_on_dev"] = {"system": name, "depth": depth, **results[name][f"rerank@{depth}"]}
    return results


def _evaluate(args: argparse.Namespace, model_dir: Path, examples: list) -> dict:  # type: ignore[type-arg]
    test, dev_queries, dev_qrels = _splits(args, examples)
    reranker = Reranker(model_dir)
    results: dict[str, dict] = {}  # type: ignore[type-arg]
    for embedder in args.embedders:
        with open_store(_indexed_store(embedder, test)) as store:
            retriever = Retriever(store, depth=100)
            first = {
                split: retriever.search_many(list(queries.values()), k=100, mode=args.first_stage)
                for split, queries in (("dev", dev_queries), ("test", test.queries))
            }
        label = "minilm" if embedder == "minilm" else "tuned"
        depths = args.depths if label == "tuned" else args.depths[:1]  # the deeper runs cost minutes each
        start = time.perf_counter()
        cross = {split: reranker.score(list(q.values()), first[split], max(depths))
                 for split, q in (("dev", dev_queries), ("test", test.queries))}  # fmt: skip
        score_s = time.perf_counter() - start
        base = {"dev": _ndcg(dev_qrels, dev_queries, first["dev"]), "test": _ndcg(test.qrels, test.queries, first["test"])}
        entry: dict = {args.first_stage: {s: mean_scores(base[s]) for s in base}, "cross_encoder_seconds": score_s}  # type: ignore[type-arg]
        for depth in depths:
            dev_by_weight = {}
            for weight in WEIGHTS:
                reranker.weight = weight
                scores = [s[:depth] for s in cross["dev"]]
                dev_by_weight[weight] = mean_scores(_ndcg(dev_qrels, dev_queries, reranker.apply(first["dev"], scores)))
            chosen = max(WEIGHTS, key=lambda w: dev_by_weight[w]["ndcg@10"])
            for name, weight in (("alone", 1.0), ("interpolated", chosen)):
                reranker.weight = weight
                scores = [s[:depth] for s in cross["test"]]
                per_query = _ndcg(test.qrels, test.queries, reranker.apply(first["test"], scores))
                entry[f"rerank@{depth}:{name}"] = {
                    "weight": weight, "test": mean_scores(per_query),
                    "vs_first_stage": [asdict(compare(m, base["test"][m], per_query[m])) for m in METRICS],
                }  # fmt: skip
            entry[f"rerank@{depth}:dev_by_weight"] = {str(w): v["ndcg@10"] for w, v in dev_by_weight.items()}
        if args.check_fp32 and label == "tuned":  # the default bf16 inference against fp32, same candidates
            exact = Reranker(model_dir, precision="fp32")
            depth = args.depths[0]
            start = time.perf_counter()
            fp32_scores = exact.score(list(test.queries.values()), first["test"], depth)
            entry["fp32_check"] = {"seconds": time.perf_counter() - start, "depth": depth}
            for name in ("alone", "interpolated"):
                exact.weight = entry[f"rerank@{depth}:{name}"]["weight"]
                per_query = _ndcg(test.qrels, test.queries, exact.apply(first["test"], fp32_scores))
                entry["fp32_check"][name] = mean_scores(per_query)["ndcg@10"]
        results[label] = entry
        print(label, json.dumps({k: v for k, v in entry.items() if "dev_by_weight" not in k}, indent=1)[:3000])
    return results


def _latency(model_dir: Path, data: Path, weight: float) -> dict[str, dict[str, float]]:
    test = load_beir(data, "test")
    store_dir = eval_store_dir(default_cache_dir(), test, resolve_model("minilm").revision, ChunkingConfig())
    reranker = Reranker(model_dir, weight=weight)
    queries = list(test.queries.values())[:50]
    latency = {}
    with open_store(store_dir) as store:
        for depth in (20, 50, 100):
            retriever = Retriever(store, reranker=reranker, rerank_depth=depth)
            retriever.search(queries[0], k=10, mode="hybrid")  # warm-up
            samples = []
            for query in queries:
                t = time.perf_counter()
                retriever.search(query, k=10, mode="hybrid")
                samples.append(time.perf_counter() - t)
            ordered = sorted(samples)
            latency[str(depth)] = {"p50_ms": 1000 * statistics.median(ordered), "p99_ms": 1000 * ordered[-1]}
    return latency


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--embedders", nargs="+", default=["minilm", "runs/mnrl-neg1-b/tuned-mnrl-neg1-b"])
    parser.add_argument("--base", default="minilm", help="model the cross-encoder starts from (a name or a directory)")
    parser.add_argument("--negatives", type=int, default=7)
    parser.add_argument("--source", default="both", help="hard-negative candidates: dense, bm25 or both")
    parser.add_argument("--loss", default="mnrl")
    parser.add_argument("--in-batch-negatives", type=int, default=1)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--batch-size", type=int, default=8, help="queries per step for listwise/mnrl, pairs for bce")
    parser.add_argument("--lr", type=float, default=7e-5)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--seed", type=int, default=42,
                        help="the reranker's initialisation and order (the dev split keeps seed 42)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training")
    parser.add_argument("--fp32", action="store_true", help="train in fp32 instead of bf16 autocast")
    parser.add_argument("--budget-minutes", type=float, default=30.0)
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--model-dir", type=Path, default=None, help="reranker to evaluate (trained when missing)")
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument("--check-fp32", action="store_true", help="also score the tuned system's test top in fp32")
    parser.add_argument("--out", type=Path, default=Path("bench/results/reranker"), help="folder for summary.json")
    parser.add_argument("--first-stage", choices=["hybrid", "dense", "convex"], default="hybrid",
                        help="the ranking whose top --depths the reranker re-scores; convex: BM25 + dense, the dense "
                             "weight chosen with the reranker's on dev (last --embedders only)")
    parser.add_argument("--ensemble-with", type=Path, default=None,
                        help="a second reranker: with --first-stage convex, also score it and the two averaged")
    parser.add_argument("--no-latency", action="store_true", help="skip the per-query latency table")
    args = parser.parse_args()
    work, out = Path("runs/reranker"), args.out
    out.mkdir(parents=True, exist_ok=True)

    model_dir, examples = _train(args, work)
    if args.train_only:
        return
    start = time.perf_counter()
    results = (_evaluate_convex if args.first_stage == "convex" else _evaluate)(args, model_dir, examples)
    eval_s = time.perf_counter() - start
    tuned = results.get("tuned") or next(iter(results.values()))
    latency = {}
    if not args.no_latency:
        first = tuned[f"rerank@{args.depths[0]}"] if args.first_stage == "convex" else None
        weight = first["weight"] if first else tuned[f"rerank@{args.depths[0]}:interpolated"]["weight"]
        latency = _latency(model_dir, args.data, weight)
    summary = {
        "args": {k: str(v) for k, v in vars(args).items()}, "model_dir": str(model_dir), "eval_s": eval_s,
        "results": results, "latency_hybrid_plus_rerank_k10": latency,
    }  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(json.dumps({"latency": latency, "eval_s": eval_s}, indent=2))


if __name__ == "__main__":
    main()
