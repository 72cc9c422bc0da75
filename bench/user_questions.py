"""Stand-ins for a user's own questions: a seeded sample of a BEIR split's queries written in the format
`quickstart --queries` and `--examples` (and `pairs --examples`) read, `{"query", "relevant": [document ids]}`.

Usage: python bench/user_questions.py --data ../shared/data/pubmedqa --count 12 --seed 13 --out examples.jsonl
       python bench/user_questions.py --data ../shared/data/pubmedqa --count 100 --seed 7 --exclude examples.jsonl
           --out dev.jsonl
`--count 12 --seed 13` on the train split draws the same questions as `bench_pairs.py --examples-from-train 12`.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from ragtune.evaluation import load_beir


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--exclude", type=Path, action="append", default=[],
                        help="a file this script wrote: its questions are not drawn again")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    split = load_beir(args.data, args.split)
    taken = {json.loads(line)["query"] for path in args.exclude for line in path.read_text().splitlines() if line}
    ids = sorted(split.qrels)
    if taken:  # a plain draw (no exclusions) stays the one bench_pairs.py makes
        ids = [q for q in ids if split.queries[q] not in taken]
    chosen = random.Random(args.seed).sample(ids, args.count)
    lines = [json.dumps({"query": split.queries[q], "relevant": sorted(split.qrels[q])}) + "\n" for q in chosen]
    args.out.write_text("".join(lines), encoding="utf-8")
    print(f"{args.out}: {len(lines)} {args.split} questions of {args.data.name} (seed {args.seed})")


if __name__ == "__main__":
    main()
