"""Peak memory and seconds per step of fine-tuning MiniLM on SciFact batches, with and without the low-memory
settings (no attention dropout, gradient checkpointing).

    python bench/bench_train_memory.py --train quickstart/train-mined.jsonl

Each variant trains 6 steps of MNRL (batch 32, one mined negative, 256 tokens, bf16 autocast where the CPU has it)
in a fresh process and reports its peak RSS (VmHWM) and the seconds per step after the first two.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

VARIANTS = {
    "plain": {},
    "gradient checkpointing": {"gradient_checkpointing": True},
    "no attention dropout": {"attention_dropout": 0.0},
    "no attention dropout + checkpointing (--low-memory)": {"attention_dropout": 0.0, "gradient_checkpointing": True},
}

RUN = """
import json, sys, time
from ragtune.models import inference_precision
from ragtune.training.examples import read_training_jsonl
from ragtune.training.finetune import FinetuneConfig, finetune
train, out, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
examples = read_training_jsonl(train)[: 32 * 7]  # 6 training steps after the 10 % dev hold-out
times = []
config = FinetuneConfig(epochs=1, batch_size=32, eval_steps=1000, dev_distractors=50,
                        bf16=inference_precision() == "bf16", **settings)
result = finetune(examples, out, config, on_step_time=lambda step, planned, seconds: times.append(seconds))
status = open("/proc/self/status").read()
print(json.dumps({"steps": result.steps, "seconds_per_step": times[0],
                  "peak_mib": int(status.split("VmHWM:")[1].split()[0]) // 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", required=True, help="mined training JSONL (the quickstart's train-mined.jsonl)")
    args = parser.parse_args()
    rows = []
    for name, settings in VARIANTS.items():
        with tempfile.TemporaryDirectory() as tmp:
            done = subprocess.run([sys.executable, "-c", RUN, args.train, f"{tmp}/model", json.dumps(settings)],
                                  capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            print(f"{name}: failed: {done.stderr[-1500:]}")
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append((name, result))
        print(f"{name}: {result['seconds_per_step']:.1f} s/step (first 2 steps), peak RSS {result['peak_mib']} MiB",
              flush=True)  # fmt: skip
    print(json.dumps(dict(rows), indent=2))


if __name__ == "__main__":
    main()
