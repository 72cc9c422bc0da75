"""GPL on a finished `quickstart --docs` run: a cross-encoder trained on the run's own synthetic pairs (with their
mined negative) pseudo-labels each pair's positive and negatives drawn from the hybrid ranking, and the bi-encoder
learns the teacher's margins (MarginMSE), with the same pairs, batch, epochs, seed and low-memory settings as the
run's default (GISTEmbed) model. Both tuned models and the base are scored on real questions no step read.

    python bench/bench_gpl.py /tmp/qs/scifact-docs-gist --data ../shared/data/scifact --splits test train

Writes WORK (default runs/gpl/<run name>; the reranker and the teacher's scores are reused by a re-run with another
--loss) and bench/results/gpl-<run name>-<loss>/summary.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ragtune.corpus import ChunkingConfig
from ragtune.evaluation import evaluate_systems, load_beir, write_report
from ragtune.evaluation.runner import eval_store_dir
from ragtune.models import inference_precision, resolve_model
from ragtune.quickstart.pipeline import DEV_DISTRACTORS
from ragtune.store import open_store
from ragtune.training.examples import read_training_jsonl, write_training_jsonl
from ragtune.training.finetune import LOW_MEMORY_TRAINING, FinetuneConfig, finetune
from ragtune.training.pairs import same_document_texts
from ragtune.training.reranker import RerankerConfig, train_reranker
from ragtune.training.teacher import TeacherConfig, teacher_scored_examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished quickstart --docs folder")
    parser.add_argument("--data", type=Path, required=True, help="BEIR folder of real questions over the corpus")
    parser.add_argument("--splits", nargs="+", default=["test"])
    parser.add_argument("--work", type=Path)
    parser.add_argument("--negatives", type=int, default=2, help="teacher-scored negatives per pair")
    parser.add_argument("--reranker-epochs", type=float, default=1.0)
    parser.add_argument("--reranker-batch", type=int, default=16)
    parser.add_argument("--loss", default="margin-mse", help="margin-mse (GPL) or mnrl-margin-mse")
    args = parser.parse_args()
    work = args.work or Path("runs/gpl") / args.run.name
    out = Path("bench/results") / f"gpl-{args.run.name}-{args.loss}"
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    bf16 = inference_precision() == "bf16"
    timings: dict[str, float] = {}
    summary: dict[str, object] = {"args": {k: str(v) for k, v in vars(args).items()}, "timings": timings}

    reranker_dir = work / "reranker"
    started = time.perf_counter()
    reranked = train_reranker(
        read_training_jsonl(args.run / "train-mined.jsonl"), reranker_dir,
        RerankerConfig(negatives=1, epochs=args.reranker_epochs, batch_size=args.reranker_batch, bf16=bf16, threads=2),
    )  # fmt: skip
    timings["reranker_s"] = time.perf_counter() - started
    summary["reranker"] = {"steps": reranked.steps, "dev_before": reranked.dev_before, "dev_after": reranked.dev_after}
    print("reranker", json.dumps(summary["reranker"]), flush=True)

    heldout = load_beir(args.run / "heldout", "test")  # the run's own store of the corpus, as its mining used
    model = resolve_model("minilm")
    scored_file = work / f"teacher-{args.negatives}.jsonl"
    if not scored_file.exists():
        started = time.perf_counter()
        with open_store(eval_store_dir(args.run / "stores", heldout, model.revision, ChunkingConfig())) as store:
            corpus = list(store.passage_texts())
        with open_store(args.run / "docs-store") as source_store:  # a pair's sibling passages are no negatives
            never_negative = same_document_texts(source_store, args.run / "pairs.jsonl")
        teacher = TeacherConfig(kind="cross-encoder", cross_encoder=str(reranker_dir), negatives=args.negatives)
        scored, report = teacher_scored_examples(
            read_training_jsonl(args.run / "train-pairs.jsonl"), corpus, model, teacher, never_negative
        )
        write_training_jsonl(scored_file, scored)
        timings["teacher_s"] = time.perf_counter() - started
        summary["teacher"] = report.to_json()
        print("teacher", json.dumps(summary["teacher"]), flush=True)

    examples = read_training_jsonl(scored_file)
    tuned = work / f"tuned-{args.loss}"
    steps_per_epoch = max(1, len(examples) // 32)
    config = FinetuneConfig(
        loss=args.loss, epochs=1, batch_size=32, seed=42, threads=2, eval_steps=max(5, steps_per_epoch // 2),
        dev_distractors=DEV_DISTRACTORS, bf16=bf16, **LOW_MEMORY_TRAINING,
    )  # fmt: skip
    result = finetune(examples, tuned, config)
    summary["finetune"] = {"steps": result.steps, "train_s": result.train_seconds,
                           "dev_base": result.base_dev.get("ndcg@10"), "dev_tuned": result.tuned_dev.get("ndcg@10")}  # fmt: skip
    print("finetune", json.dumps(summary["finetune"]), flush=True)

    systems = ["minilm", str(args.run / "tuned-model"), str(tuned)]
    for split in args.splits:
        evaluation = evaluate_systems(load_beir(args.data, split), models=systems, modes=["dense", "hybrid"], k=100)
        data = write_report(evaluation, out / split)
        summary[split] = {s["label"]: s["metrics"]["ndcg@10"] for s in data["systems"]}
        summary[f"{split}_comparisons"] = data["comparisons"]
        print(split, json.dumps(summary[split], indent=1), flush=True)
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
