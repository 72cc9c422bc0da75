"""Fine-tuning throughput on this CPU: fp32 vs bf16 autocast, same data, same steps (MNRL, batch 32, 1 negative).

Usage: python bench/bench_train_speed.py TRAIN_MINED.jsonl [--steps 8]
Throughput only: whether bf16 hurts the result is measured by a full run (`ragtune finetune --bf16`), see BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from ragtune.models import resolve_model
from ragtune.training.examples import read_training_jsonl
from ragtune.training.finetune import FinetuneConfig, build_loss, training_dataset


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("train", type=Path)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("bench/results/train-speed.json"))
    args = parser.parse_args()
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

    torch.set_num_threads(2)
    examples = read_training_jsonl(args.train)[: args.batch_size * (args.steps + 2)]
    base = resolve_model("minilm")
    result = {"steps": args.steps, "batch_size": args.batch_size, "texts_per_example": 3}
    for precision in ("fp32", "bf16"):
        config = FinetuneConfig(batch_size=args.batch_size, bf16=precision == "bf16")
        model = SentenceTransformer(str(base.path), device="cpu")
        model.max_seq_length = config.max_seq_length
        with tempfile.TemporaryDirectory() as tmp:
            training = SentenceTransformerTrainingArguments(
                output_dir=tmp, max_steps=args.steps + 1, per_device_train_batch_size=args.batch_size,
                bf16=config.bf16, use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True,
                logging_steps=1000,
            )  # fmt: skip
            data = training_dataset(examples, "mnrl", 1)
            trainer = SentenceTransformerTrainer(model=model, args=training, train_dataset=data,
                                                 loss=build_loss(model, config, base))  # fmt: skip
            times: list[float] = []
            from transformers import TrainerCallback

            class Clock(TrainerCallback):
                def on_step_begin(self, *a, **k):  # type: ignore[no-untyped-def]
                    times.append(time.perf_counter())

                def on_train_end(self, *a, **k):  # type: ignore[no-untyped-def]
                    times.append(time.perf_counter())

            trainer.add_callback(Clock())
            trainer.train()
        seconds = times[-1] - times[1]  # the first step (warm-up) is not counted
        result[precision] = {"seconds_per_step": seconds / args.steps,
                             "examples_per_s": args.batch_size * args.steps / seconds}  # fmt: skip
        print(precision, result[precision], flush=True)
    result["bf16_speedup"] = result["bf16"]["examples_per_s"] / result["fp32"]["examples_per_s"]
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
