"""Encoding on a GPU: ragtune's path (and its Ray path) against plain sentence-transformers on the same GPU.

Two steps, because the GPU machine lacks the evaluation stack (ranx, scipy) and this one lacks the GPU:

  measure (on the GPU machine): python bench/bench_encode_cuda.py measure --model DIR --out DIR [--ray]
      times each path on the SciFact corpus (median of --repeats runs after a warm-up; the peer measured first and
      again last), measures the GPU's bf16 and fp32 matrix-product ceilings, and writes each path's document and
      query vectors (`<path>.npz`) and `measure.json`.
  score (here): python bench/bench_encode_cuda.py score --vectors DIR [--out bench/results/encode-cuda.json]
      SciFact test nDCG@10 of exact search over each path's vectors, cosine of each path to plain fp32, speed-ups,
      and the share of the GPU's floor each path reached.

Paths: plain `SentenceTransformer.encode` (its defaults: batch 32, fp32; then the same model cast to fp16, what a
user who knows GPUs would do); ragtune's `Embedder` as `--device auto` picks on a GPU (bf16, batch 256, threads
tokenizing the next batches while the GPU runs this one), the same at fp32, with one tokenizer thread, without
tokenizing ahead, and at batch 64. Before them, tokenizing alone in 1 to 15 threads. With --ray,
`RayEncoder` (the `index --ray local --ray-gpus-per-worker 1` path: Ray Data over one actor on the GPU), timed with
its actor's start-up and, separately, per passage inside the actor.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

PEER = "plain-fp32"


def read_scifact(data: Path) -> tuple[list[str], list[str], list[str], list[str]]:
    """(doc ids, document texts, test query ids, query texts), read without the evaluation stack."""
    doc_ids, texts = [], []
    for line in (data / "corpus.jsonl").read_text().splitlines():
        row = json.loads(line)
        doc_ids.append(row["_id"])
        texts.append(f"{row.get('title', '')} {row['text']}".strip())
    test = {line.split("\t")[0] for line in (data / "qrels" / "test.tsv").read_text().splitlines()[1:] if line}
    queries = {}
    for line in (data / "queries.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["_id"] in test:
            queries[row["_id"]] = row["text"]
    query_ids = sorted(queries)
    return doc_ids, texts, query_ids, [queries[q] for q in query_ids]


def synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def matmul_tflops(dtype, device: str, size: int = 8192, repeats: int = 10) -> float:  # type: ignore[no-untyped-def]
    import torch

    if device != "cuda":
        size, repeats = 512, 2  # a dry run of the script on a CPU
    a = torch.randn(size, size, device=device, dtype=dtype)  # random data: zeros run faster than real data
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e12


def timed(
    encode: Callable[[Sequence[str]], np.ndarray], texts: list[str], repeats: int, device: str
) -> tuple[list[float], np.ndarray]:
    encode(texts[:256])  # warm-up: kernels chosen, allocator filled
    seconds, vectors = [], np.zeros(0)
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        vectors = np.asarray(encode(texts), dtype=np.float32)
        synchronize(device)
        seconds.append(time.perf_counter() - started)
    return seconds, vectors


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def measure(args: argparse.Namespace) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    from ragtune.embedding import Embedder
    from ragtune.encoders import TorchEncoder
    from ragtune.models import ModelRef, load_sentence_transformer

    args.out.mkdir(parents=True, exist_ok=True)
    doc_ids, texts, query_ids, query_texts = read_scifact(args.data)
    doc_ids, texts, device = doc_ids[: args.limit], texts[: args.limit], args.device
    ref = ModelRef(name="minilm", path=args.model, revision=args.revision)
    result: dict = {
        "date": time.strftime("%Y-%m-%d"), "gpu": torch.cuda.get_device_name(0) if device == "cuda" else "none (dry run)", "torch": torch.__version__,
        "texts": len(texts), "queries": len(query_ids), "repeats": args.repeats,
        "ceiling_tflops": {"bf16": matmul_tflops(torch.bfloat16, device), "fp32": matmul_tflops(torch.float32, device)},
        "paths": {},
    }  # fmt: skip
    print("ceilings", result["ceiling_tflops"], flush=True)

    def plain(dtype) -> Callable[[Sequence[str]], np.ndarray]:  # type: ignore[no-untyped-def]
        model = SentenceTransformer(str(args.model), device=device, local_files_only=True).to(dtype)
        return lambda t: model.encode(list(t), normalize_embeddings=True)

    reference = SentenceTransformer(str(args.model), device=device, local_files_only=True)
    result["lengths"] = [min(len(ids), reference.max_seq_length) for ids in reference.tokenizer(texts)["input_ids"]]
    del reference
    bf16 = load_sentence_transformer(args.model, "bf16", device)
    result["tokenizer"] = measure_tokenizer(TorchEncoder(bf16, batch_size=256), texts)
    one_thread = TorchEncoder(bf16, batch_size=256, tokenize_ahead=True, threads=1)
    not_ahead = TorchEncoder(bf16, batch_size=256, tokenize_ahead=False)
    every: dict[str, tuple[Callable[[], Callable[[Sequence[str]], np.ndarray]], bool]] = {
        PEER: (lambda: plain(torch.float32), True),
        "plain-fp16": (lambda: plain(torch.float16), True),
        "ragtune-auto": (lambda: Embedder(ref, device=device).encode, True),
        "ragtune-fp32": (lambda: Embedder(ref, precision="fp32", device=device).encode, True),
        "ragtune-bf16-one-tokenizer-thread": (lambda: lambda t: unit(one_thread.encode(t)), False),
        "ragtune-bf16-without-tokenizing-ahead": (lambda: lambda t: unit(not_ahead.encode(t)), False),
        "ragtune-bf16-batch-64": (lambda: Embedder(ref, device=device, batch_size=64).encode, False),
        f"{PEER}-again": (lambda: plain(torch.float32), False),
    }
    kept: dict[str, np.ndarray] = {}
    for name, (make, save) in every.items():
        if args.paths and name not in args.paths and name != "ragtune-auto":
            continue
        encode = make()
        seconds, vectors = timed(encode, texts, args.repeats, device)
        entry = {"seconds": seconds, "median_seconds": statistics.median(seconds),
                 "texts_per_s": len(texts) / statistics.median(seconds)}  # fmt: skip
        kept[name] = vectors
        if save:
            np.savez(args.out / f"{name}.npz", documents=vectors, queries=np.asarray(encode(query_texts), np.float32))
        result["paths"][name] = entry
        print(name, json.dumps(entry), flush=True)
        (args.out / "measure.json").write_text(json.dumps(result, indent=1) + "\n")
    for name, vectors in kept.items() if PEER in kept else ():
        cosines = (unit(vectors) * unit(kept[PEER])).sum(axis=1)
        result["paths"][name]["min_cosine_to_plain_fp32"] = float(cosines.min())
    auto = kept["ragtune-auto"]  # always measured: the Ray path is compared with it
    for name in ("ragtune-bf16-one-tokenizer-thread", "ragtune-bf16-without-tokenizing-ahead", "ragtune-bf16-batch-64"):
        if name in kept:
            result["paths"][name]["min_cosine_to_ragtune_auto"] = float((unit(kept[name]) * auto).sum(axis=1).min())
    if args.ray:
        result["paths"]["ray-1-gpu-worker"] = measure_ray(ref, texts, query_texts, auto, args)
    result["doc_ids"], result["query_ids"] = doc_ids, query_ids
    (args.out / "measure.json").write_text(json.dumps(result, indent=1) + "\n")
    for name, entry in result["paths"].items():
        print(f"{name:40s} {entry['median_seconds']:7.2f} s {entry['texts_per_s']:8.0f} texts/s", flush=True)


def measure_tokenizer(encoder, texts: list[str]) -> dict:  # type: ignore[no-untyped-def]
    """Tokenizing the corpus alone (longest first, batches of 256), as sentence-transformers does it (torch tensors,
    one thread) and as ragtune's GPU path does (numpy arrays, in 1 to 16 threads); the cores this process may use."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    ordered = sorted(texts, key=len, reverse=True)
    batches = [ordered[i : i + 256] for i in range(0, len(ordered), 256)]
    model = encoder.model
    found: dict = {"cores_usable": len(os.sched_getaffinity(0)), "cpu_count": os.cpu_count(),
                   "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM")}  # fmt: skip
    try:
        found["cgroup_cpu_max"] = Path("/sys/fs/cgroup/cpu.max").read_text().strip()
    except OSError:
        found["cgroup_cpu_max"] = None
    started = time.perf_counter()
    for batch in batches:
        model.preprocess(batch)
    found["sentence_transformers_serial_s"] = time.perf_counter() - started
    for threads in (1, 2, 4, 8, 15):
        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(encoder._features, batches))
        found[f"numpy_{threads}_threads_s"] = time.perf_counter() - started
    print("tokenizer", json.dumps(found), flush=True)
    return found


def measure_ray(ref, texts: list[str], query_texts: list[str], auto: np.ndarray, args: argparse.Namespace) -> dict:  # type: ignore[no-untyped-def]
    """`RayEncoder.encode_blocks` over the whole corpus, as `ragtune index --ray local --ray-gpus-per-worker 1` runs
    it: each run makes one Ray Dataset, so its seconds include the actor's start (model load)."""
    from ragtune.ray_encoding import RayConfig, RayEncoder

    device = args.device
    encoder = RayEncoder(ref, RayConfig("local", workers=1, gpus_per_worker=1 if device == "cuda" else 0),
                         "bf16", "torch", device)  # fmt: skip

    def encode(batch: Sequence[str]) -> np.ndarray:
        vectors = np.zeros((len(batch), 384), dtype=np.float32)
        for positions, block in encoder.encode_blocks(list(batch)):
            vectors[positions] = block
        return vectors

    seconds, vectors = timed(encode, texts, args.repeats, device)
    np.savez(args.out / "ray-1-gpu-worker.npz", documents=vectors, queries=encode(query_texts))
    median = statistics.median(seconds)
    entry = {"seconds": seconds, "median_seconds": median, "texts_per_s": len(texts) / median,
             "min_cosine_to_ragtune_auto": float((vectors * auto).sum(axis=1).min()),
             "workers": encoder.stats.rows()}  # fmt: skip
    print("ray-1-gpu-worker", json.dumps(entry), flush=True)
    return entry


def score(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_encode import flops_per_token, ndcg

    from ragtune.evaluation import load_beir

    result = json.loads((args.vectors / "measure.json").read_text())
    qrels = load_beir(args.data, "test").qrels
    total_flops = sum(n * flops_per_token(n) for n in result.pop("lengths"))
    doc_ids, query_ids = result.pop("doc_ids"), result.pop("query_ids")
    result["tflop"] = total_flops / 1e12
    result["floor_seconds"] = {k: total_flops / (v * 1e12) for k, v in result["ceiling_tflops"].items()}
    paths = result["paths"]
    peer_seconds = [paths[name]["median_seconds"] for name in (PEER, f"{PEER}-again") if name in paths]
    peer = statistics.mean(peer_seconds) if peer_seconds else None  # a run of the Ray path alone has no peer
    fp16 = paths["plain-fp16"]["median_seconds"] if "plain-fp16" in paths else None
    for name, entry in paths.items():
        if peer is not None:
            entry["speedup_vs_plain_fp32"] = peer / entry["median_seconds"]
        if fp16 is not None:
            entry["speedup_vs_plain_fp16"] = fp16 / entry["median_seconds"]
        entry["share_of_bf16_floor"] = result["floor_seconds"]["bf16"] / entry["median_seconds"]
        saved = args.vectors / f"{name}.npz"
        if saved.exists():
            vectors = np.load(saved)
            entry["ndcg@10"] = ndcg(vectors["documents"], doc_ids, vectors["queries"], query_ids, qrels)
    for entry in paths.values():
        if "ndcg@10" in entry and PEER in paths:
            entry["ndcg_delta_vs_plain_fp32"] = entry["ndcg@10"] - paths[PEER]["ndcg@10"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser()
    steps = parser.add_subparsers(dest="step", required=True)
    on_gpu = steps.add_parser("measure")
    on_gpu.add_argument("--model", type=Path, required=True)
    on_gpu.add_argument("--revision", default="local")
    on_gpu.add_argument("--data", type=Path, default=Path("src/ragtune/datasets/scifact"))
    on_gpu.add_argument("--repeats", type=int, default=3)
    on_gpu.add_argument("--ray", action="store_true")
    on_gpu.add_argument("--paths", nargs="*", default=[], help="only these paths (default: all but ray)")
    on_gpu.add_argument("--device", default="cuda", help="cpu: a dry run of this script, to check it")
    on_gpu.add_argument("--limit", type=int, default=None, help="only the first N documents (dry runs)")
    on_gpu.add_argument("--out", type=Path, required=True)
    here = steps.add_parser("score")
    here.add_argument("--vectors", type=Path, required=True)
    here.add_argument("--data", type=Path, default=Path("src/ragtune/datasets/scifact"))
    here.add_argument("--out", type=Path, default=Path("bench/results/encode-cuda.json"))
    args = parser.parse_args()
    measure(args) if args.step == "measure" else score(args)


if __name__ == "__main__":
    main()
