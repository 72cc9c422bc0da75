"""Fine-tune all-MiniLM-L6-v2 on SciFact train (labelled path) and score base vs tuned on SciFact test.

Dev split for best-checkpoint selection and early stopping: 10% of the *train* queries (seeded), against their
positives, their mined negatives and 1,000 other corpus abstracts. Because that pool depends on the mining, runs
are compared on the same held-out queries against the whole corpus ("held-out" in summary.json: base and tuned,
dense and hybrid), which no run's mining touches. Test is used only for the final report.
Usage: python bench/bench_finetune.py --name NAME [--loss mnrl] [--negatives 1] [--epochs 2] ...
       python bench/bench_finetune.py --name NAME --evaluate-only MODEL_DIR ...  (held-out table of trained models)
With --teacher-reranker DIR (a cross-encoder, e.g. bench_reranker.py's): negatives come from the hybrid ranking's top
20 and the reranker scores them (`ragtune mine --teacher cross-encoder`), for --loss margin-mse / mnrl-margin-mse.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ragtune.evaluation import evaluate_systems, load_beir, write_report
from ragtune.evaluation.dataset import subset
from ragtune.models import resolve_model
from ragtune.training.examples import examples_from_beir, held_out_queries, write_training_jsonl
from ragtune.training.finetune import LOW_MEMORY_TRAINING, FinetuneConfig, finetune
from ragtune.training.mining import CandidateSource, MiningConfig, mine_hard_negatives
from ragtune.training.teacher import TeacherConfig, teacher_scored_examples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--name", required=True)
    parser.add_argument("--loss", default="mnrl")
    parser.add_argument("--negatives", type=int, default=1)
    parser.add_argument("--source", default="dense")
    parser.add_argument("--range-min", type=int, default=3)
    parser.add_argument("--margin", type=float, default=0.05)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--budget-minutes", type=float, default=14.5)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training")
    parser.add_argument("--eval-steps", type=int, default=None)
    parser.add_argument("--low-memory", action="store_true", help="the quickstart's training settings")
    parser.add_argument("--teacher-reranker", type=Path, default=None)
    parser.add_argument("--teacher-pool", type=int, default=20)
    parser.add_argument("--evaluate-only", type=Path, nargs="+", default=None,
                        help="trained model folders: score them on the held-out queries (no training; test with --test)")
    parser.add_argument("--skip-test", action="store_true", help="train and score the held-out queries; leave test unread")
    parser.add_argument("--test", action="store_true", help="with --evaluate-only: also the test table")
    args = parser.parse_args()
    out = Path("bench/results") / f"finetune-{args.name}"
    out.mkdir(parents=True, exist_ok=True)
    if args.evaluate_only:
        held_out = heldout_table(args.data, ["minilm", *map(str, args.evaluate_only)])
        (out / "heldout.json").write_text(json.dumps(held_out, indent=2))
        print(json.dumps(held_out, indent=2))
        if args.test:
            data = write_report(evaluate_systems(load_beir(args.data, "test"), models=["minilm", *map(str, args.evaluate_only)],
                                                 modes=["dense", "hybrid"], k=100), out)  # fmt: skip
            print(json.dumps({s["label"]: s["metrics"]["ndcg@10"] for s in data["systems"]}, indent=2))
        return
    work = Path("runs") / args.name
    timings: dict[str, float] = {}

    examples, corpus = examples_from_beir(args.data, "train")
    start = time.perf_counter()
    if args.teacher_reranker is not None:
        teacher = TeacherConfig(kind="cross-encoder", cross_encoder=str(args.teacher_reranker),
                                negatives=args.negatives, pool=args.teacher_pool)  # fmt: skip
        examples, teacher_report = teacher_scored_examples(examples, list(corpus.values()), resolve_model("minilm"),
                                                           teacher)  # fmt: skip
        print("teacher:", teacher_report)
    elif args.negatives > 0:
        mining = MiningConfig(
            num_negatives=args.negatives, range_min=args.range_min, relative_margin=args.margin,
            source=CandidateSource(args.source),
        )  # fmt: skip
        examples, report = mine_hard_negatives(examples, list(corpus.values()), resolve_model("minilm"), mining)
        print("mining:", report)
    timings["mining_s"] = time.perf_counter() - start
    write_training_jsonl(work / "train-mined.jsonl", examples)

    config = FinetuneConfig(
        base="minilm", loss=args.loss, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
        max_seq_length=args.max_seq_length, max_negatives=max(1, args.negatives), threads=args.threads,
        time_budget_minutes=args.budget_minutes, bf16=args.bf16, eval_steps=args.eval_steps,
        **(LOW_MEMORY_TRAINING if args.low_memory else {}),
    )  # fmt: skip
    result = finetune(examples, work / f"tuned-{args.name}", config, distractor_pool=list(corpus.values()), show_progress=False)
    timings["train_s"] = result.train_seconds
    print("dev base", result.base_dev.get("ndcg@10"), "tuned", result.tuned_dev.get("ndcg@10"))

    start = time.perf_counter()
    held_out = heldout_table(args.data, ["minilm", str(work / f"tuned-{args.name}")])
    print("held-out:", json.dumps(held_out))
    summary = {
        "args": vars(args) | {"data": str(args.data)}, "timings": timings, "steps": result.steps,
        "dev_base": result.base_dev, "dev_tuned": result.tuned_dev, "train_data": result.data, "held_out": held_out,
    }  # fmt: skip
    if not args.skip_test:
        test = load_beir(args.data, "test")
        evaluation = evaluate_systems(test, models=["minilm", str(work / f"tuned-{args.name}")], modes=["dense", "hybrid"], k=100)
        timings["eval_s"] = time.perf_counter() - start
        data = write_report(evaluation, out)
        summary |= {"test": {s["label"]: s["metrics"] for s in data["systems"]}, "comparisons": data["comparisons"]}
        print(json.dumps({k: summary[k] for k in ("timings", "test")}, indent=2))
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))


def heldout_table(data: Path, models: list[str]) -> dict[str, Any]:
    """nDCG@10 and Recall@100 of each (model, dense/hybrid) on the train queries `finetune` holds out (its own split:
    same fraction and seed) against the whole corpus."""
    train = load_beir(data, "train")
    examples, _ = examples_from_beir(data, "train")
    held = held_out_queries(train, examples, FinetuneConfig().dev_fraction, FinetuneConfig().seed)
    dev = subset(train, list(held), "heldout")
    evaluation = evaluate_systems(dev, models=models, modes=["dense", "hybrid"], k=100, show_progress=False)
    systems = {s.label: {m: round(s.metrics[m], 4) for m in ("ndcg@10", "recall@100")} for s in evaluation.systems}
    return {"queries": len(dev.queries), "systems": systems}


if __name__ == "__main__":
    main()
