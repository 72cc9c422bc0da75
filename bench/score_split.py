"""Score models on another split of a BEIR dataset than the one a choice was made on: the confirmation the brief asks
for ("queries that played no part in choosing"). Queries a run showed its generator (`bench_pairs.py
--examples-from-train`, listed in its summary.json) are left out.

Usage: python bench/score_split.py --data ../shared/data/medquad --split train --models minilm runs/pairs/X/tuned ...
       --exclude-shown bench/results/pairs-X/summary.json --out bench/results/pairs-X/train-queries
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ragtune.evaluation import evaluate_systems, load_beir, write_report
from ragtune.evaluation.dataset import subset


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--models", nargs="+", required=True, help="the first is the baseline")
    parser.add_argument("--modes", nargs="+", default=["dense", "hybrid"])
    parser.add_argument("--exclude-shown", type=Path, action="append", default=[],
                        help="a bench_pairs summary.json whose shown example questions are left out")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    dataset = load_beir(args.data, args.split)
    shown = {e["question"] for path in args.exclude_shown
             for e in json.loads(path.read_text())["pairs"].get("examples_shown", [])}  # fmt: skip
    kept = [q for q, text in dataset.queries.items() if text not in shown]
    dataset = subset(dataset, kept)
    print(f"{len(kept)} {args.split} queries ({len(shown)} shown to the generator left out)", flush=True)
    evaluation = evaluate_systems(dataset, models=args.models, modes=args.modes, k=100)
    data = write_report(evaluation, args.out)
    for system in data["systems"]:
        print(system["label"], round(system["metrics"]["ndcg@10"], 4))


if __name__ == "__main__":
    main()
