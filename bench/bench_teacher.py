"""Label-free recipes side by side on one corpus: the same synthetic pairs (ict + heading, as `quickstart --docs`),
trained with MNRL on a mined negative (today's default) or distilled from the hybrid teacher
(`ragtune.training.teacher`), scored on the corpus's real questions, which no step reads.

Decisions are made on a sample of the TRAIN split's questions (`--dev-sample`); the test split confirms.
Usage: python bench/bench_teacher.py --data ../shared/data/scifact --recipes mnrl distill mnrl-distill
       [--dev-sample 1000] [--negatives 2] [--epochs 1] [--merge-base 0.5]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from ragtune.corpus import ChunkingConfig
from ragtune.evaluation import evaluate_systems, load_beir, write_report
from ragtune.evaluation.dataset import subset
from ragtune.evaluation.runner import default_cache_dir, eval_store_dir
from ragtune.models import inference_precision, resolve_model
from ragtune.store import index_sources, open_store
from ragtune.training.examples import TrainingExample, read_training_jsonl
from ragtune.training.finetune import LOW_MEMORY_TRAINING, FinetuneConfig, finetune, merge_with_base
from ragtune.training.mining import MiningConfig, mine_hard_negatives
from ragtune.training.pairs import PairMethod, PairsConfig, build_pairs, same_document_texts
from ragtune.training.teacher import TeacherConfig, teacher_scored_examples

TRAIN_PAIRS = 3200  # as quickstart --docs (DOCS_TRAIN_PAIRS)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--recipes", nargs="+", default=["mnrl", "distill", "mnrl-distill"])
    parser.add_argument("--dev-sample", type=int, default=1000, help="train-split questions scored for decisions")
    parser.add_argument("--negatives", type=int, default=2)
    parser.add_argument("--dense-weight", type=float, default=0.5)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--merge-base", type=float, default=None)
    parser.add_argument("--test", action="store_true", help="also score the test split")
    parser.add_argument("--modes", nargs="+", default=["dense", "hybrid"])
    args = parser.parse_args()
    name = args.data.name
    work, out = Path("runs/teacher") / name, Path("bench/results") / f"teacher-{name}"
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    test = load_beir(args.data, "test")
    model = resolve_model("minilm")
    store_dir = eval_store_dir(default_cache_dir(), test, model.revision, ChunkingConfig())
    index_sources(store_dir, [test.corpus_path], model="minilm", show_progress=False)

    pairs_file = work / "pairs.jsonl"
    timings: dict[str, float] = {}
    if not pairs_file.exists():
        started = time.perf_counter()
        for method in (PairMethod.ict, PairMethod.heading):
            build_pairs(store_dir, pairs_file, PairsConfig(method=method), show_progress=False)
        timings["pairs_s"] = time.perf_counter() - started
    rows = read_training_jsonl(pairs_file)
    rng = random.Random(13)
    examples = [TrainingExample(e.query, e.positive) for e in rng.sample(rows, min(TRAIN_PAIRS, len(rows)))]
    with open_store(store_dir) as store:
        corpus = list(store.passage_texts())
        never_negative = same_document_texts(store, pairs_file)

    summary: dict[str, object] = {"args": vars(args) | {"data": str(args.data)}, "pairs": len(rows),
                                  "examples": len(examples), "recipes": {}}  # fmt: skip
    train = load_beir(args.data, "train")
    sample = sorted(train.queries)
    random.Random(7).shuffle(sample)
    splits = {"train-sample": subset(train, sample[: args.dev_sample])}
    if args.test:
        splits["test"] = test
    systems = ["minilm"]
    for recipe in args.recipes:
        started = time.perf_counter()
        if recipe == "mnrl":
            data, report = mine_hard_negatives(examples, corpus, model, MiningConfig(num_negatives=1),
                                               never_negative=never_negative)  # fmt: skip
            report_json: dict[str, object] = dict(report.__dict__)
        else:
            teacher = TeacherConfig(negatives=args.negatives, dense_weight=args.dense_weight)
            data, teacher_report = teacher_scored_examples(examples, corpus, model, teacher, never_negative)
            report_json = teacher_report.to_json()
        prepare_s = time.perf_counter() - started
        config = FinetuneConfig(
            loss=recipe, epochs=args.epochs, threads=2, eval_steps=50, dev_distractors=300,
            bf16=inference_precision() == "bf16", **LOW_MEMORY_TRAINING,
        )  # fmt: skip
        tuned = work / f"tuned-{recipe}"
        result = finetune(data, tuned, config, distractor_pool=corpus)
        systems.append(str(tuned))
        if args.merge_base is not None:
            systems.append(str(merge_with_base(tuned, "minilm", args.merge_base, work / f"merged-{recipe}")))
        summary["recipes"][recipe] = {  # type: ignore[index]
            "prepare": report_json, "prepare_s": prepare_s, "train_s": result.train_seconds, "steps": result.steps,
            "dev_base": result.base_dev.get("ndcg@10"), "dev_tuned": result.tuned_dev.get("ndcg@10"),
        }  # fmt: skip
        print(recipe, json.dumps(summary["recipes"][recipe]), flush=True)  # type: ignore[index]
        for split, dataset in splits.items():  # after each recipe, so a long run reports as it goes
            started = time.perf_counter()
            evaluation = evaluate_systems(dataset, models=systems, modes=args.modes, k=100)
            timings[f"eval_{split}_s"] = time.perf_counter() - started
            data_json = write_report(evaluation, out / split)
            summary[split] = {s["label"]: s["metrics"]["ndcg@10"] for s in data_json["systems"]}
            summary[f"{split}_comparisons"] = data_json["comparisons"]
            print(split, json.dumps(summary[split], indent=1), flush=True)
        summary["timings"] = timings
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
