"""Two tuned models of the same recipe (other seeds) averaged weight by weight — a "model soup" — and that soup
merged ½ with the base, scored dense on a BEIR split beside the base. Each tuned model's own score is in its run's
`bench_selection.py` output.

    python bench/bench_soup.py /tmp/qs/scifact-docs-gist/tuned-model /tmp/qs/scifact-docs-gist-seed43/tuned-model \
        --data ../shared/data/scifact --out bench/results/soup-scifact-gist-42-43
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ragtune.evaluation import evaluate_systems, load_beir, write_report
from ragtune.training.finetune import merge_with_base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--splits", nargs="+", default=["test", "train"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    models = Path("runs/soup") / args.out.name  # not under bench/results: 90 MB a model
    soup = merge_with_base(args.first, str(args.second), 0.5, models / "soup")
    soup_and_base = merge_with_base(soup, "minilm", 0.5, models / "soup-merged")
    summary = {}
    for split in args.splits:
        evaluation = evaluate_systems(load_beir(args.data, split), models=["minilm", str(soup), str(soup_and_base)],
                                      modes=["dense"], k=100)  # fmt: skip
        data = write_report(evaluation, args.out / split)
        summary[split] = {name: [c for c in comps if c["metric"] == "ndcg@10"]
                          for name, comps in data["comparisons"].items()}  # fmt: skip
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
