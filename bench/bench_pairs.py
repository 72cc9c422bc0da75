"""SciFact without labels: pairs from the corpus alone → mine → fine-tune → score base vs tuned on SciFact test.

No train qrels and no train queries are read: the pairs come from the passages of a store built from corpus.jsonl.
Dev for best-checkpoint selection: 10 % of the synthetic pairs (by query), never test.
Usage: python bench/bench_pairs.py --methods heading ict [--llm-limit 800] [--budget-minutes 10] [--name NAME]
       [--salient] [--merge-base 0.5] [--tsdae-minutes 10] [--loss gist] [--llm-batch-size 32 --llm-bf16]
       [--extra-pairs FILE ...]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from ragtune.corpus import ChunkingConfig
from ragtune.evaluation import evaluate_systems, load_beir, write_report
from ragtune.evaluation.runner import default_cache_dir, eval_store_dir
from ragtune.generation import load_generator
from ragtune.models import inference_precision, resolve_model
from ragtune.store import index_sources, open_store
from ragtune.training.examples import read_training_jsonl, write_training_jsonl
from ragtune.training.finetune import FinetuneConfig, finetune, merge_with_base
from ragtune.training.mining import MiningConfig, mine_hard_negatives
from ragtune.training.pairs import PairMethod, PairsConfig, QuestionExample, build_pairs, same_document_texts
from ragtune.training.tsdae import TsdaeConfig, store_sentences, tsdae_adapt


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--methods", nargs="+", default=["heading", "ict"])
    parser.add_argument("--name", default=None)
    parser.add_argument("--llm-limit", type=int, default=800, help="llm: passages drawn at random from the store")
    parser.add_argument("--llm-batch-size", type=int, default=8, help="llm: passages per generation batch")
    parser.add_argument("--llm-bf16", action="store_true",
                        help="llm: run the generator in bfloat16 (about 2x faster on a CPU with AMX, 2026-12-04)")
    parser.add_argument("--examples-from-train", type=int, default=0,
                        help="llm: N real train questions (with their passage) as the generator's examples, the way "
                        "a user gives a few of their own (`pairs --examples FILE`); test is never read")
    parser.add_argument("--examples-per-prompt", type=int, default=2)
    parser.add_argument("--loss", default="mnrl", help="the fine-tuning loss (the --docs quickstart's default: gist)")
    parser.add_argument("--per-passage", type=int, default=1)
    parser.add_argument("--budget-minutes", type=float, default=10.0)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--salient", action="store_true", help="ict: salient sentences instead of random ones")
    parser.add_argument("--round-trip", action="store_true", help="keep a pair only if hybrid finds its passage")
    parser.add_argument("--keep-siblings", action="store_true",
                        help="allow other passages of the pair's document as negatives (the old behaviour)")
    parser.add_argument("--tsdae-minutes", type=float, default=None,
                        help="first adapt MiniLM with TSDAE on the store's sentences for this long; tune from that")
    parser.add_argument("--extra-pairs", type=Path, nargs="*", default=[],
                        help="pairs files made earlier on the same corpus, trained on together with this run's")
    parser.add_argument("--merge-base", type=float, default=None,
                        help="also score the tuned model merged with the base: (1 − a) · tuned + a · base")
    args = parser.parse_args()
    name = args.name or "+".join(args.methods)
    work, out = Path("runs/pairs") / name, Path("bench/results") / f"pairs-{name}"
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    test = load_beir(args.data, "test")
    model = resolve_model("minilm")
    store_dir = eval_store_dir(default_cache_dir(), test, model.revision, ChunkingConfig())
    index_sources(store_dir, [test.corpus_path], model="minilm", show_progress=False)  # corpus only

    timings: dict[str, float] = {}
    reports = {}
    pair_files: list[Path] = []
    generator = None
    examples = train_examples(args.data, store_dir, args.examples_from_train) if args.examples_from_train else ()
    for method in args.methods:
        variant = method + ("-salient" if method == "ict" and args.salient else "") + ("-rt" if args.round_trip else "")
        if method == "llm" and examples:
            variant += f"-ex{len(examples)}x{args.examples_per_prompt}"
        # shared across runs on one corpus: generation is the slow part
        pairs_file = Path("runs/pairs") / f"{args.data.name}-{variant}.jsonl"
        if method == "llm" and generator is None:
            generator = load_generator("smollm2", precision="bf16" if args.llm_bf16 else "fp32")
        config = PairsConfig(method=PairMethod(method), per_passage=args.per_passage,
                             limit=args.llm_limit if method == "llm" else None, salient_sentences=args.salient,
                             round_trip=True if args.round_trip else None,
                             batch_size=args.llm_batch_size if method == "llm" else 8,
                             examples=examples if method == "llm" else (),
                             examples_per_prompt=args.examples_per_prompt)  # fmt: skip
        started = time.perf_counter()
        reports[method] = build_pairs(store_dir, pairs_file, config, generator, show_progress=False).to_json()
        reports[method]["pairs_in_file"] = len(read_training_jsonl(pairs_file))
        pair_files.append(pairs_file)
        timings[f"pairs_{method}_s"] = time.perf_counter() - started
        print(method, json.dumps(reports[method]), flush=True)
    if examples:
        reports["examples_shown"] = [e.__dict__ for e in examples]
    for extra in args.extra_pairs:
        reports[f"extra:{extra}"] = {"pairs_in_file": len(read_training_jsonl(extra))}
        pair_files.append(extra)
    examples = [e for pairs_file in pair_files for e in read_training_jsonl(pairs_file)]

    started = time.perf_counter()
    with open_store(store_dir) as store:
        corpus = list(store.passage_texts())
        never_negative = {} if args.keep_siblings else {
            q: texts for f in pair_files for q, texts in same_document_texts(store, f).items()
        }  # fmt: skip
    mined, mining = mine_hard_negatives(examples, corpus, model, MiningConfig(num_negatives=1),
                                        never_negative=never_negative)  # vectors from the shared cache
    timings["mining_s"] = time.perf_counter() - started
    write_training_jsonl(work / "train-mined.jsonl", mined)

    base = "minilm"
    if args.tsdae_minutes:
        tsdae_config = TsdaeConfig(threads=2, bf16=inference_precision() == "bf16",
                                   time_budget_minutes=args.tsdae_minutes)  # fmt: skip
        texts = store_sentences(store_dir, tsdae_config)
        adapted = tsdae_adapt(texts, work / "tsdae", tsdae_config)
        reports["tsdae"] = {k: v for k, v in adapted.__dict__.items() if k != "model_dir"}
        timings["tsdae_s"] = adapted.train_seconds
        print("tsdae", json.dumps(reports["tsdae"]), flush=True)
        base = str(work / "tsdae")
    config = FinetuneConfig(
        base=base, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, threads=2, loss=args.loss,
        time_budget_minutes=args.budget_minutes, bf16=inference_precision() == "bf16", dev_distractors=300,
    )  # fmt: skip
    result = finetune(mined, work / "tuned", config, distractor_pool=corpus, show_progress=False)
    timings["train_s"] = result.train_seconds
    systems = ["minilm", *([base] if base != "minilm" else []), str(work / "tuned")]
    if args.merge_base is not None:
        systems.append(str(merge_with_base(work / "tuned", "minilm", args.merge_base, work / "tuned-merged")))
    started = time.perf_counter()
    evaluation = evaluate_systems(test, models=systems, modes=["dense", "hybrid"], k=100)
    timings["eval_s"] = time.perf_counter() - started
    data = write_report(evaluation, out)
    summary = {
        "args": vars(args) | {"data": str(args.data), "extra_pairs": [str(p) for p in args.extra_pairs]},
        "pairs": reports, "examples": len(mined),
        "mining": mining.__dict__, "timings": timings, "steps": result.steps,
        "dev_base": result.base_dev, "dev_tuned": result.tuned_dev,
        "test": {s["label"]: s["metrics"] for s in data["systems"]}, "comparisons": data["comparisons"],
    }  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(json.dumps({k: summary[k] for k in ("timings", "test", "comparisons")}, indent=2, default=str))


def train_examples(data: Path, store_dir: Path, count: int, seed: int = 13) -> tuple[QuestionExample, ...]:
    """`count` train questions drawn at random, each with the first passage of a document judged relevant to it."""
    train = load_beir(data, "train")
    chosen = random.Random(seed).sample(sorted(train.qrels), count)
    with open_store(store_dir) as store:
        texts = store.document_texts([next(iter(train.qrels[q])) for q in chosen])
    return tuple(QuestionExample(train.queries[q], texts[next(iter(train.qrels[q]))][0]) for q in chosen)


if __name__ == "__main__":
    main()
