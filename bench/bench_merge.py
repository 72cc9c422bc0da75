"""Tuned models merged with their base (weights (1 − a) · tuned + a · base), scored dense on a BEIR test split.

Usage: python bench/bench_merge.py runs/pairs/NAME/tuned [...] [--alpha 0.5] [--split test] [--out DIR]
The alpha is fixed beforehand (0.5): choosing it on test would be tuning on test.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ragtune.evaluation import evaluate_systems, load_beir, write_report
from ragtune.training.finetune import merge_with_base


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("tuned", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--split", default="test", help="qrels split to score on (train: a second, unseen query set)")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=Path("bench/results/merge"))
    args = parser.parse_args()
    test = load_beir(args.data, args.split)
    merged = [
        merge_with_base(tuned, "minilm", args.alpha, tuned.with_name(f"{tuned.parent.name}-merged-{args.alpha:g}"))
        for tuned in args.tuned
    ]
    evaluation = evaluate_systems(test, models=["minilm", *map(str, merged)], modes=["dense"], k=100)
    data = write_report(evaluation, args.out)
    summary = {
        "split": args.split, "alpha": args.alpha, "tuned": [str(t) for t in args.tuned],
        "test": {s["label"]: s["metrics"]["ndcg@10"] for s in data["systems"]},
        "ndcg@10": {name: [c for c in comps if c["metric"] == "ndcg@10"] for name, comps in data["comparisons"].items()},
    }  # fmt: skip
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
