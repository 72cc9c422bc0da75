"""Reranking speed with the cross-encoder's linear layers packed for oneDNN (bf16 on the CPU) against plain layers.

Usage: python bench/bench_rerank_packing.py [--data ../shared/data/scifact] [--queries 100] [--depth 20] [--rounds 3]
    [--out bench/results/rerank-packing.json]
Pairs: each of the first `--queries` test claims with its relevant abstracts and other abstracts up to `--depth`
(title + text, as the reranker reads them). Model: all-MiniLM-L6-v2 as a cross-encoder with a new one-logit head
(256 tokens, as `ragtune train-reranker` makes them), saved once to a temporary folder and loaded by
`ragtune.retrieval.Reranker` both ways (`RAGTUNE_PACK_WEIGHTS=0` for the plain layers): the speed does not depend on
the head's training; the agreement is of the two ways' logits.
Both are measured in turns, `--rounds` times each; medians compared.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ragtune.evaluation import load_beir
from ragtune.linear_packing import PACK_ENV
from ragtune.models import resolve_model
from ragtune.training.examples import beir_corpus
from ragtune.retrieval import Reranker


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/rerank-packing.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    test = load_beir(args.data, "test")
    corpus = beir_corpus(test)
    doc_ids = list(corpus)
    rng = random.Random(0)
    pairs = []
    for query_id in sorted(test.queries)[: args.queries]:
        relevant = [d for d in test.qrels.get(query_id, {}) if d in corpus][: args.depth]
        others = rng.sample(doc_ids, args.depth - len(relevant))
        pairs += [(test.queries[query_id], corpus[d]) for d in relevant + others]

    from sentence_transformers import CrossEncoder

    with tempfile.TemporaryDirectory() as folder:
        CrossEncoder(str(resolve_model("minilm").path), num_labels=1, max_length=256,  # as `train-reranker`
                     local_files_only=True).save(folder)
        packed = Reranker(folder)
        os.environ[PACK_ENV] = "0"
        plain = Reranker(folder)
        del os.environ[PACK_ENV]
        rerankers = {"plain layers (before 12-05)": plain, "packed layers": packed}
        result: dict = {"pairs": len(pairs), "queries": args.queries, "depth": args.depth, "rounds": args.rounds,
                        "max_length": packed.model.max_length}  # fmt: skip
        result["seconds_each"] = {name: [] for name in rerankers}
        logits = {}
        for reranker in rerankers.values():
            reranker.score_pairs(pairs[:32])  # warm-up
        for round_number in range(args.rounds):
            names = list(rerankers) if round_number % 2 == 0 else list(reversed(rerankers))
            for name in names:
                started = time.perf_counter()
                logits[name] = reranker_logits = rerankers[name].score_pairs(pairs, logits=True)
                result["seconds_each"][name].append(time.perf_counter() - started)
                print(round_number, name, round(result["seconds_each"][name][-1], 1), len(reranker_logits), flush=True)
    medians = {name: statistics.median(seconds) for name, seconds in result["seconds_each"].items()}
    result["median_seconds"] = medians
    result["pairs_per_s"] = {name: len(pairs) / seconds for name, seconds in medians.items()}
    result["packed_speedup"] = medians["plain layers (before 12-05)"] / medians["packed layers"]
    a, b = np.asarray(logits["plain layers (before 12-05)"]), np.asarray(logits["packed layers"])
    result["logits_pearson"] = float(np.corrcoef(a, b)[0, 1])
    result["logits_max_abs_difference"] = float(np.abs(a - b).max())
    result["logits_spread"] = float(a.std())
    top_same = [int(np.argmax(a[i : i + args.depth]) == np.argmax(b[i : i + args.depth]))
                for i in range(0, len(a), args.depth)]  # fmt: skip
    result["same_first_passage_share"] = sum(top_same) / len(top_same)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
