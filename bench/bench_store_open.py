"""Opening a built embedded store for reading: the dense index memory-mapped (what readers do) against read into
memory, each in a fresh process, in turns: open seconds, resident memory after opening and after single-query dense
searches, search p50. Resident memory counts the mapped file's pages a process has touched; those pages live in the
page cache, shared by every process that maps the file (e.g. `ragtune serve --workers N`).

Usage: python bench/bench_store_open.py --store DIR [--rounds 2] [--queries 200] [--out bench/results/store-open.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ragtune.store import open_store
from ragtune.store import dense as dense_module


def _resident_gb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 1e9


def measure(store: str, memory_map: bool, queries: int) -> dict[str, float]:
    if not memory_map:  # the reader's load with the mapping turned off
        load = dense_module.FaissDenseIndex.load.__func__  # type: ignore[attr-defined]
        dense_module.FaissDenseIndex.load = classmethod(lambda cls, path, memory_map=False: load(cls, path, False))  # type: ignore[method-assign, assignment]
    started = time.perf_counter()
    opened = open_store(store)
    open_s = time.perf_counter() - started
    after_open = _resident_gb()
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((queries, opened.manifest.dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    latency = []
    for vector in vectors:
        started = time.perf_counter()
        opened.dense_search(vector[None, :], 10)
        latency.append(time.perf_counter() - started)
    return {"open_s": round(open_s, 3), "resident_gb_after_open": round(after_open, 3),
            "resident_gb_after_queries": round(_resident_gb(), 3), "search_p50_ms": round(1000 * float(np.median(latency)), 3)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("bench/results/store-open.json"))
    parser.add_argument("--one", choices=["mapped", "loaded"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.store, args.one == "mapped", args.queries)))
        return
    runs: dict[str, list[dict[str, float]]] = {"mapped": [], "loaded": []}
    for _ in range(args.rounds):
        for kind in runs:
            command = [sys.executable, __file__, "--store", args.store, "--queries", str(args.queries), "--one", kind]
            runs[kind].append(json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout))
    result = {"date": time.strftime("%Y-%m-%d"), "store": args.store, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
