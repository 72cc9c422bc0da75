"""Load test of `/search` on loopback: N concurrent clients for T seconds against a running `ragtune serve`.

Usage: ragtune serve --store STORE --port 8765 &  python bench/bench_serve.py --url http://127.0.0.1:8765
Bounded: stops after --seconds; loopback only (refuses any other host).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8765")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--queries", type=Path, default=Path("data/scifact/queries.jsonl"))
    parser.add_argument("--mode", default="hybrid")
    parser.add_argument("--server-pid", type=int, default=None)
    args = parser.parse_args()
    if urlparse(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("this load test only targets loopback addresses")
    queries = [json.loads(line)["text"] for line in args.queries.open()]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    deadline = time.perf_counter() + args.seconds
    memory: list[float] = []

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(timeout=30) as http:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                response = http.post(args.url + "/search", json={"query": rng.choice(queries), "k": 10, "mode": args.mode})
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    if args.server_pid:
        memory.append(rss_mb(args.server_pid))
    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        time.sleep(5)
        if args.server_pid:
            memory.append(rss_mb(args.server_pid))
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    result = {
        "date": time.strftime("%Y-%m-%d"), "url": args.url, "mode": args.mode, "clients": args.clients,
        "seconds": wall, "requests": len(ordered), "throughput_rps": len(ordered) / wall, "statuses": statuses,
        "server_5xx": sum(c for s, c in statuses.items() if s >= 500),
        "p50_ms": 1000 * statistics.median(ordered), "p99_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))],
        "server_rss_mb_samples": memory, "cpu_count": os.cpu_count(),
    }  # fmt: skip
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
