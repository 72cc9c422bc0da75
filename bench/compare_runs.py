"""Two runs' systems compared query by query on the same test split (paired t-test, as every report here), with a
breakdown by a query metadata field where the dataset has one (MedQuAD's `qtype`: symptoms, treatment, ...).

Usage: python bench/compare_runs.py A/metrics.json[.gz]:tuned:dense B/metrics.json:tuned:dense
       [--data ../shared/data/medquad --by qtype] [--metric ndcg@10]
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import defaultdict
from pathlib import Path

from ragtune.evaluation import compare


def per_query(spec: str, metric: str) -> dict[str, float]:
    path, label = spec.split(":", 1)
    with (gzip.open if path.endswith(".gz") else open)(path, "rt", encoding="utf-8") as handle:  # type: ignore[operator]
        scores: dict[str, float] = json.load(handle)["per_query"][label][metric]  # query → score
    return scores


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("baseline", help="METRICS_JSON:SYSTEM_LABEL")
    parser.add_argument("system", help="METRICS_JSON:SYSTEM_LABEL")
    parser.add_argument("--metric", default="ndcg@10")
    parser.add_argument("--data", type=Path, default=None, help="the BEIR folder, for --by")
    parser.add_argument("--by", default=None, help="a field of the queries' metadata to break the comparison down by")
    args = parser.parse_args()
    if args.by and not args.data:
        parser.error("--by reads the queries' metadata: give --data, the BEIR folder")
    a, b = per_query(args.baseline, args.metric), per_query(args.system, args.metric)
    if set(a) != set(b):
        raise SystemExit(f"the runs scored different queries ({len(a)} vs {len(b)}): not a paired comparison")
    rows = {"all": list(a)}
    if args.by:
        groups: dict[str, list[str]] = defaultdict(list)
        for line in (args.data / "queries.jsonl").open(encoding="utf-8"):
            record = json.loads(line)
            if record["_id"] in a:
                groups[str(record.get("metadata", {}).get(args.by))].append(record["_id"])
        rows |= dict(sorted(groups.items(), key=lambda item: -len(item[1])))
    print(f"| queries | n | {args.metric} A | B | Δ | t-test p | better / worse |\n|---|---:|---:|---:|---:|---:|---:|")
    for name, queries in rows.items():
        result = compare(args.metric, {q: a[q] for q in queries}, {q: b[q] for q in queries})
        print(f"| {name} | {len(queries)} | {result.baseline:.4f} | {result.system:.4f} | {result.delta:+.4f} "
              f"| {result.t_test_p:.2g} | {result.improved} / {result.worse} |")


if __name__ == "__main__":
    main()
