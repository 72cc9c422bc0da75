"""How well the quickstart's dev choice predicts real questions: every candidate system of a finished quickstart run
(BM25; base, tuned and merged models × dense, RRF and convex fusions) scored on a BEIR split of real queries, beside
its dev score.

Usage: python bench/bench_selection.py QUICKSTART_OUT --data BEIR_DIR [--split test] [--out FILE.json]
Prints the rank correlation of dev and real scores, and where the dev choice lands among the real results: its real
nDCG@10 against the real reference (the better of BM25 and the base hybrid) and the real best.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scipy import stats

from ragtune.evaluation import compare, load_beir
from ragtune.evaluation.selection import select_system


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path, help="a quickstart --out folder (with selection.json)")
    parser.add_argument("--data", type=Path, required=True, help="BEIR folder of real queries over the same corpus")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    dev = json.loads((args.run / "selection.json").read_text())
    models = list(dict.fromkeys(c["model"] for c in dev["candidates"]))
    real = select_system(load_beir(args.data, args.split), models, cache_dir=args.run / "stores")
    by_label = {c.label: c for c in real.candidates}
    rows = [(c["label"], c["ndcg@10"], by_label[c["label"]].score) for c in dev["candidates"]]
    spearman = stats.spearmanr([r[1] for r in rows], [r[2] for r in rows]).statistic
    kendall = stats.kendalltau([r[1] for r in rows], [r[2] for r in rows]).statistic
    chosen = by_label[dev["chosen"]["label"]]
    versus = compare("ndcg@10", real.reference.per_query, chosen.per_query)
    base_dense = next(c for c in real.candidates if c.model == models[0] and c.settings.mode.value == "dense")
    dense_vs_base = {}
    for candidate in real.candidates:
        if candidate.settings.mode.value == "dense" and candidate is not base_dense:
            test = compare("ndcg@10", base_dense.per_query, candidate.per_query)
            dense_vs_base[candidate.label] = {"delta": test.delta, "t_test_p": test.t_test_p,
                                              "randomization_p": test.randomization_p}  # fmt: skip
    summary = {
        "run": str(args.run), "data": str(args.data), "split": args.split, "real_queries": real.dev_queries,
        "dev_queries": dev["dev_queries"], "spearman": spearman, "kendall": kendall,
        "dev_choice": {"label": chosen.label, "real_ndcg@10": chosen.score},
        "real_reference": {"label": real.reference.label, "ndcg@10": real.reference.score},
        "real_best": {"label": real.best.label, "ndcg@10": real.best.score},
        "dev_choice_vs_real_reference": {"delta": versus.delta, "t_test_p": versus.t_test_p,
                                         "randomization_p": versus.randomization_p},
        "dense_vs_base_dense": dense_vs_base,
        "candidates": [{"label": label, "dev": d, "real": r} for label, d, r in rows],
    }  # fmt: skip
    out = args.out or args.run / f"selection-vs-{args.data.name}-{args.split}.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print("| system | dev nDCG@10 | real nDCG@10 |\n|---|---:|---:|")
    for label, d, r in sorted(rows, key=lambda row: -row[2]):
        print(f"| {label} | {d:.4f} | {r:.4f} |")
    print(json.dumps({k: v for k, v in summary.items() if k != "candidates"}, indent=2))


if __name__ == "__main__":
    main()
