"""Does `torch.compile` (inductor, with weight freezing) speed up ragtune's torch bf16 document encoding on this CPU,
once its compile time is counted? Eager and compiled passes interleaved on the same texts, each repeated.

Usage: python bench/bench_encode_compile.py [--data ../shared/data/scifact] [--texts 640] [--rounds 3]
    [--dynamic] [--full-length] [--out bench/results/encode-compile.json]
`--full-length` keeps only documents that fill all 256 tokens (one shape: the compiled graph is built once);
without it the first documents of the corpus, of every length (a new graph per padded length unless `--dynamic`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ragtune.models import load_sentence_transformer, resolve_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--texts", type=int, default=640)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dynamic", action="store_true")
    parser.add_argument("--full-length", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/encode-compile.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_sentence_transformer(resolve_model("minilm").path, "bf16", "cpu").eval()
    texts: list[str] = []
    with (args.data / "corpus.jsonl").open() as corpus:
        for line in corpus:
            row = json.loads(line)
            text = f"{row.get('title', '')} {row['text']}".strip()
            if not args.full_length or len(model.tokenizer(text)["input_ids"]) >= model.max_seq_length:
                texts.append(text)
            if len(texts) >= args.texts:
                break

    import torch._inductor.config as inductor_config

    inductor_config.freezing = True  # weights become constants: oneDNN packs them once for AMX
    transformer = model[0].model
    eager_forward = transformer.forward
    compiled_forward = torch.compile(transformer.forward, dynamic=args.dynamic)

    def docs_per_second(forward) -> tuple[float, torch.Tensor]:  # type: ignore[no-untyped-def]
        transformer.forward = forward
        with torch.inference_mode():
            started = time.perf_counter()
            vectors = model.encode(texts, batch_size=32, convert_to_tensor=True).float()
            return len(texts) / (time.perf_counter() - started), vectors

    started = time.perf_counter()
    docs_per_second(compiled_forward)  # compiles every shape it meets
    first_pass_seconds = time.perf_counter() - started
    eager_rates, compiled_rates = [], []
    for _ in range(args.rounds):
        rate, eager_vectors = docs_per_second(eager_forward)
        eager_rates.append(rate)
        rate, compiled_vectors = docs_per_second(compiled_forward)
        compiled_rates.append(rate)
    cosine = torch.nn.functional.cosine_similarity(eager_vectors, compiled_vectors)
    result = {
        "texts": len(texts),
        "full_length": args.full_length,
        "dynamic": args.dynamic,
        "first_compiled_pass_seconds": round(first_pass_seconds, 1),
        "eager_docs_per_s": [round(r, 1) for r in eager_rates],
        "compiled_docs_per_s": [round(r, 1) for r in compiled_rates],
        "speedup_of_means": round(sum(compiled_rates) / sum(eager_rates), 3),
        "cosine_min": round(cosine.min().item(), 6),
        "torch": torch.__version__,
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
