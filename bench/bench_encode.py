"""Encoding speed against the CPU's ceiling and plain sentence-transformers, with the quality each path keeps.

Usage: python bench/bench_encode.py [--data ../shared/data/scifact] [--limit N] [--threads 2] [--rounds R] [--bf16-only]
       [--torch-batch-sizes N [N ...]]
Peer (same run, same texts): `SentenceTransformer(path).encode(texts)` with its defaults (fp32, batch 32). With one
round it is measured first and again last (their gap is the machine's drift); with `--rounds R` every path is
measured R times in turns, each round starting one path later, and each path's median is compared.
`ragtune torch bf16` packs its linear layers for oneDNN where the CPU has native bf16 (ragtune.linear_packing);
the row before it is the same model with plain layers, as ragtune ran it before 12-05. `--torch-batch-sizes` measures
that packed path once per batch size given (a row each) instead of at the CPU default only.
Quality: SciFact test nDCG@10 of exact search over each path's document vectors (documents truncated at 256 tokens,
as BEIR evaluates them), so the paths differ only in how they encode.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ragtune.embedding import CPU_BATCH_SIZE, Embedder
from ragtune.evaluation import load_beir, per_query_scores
from ragtune.evaluation.metrics import mean_scores
from ragtune.models import resolve_model
from ragtune.training.examples import beir_corpus

HIDDEN, LAYERS, FFN = 384, 6, 1536


def matmul_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 20) -> float:
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    for _ in range(3):
        a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def flops_per_token(length: int) -> float:
    """Multiply-adds ×2 per token: Q, K, V, output projections 4·H², FFN 2·H·FFN, attention 2·L·H; × layers."""
    projections = 2 * (4 * HIDDEN * HIDDEN)
    ffn = 2 * (2 * HIDDEN * FFN)
    attention = 2 * (2 * length * HIDDEN)
    return LAYERS * (projections + ffn + attention)


def ndcg(vectors: np.ndarray, doc_ids: list[str], queries: np.ndarray, query_ids: list[str], qrels: dict) -> float:
    scores = queries @ vectors.T
    top = np.argsort(-scores, axis=1)[:, :100]
    run = {qid: {doc_ids[j]: float(scores[i, j]) for j in top[i]} for i, qid in enumerate(query_ids)}
    return mean_scores(per_query_scores(qrels, run, ["ndcg@10"]))["ndcg@10"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/encode.json"))
    parser.add_argument("--rounds", type=int, default=1, help="passes of each path, in turns (median reported)")
    parser.add_argument("--bf16-only", action="store_true", help="only the peer and the bf16 paths")
    parser.add_argument("--torch-batch-sizes", type=int, nargs="+", default=None,
                        help=f"a ragtune torch bf16 row per batch size (default: one row at {CPU_BATCH_SIZE})")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = load_beir(args.data, "test")
    corpus = beir_corpus(dataset)
    doc_ids = list(corpus)[: args.limit]
    texts = [corpus[d] for d in doc_ids]
    query_ids = sorted(dataset.queries)
    query_texts = [dataset.queries[q] for q in query_ids]
    model = resolve_model("minilm")

    result: dict = {
        "texts": len(texts),
        "threads": args.threads,
        "ceiling_gflops": {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)},
    }
    from sentence_transformers import SentenceTransformer

    plain = SentenceTransformer(str(model.path), device="cpu")
    lengths = [min(len(ids), plain.max_seq_length) for ids in plain.tokenizer(texts)["input_ids"]]
    total_flops = sum(n * flops_per_token(n) for n in lengths)
    result["tokens"] = sum(lengths)
    result["tflop"] = total_flops / 1e12
    result["flops_per_token_at_256"] = flops_per_token(256)
    result["floor_seconds"] = {k: total_flops / (v * 1e9) for k, v in result["ceiling_gflops"].items()}

    plain_encode = lambda t: plain.encode(t, normalize_embeddings=True)  # noqa: E731
    unpacked = SentenceTransformer(str(model.path), device="cpu").to(torch.bfloat16)  # ragtune's bf16 before 12-05

    def unpacked_encode(batch: list[str]) -> np.ndarray:
        vectors = unpacked.encode(batch, batch_size=64, convert_to_tensor=True).float().numpy()  # as before 12-05
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    plain_name = "plain sentence-transformers (fp32, batch 32)"
    paths = {
        plain_name: plain_encode,
        "ragtune torch fp32": Embedder(model, precision="fp32", backend="torch").encode,
        "ragtune torch bf16, linear layers not packed (before 12-05, batch 64)": unpacked_encode,
        **{f"ragtune torch bf16{'' if size is None else f', batch {size}'}":
           Embedder(model, precision="bf16", backend="torch", batch_size=size).encode
           for size in args.torch_batch_sizes or [None]},
        "ragtune openvino fp32": Embedder(model, precision="fp32", backend="openvino").encode,
        "ragtune openvino bf16": Embedder(model, precision="bf16", backend="openvino").encode,
    }
    if args.bf16_only:
        paths = {name: encode for name, encode in paths.items() if name == plain_name or "bf16" in name}
    order = list(paths)
    if args.rounds == 1:  # one pass each: the peer again at the end, so the machine's drift shows as their gap
        order.append(plain_name)
    result["rounds"] = args.rounds
    result["paths"] = {}
    for round_number in range(args.rounds):
        turn = order[round_number % len(order):] + order[: round_number % len(order)]  # each round starts elsewhere
        for name in turn:
            encode = paths[name]
            entry = result["paths"].setdefault(name, {"seconds_each": []})
            if not entry["seconds_each"]:
                encode(texts[:64])  # warm-up
            started = time.perf_counter()
            vectors = np.asarray(encode(texts), dtype=np.float32)
            entry["seconds_each"].append(time.perf_counter() - started)
            if "ndcg@10" not in entry:
                queries = np.asarray(encode(query_texts), dtype=np.float32)
                entry["ndcg@10"] = ndcg(vectors, doc_ids, queries, query_ids, dataset.qrels)
            print(round_number, name, json.dumps(entry), flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2) + "\n")  # what is measured survives a cut-short run
    plain_seconds = statistics.median(result["paths"][plain_name]["seconds_each"])
    for entry in result["paths"].values():
        seconds = statistics.median(entry["seconds_each"])  # a median over rounds in turns: a slow spell hits all
        entry.update(seconds=seconds, texts_per_s=len(texts) / seconds, speedup_vs_plain=plain_seconds / seconds,
                     ndcg_delta_vs_plain=entry["ndcg@10"] - result["paths"][plain_name]["ndcg@10"],
                     fraction_of_fp32_floor=result["floor_seconds"]["fp32"] / seconds,
                     fraction_of_bf16_floor=result["floor_seconds"]["bf16"] / seconds)  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
