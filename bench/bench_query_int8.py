"""Query encoding in int8 (OpenVINO + NNCF post-training quantization) against the bf16 query path: speed and
SciFact dense quality. A measurement for issue 21 (the server's hybrid cost is mostly query encoding); ragtune does
not ship it: NNCF is not a ragtune dependency.

The bf16 model is the OpenVINO copy ragtune converts for queries; the int8 one is that model quantized by
`nncf.quantize` (transformer preset) with 300 corpus titles as calibration data (no test or train queries).
Passage vectors come from the store (as `ragtune index` wrote them); only the queries change.

Usage: pip install --target /tmp/nncf nncf
       python bench/bench_query_int8.py --store STORE [--data ../shared/data/scifact] [--nncf-path /tmp/nncf]
                                        [--out bench/results/query-int8.json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

from ragtune import open_store
from ragtune.embedding import Embedder
from ragtune.encoders import converted_model_path
from ragtune.evaluation import load_beir, per_query_scores
from ragtune.evaluation.metrics import mean_scores
from ragtune.evaluation.runner import documents_run
from ragtune.models import resolve_model

LENGTH_STEP = 16  # as the server's query path pads
BATCHES = (1, 4, 8)


def padded_inputs(tokenizer, names: list[str], texts: list[str]) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    encoded = tokenizer(texts, truncation=True, max_length=256)
    length = -(-max(len(ids) for ids in encoded["input_ids"]) // LENGTH_STEP) * LENGTH_STEP
    inputs = {name: np.zeros((len(texts), length), dtype=np.int64) for name in names}
    for row in range(len(texts)):
        for name in names:
            inputs[name][row, : len(encoded[name][row])] = encoded[name][row]
    return inputs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True, help="a SciFact store built by `ragtune index` (embedded engine)")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--nncf-path", default=None, help="a folder NNCF was installed into with pip --target")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/query-int8.json"))
    args = parser.parse_args()
    if args.nncf_path:
        sys.path.append(args.nncf_path)  # after the environment's own packages: its numpy is not the one used
    import nncf
    import openvino as ov

    ref = resolve_model("minilm")
    tokenizer = Embedder(ref, purpose="queries").tokenizer
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]
    titles = [json.loads(line)["title"] for line in (args.data / "corpus.jsonl").open()]
    claims = [json.loads(line)["text"] for line in (args.data / "queries.jsonl").open()]
    core = ov.Core()
    model = core.read_model(str(converted_model_path(ref)))
    calibration = [padded_inputs(tokenizer, names, [t]) for t in random.Random(0).sample(titles, 300)]
    started = time.perf_counter()
    quantized = nncf.quantize(model, nncf.Dataset(calibration), model_type=nncf.ModelType.TRANSFORMER, subset_size=300)
    results: dict[str, object] = {"date": time.strftime("%Y-%m-%d"), "quantize_seconds": time.perf_counter() - started}
    config = {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 2}
    compiled = {"bf16": core.compile_model(model, "CPU", config), "int8": core.compile_model(quantized, "CPU", config)}
    queries = titles + claims
    speed: dict[str, list[float]] = {}
    for round_number in range(2):  # in turns, so a slow spell hits both
        for name, model_compiled in compiled.items():
            request = model_compiled.create_infer_request()
            for batch in BATCHES:
                rng, done, start = random.Random(round_number), 0, time.perf_counter()
                while time.perf_counter() - start < args.seconds:
                    request.infer(padded_inputs(tokenizer, names, rng.sample(queries, batch)))
                    done += batch
                speed.setdefault(f"{name} batch {batch}", []).append(done / (time.perf_counter() - start))
    results["queries_per_second"] = speed

    def encode(name: str, texts: list[str]) -> np.ndarray:
        request = compiled[name].create_infer_request()
        blocks = [next(iter(request.infer(padded_inputs(tokenizer, names, texts[i : i + 16])).values()))
                  for i in range(0, len(texts), 16)]  # fmt: skip
        vectors = np.vstack(blocks)
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)

    with open_store(args.store) as store:
        for split in ("test", "train"):
            dataset = load_beir(args.data, split)
            texts = list(dataset.queries.values())
            vectors = {name: encode(name, texts) for name in compiled}
            for name, query_vectors in vectors.items():
                hits = [store.hits(ranked) for ranked in store.dense_search(query_vectors, 100)]
                run = documents_run(dict(zip(dataset.queries, hits)))
                scores = mean_scores(per_query_scores(dataset.qrels, run, ["ndcg@10"]))
                results[f"{split} {name} dense ndcg@10"] = scores["ndcg@10"]
            cosines = (vectors["bf16"] * vectors["int8"]).sum(axis=1)
            results[f"{split} cosine bf16 vs int8 (mean, min)"] = [float(cosines.mean()), float(cosines.min())]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
