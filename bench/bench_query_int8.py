"""Query encoding in int8 (`--query-precision int8`: OpenVINO + NNCF, calibrated on the store's passages) against
the default float query path: speed and SciFact dense quality.

Both encoders are the store's own query embedders (`ragtune.store.query_embedder`), as `ragtune serve` loads them.
Passage vectors come from the store (as `ragtune index` wrote them); only the queries change. Queries for timing are
SciFact titles and claims taken in a shuffled cycle (6,292 texts, more than the query embedder remembers, so no
batch is answered from its memory of recent texts).

Usage: python bench/bench_query_int8.py --store STORE [--data ../shared/data/scifact]
                                        [--out bench/results/query-int8.json]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from itertools import cycle
from pathlib import Path

import numpy as np

from ragtune import open_store
from ragtune.embedding import Embedder
from ragtune.evaluation import load_beir, per_query_scores
from ragtune.evaluation.metrics import mean_scores
from ragtune.evaluation.runner import documents_run
from ragtune.store import query_embedder

BATCHES = (1, 4, 8)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True, help="a SciFact store built by `ragtune index`")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/query-int8.json"))
    args = parser.parse_args()

    titles = [json.loads(line)["title"] for line in (args.data / "corpus.jsonl").open()]
    claims = [json.loads(line)["text"] for line in (args.data / "queries.jsonl").open()]
    texts = titles + claims
    random.Random(0).shuffle(texts)
    results: dict[str, object] = {"date": time.strftime("%Y-%m-%d")}
    with open_store(args.store) as store:
        embedders: dict[str, Embedder] = {}
        for name, precision in (("float", None), ("int8", "int8")):
            started = time.perf_counter()
            embedders[name] = query_embedder(store.manifest, store.passage_texts, precision)
            results[f"{name} load seconds (int8: quantizing when not cached)"] = time.perf_counter() - started
            results[f"{name} precision"] = embedders[name].precision
        speed: dict[str, list[float]] = {}
        for _ in range(2):  # in turns, so a slow spell hits both
            for name, embedder in embedders.items():
                stream = cycle(texts)
                for batch in BATCHES:
                    done, start = 0, time.perf_counter()
                    while time.perf_counter() - start < args.seconds:
                        embedder.encode([next(stream) for _ in range(batch)])
                        done += batch
                    speed.setdefault(f"{name} batch {batch}", []).append(done / (time.perf_counter() - start))
        results["queries_per_second"] = speed
        for split in ("test", "train"):
            dataset = load_beir(args.data, split)
            vectors = {name: embedder.encode(list(dataset.queries.values())) for name, embedder in embedders.items()}
            for name, query_vectors in vectors.items():
                hits = [store.hits(ranked) for ranked in store.dense_search(query_vectors, 100)]
                run = documents_run(dict(zip(dataset.queries, hits)))
                scores = mean_scores(per_query_scores(dataset.qrels, run, ["ndcg@10"]))
                results[f"{split} {name} dense ndcg@10"] = scores["ndcg@10"]
            cosines = (vectors["float"] * vectors["int8"]).sum(axis=1)
            results[f"{split} cosine float vs int8 (mean, min)"] = [float(cosines.mean()), float(np.min(cosines))]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
