"""Encoding through a Ray cluster against the local path, on one machine, plus each engine's write rate: the numbers
the scaling model in BENCHMARKS.md is built from.

Runs, each from an empty embedding cache (so every passage is encoded): `ragtune index CORPUS` (local path),
`ragtune index CORPUS --ray local --ray-workers W` for each W given; then from a warm cache (nothing encoded, only the
write): the embedded engine and the PostgreSQL engine (its passages go in with COPY). Every run is the real command in
its own process. Vectors of the Ray store are compared with the local store's, passage by passage.

Usage: python bench/bench_ray.py [--corpus ../shared/data/scifact/corpus.jsonl] [--workers 1 2]
       [--out bench/results/ray.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ragtune.store import open_store
from ragtune.store.pg_server import start_server, stop_server


def index(corpus: Path, store: str, cache: Path, *extra: str) -> dict:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "ragtune", "index", str(corpus), "--store", store, "--json", *extra],
        env={**os.environ, "RAGTUNE_EMBEDDING_CACHE": str(cache)}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    report = json.loads(done.stdout)
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    return report


def min_cosine(a: str, b: str) -> float:
    with open_store(a) as left, open_store(b) as right:
        ids = [p.id for p in left.iter_passages()]
        return min(float(left.embedding(i) @ right.embedding(i)) for i in ids)


def copy_rate(address: str, rows: int, dimension: int = 384) -> dict[str, float]:
    """Raw `COPY … FROM STDIN (FORMAT BINARY)` of passage-like rows (id, 1 KB of text, a vector) into one table, as
    the PostgreSQL engine writes them: the ceiling on how fast any number of encoders can fill one database."""
    import psycopg
    from pgvector.psycopg import register_vector

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((rows, dimension)).astype(np.float32)
    text = "x" * 1000
    with psycopg.connect(address, autocommit=True) as db:
        db.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(db)
        db.execute(f"DROP TABLE IF EXISTS copy_bench; CREATE TABLE copy_bench (id text PRIMARY KEY, text text, "
                   f"embedding vector({dimension}))")  # fmt: skip
        started = time.perf_counter()
        with db.cursor() as cursor, cursor.copy("COPY copy_bench (id, text, embedding) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["text", "text", "vector"])
            for i in range(rows):
                copy.write_row([f"doc{i}#0", text, vectors[i]])
        seconds = time.perf_counter() - started
        db.execute("DROP TABLE copy_bench")
    return {"rows": rows, "seconds": round(seconds, 1), "rows_per_second": round(rows / seconds)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, default=Path("../shared/data/scifact/corpus.jsonl"))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=Path("bench/results/ray.json"))
    args = parser.parse_args()
    result: dict[str, object] = {"date": time.strftime("%Y-%m-%d"), "corpus": str(args.corpus), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        local = index(args.corpus, str(root / "local"), root / "cache-local.sqlite")
        result["local"] = {k: local[k] for k in ("passages_total", "encoded", "encode_seconds", "wall_seconds")}
        print(json.dumps(result["local"]), flush=True)
        runs = []
        for workers in args.workers:
            store = str(root / f"ray-{workers}")
            report = index(args.corpus, store, root / f"cache-ray-{workers}.sqlite", "--ray", "local",
                           "--ray-workers", str(workers))  # fmt: skip
            run = {
                "workers": workers, "encoded": report["encoded"], "wall_seconds": report["wall_seconds"],
                "per_worker": report["workers"], "min_cosine_vs_local": round(min_cosine(str(root / "local"), store), 6),
                "overhead_vs_local": round(report["wall_seconds"] / local["wall_seconds"], 2),
            }  # fmt: skip
            runs.append(run)
            print(json.dumps(run), flush=True)
        result["ray_local"] = runs
        warm = root / "cache-local.sqlite"
        embedded = index(args.corpus, str(root / "embedded-warm"), warm)
        data = root / "pg"
        address = start_server(data)
        try:
            pg = index(args.corpus, f"{address}?store=bench_ray", warm)
            result["postgresql_copy"] = copy_rate(address, rows=50_000)
        finally:
            stop_server(data)
        result["write_from_warm_cache"] = {
            name: {"passages": r["passages_total"], "encoded": r["encoded"], "wall_seconds": r["wall_seconds"],
                   "passages_per_second": round(r["passages_total"] / r["wall_seconds"], 1)}
            for name, r in (("embedded", embedded), ("postgresql", pg))
        }  # fmt: skip
        print(json.dumps(result["write_from_warm_cache"]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
