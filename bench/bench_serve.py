"""Load test of `/search` on loopback: N concurrent clients for T seconds.

Against a running server:   python bench/bench_serve.py --url http://127.0.0.1:8765 --clients 8 --mode hybrid
Starting servers itself:    python bench/bench_serve.py --store STORE --label new --modes hybrid dense bm25 \\
                                --clients 8 32 --seconds 20 [--serve-args "--batch-window-ms 0"] [--src OTHER/src] \\
                                [--rounds 3] --out bench/results/serve.json
With `--store`, each round starts `ragtune serve` (the code under `--src` when given: an older checkout is the peer),
runs every (mode, clients) cell, reads the query batch sizes from /metrics and stops it. Several `--label`/`--src`
pairs (repeat the options) are run in turns, round after round, so a slow spell of the machine hits each alike.
`--load-generator wrk` drives the clients with wrk (Debian package `wrk`; C, one event loop per thread) instead of
Python threads, so on a 2-core machine the load generator takes less of the CPU the server is measured on; both keep
N connections each waiting for its answer before sending the next query (closed loop).
Bounded: stops after --seconds per cell; loopback only (refuses any other host).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
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


def load(url: str, queries: list[str], clients: int, seconds: float, mode: str, server_pid: int | None) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds
    memory: list[float] = []
    # the queries are sent in the order given (`main` shuffles them once and starts each cell where the last one
    # stopped), each once before any again: the server remembers recent query vectors, so a repeat is cheaper than
    # a new query; how many requests were repeats is reported
    pool: list[str] = []
    sent = 0

    def next_query() -> str:
        nonlocal sent
        with lock:
            if not pool:
                pool.extend(reversed(queries))
            sent += 1
            return pool.pop()

    def client() -> None:
        with httpx.Client(timeout=30) as http:
            while time.perf_counter() < deadline:
                query = next_query()
                started = time.perf_counter()
                response = http.post(url + "/search", json={"query": query, "k": 10, "mode": mode})
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    if server_pid:
        memory.append(rss_mb(server_pid))
    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        time.sleep(5)
        if server_pid:
            memory.append(rss_mb(server_pid))
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    p50, p99 = statistics.median(ordered), ordered[int(0.99 * (len(ordered) - 1))]
    return cell_result(url, mode, clients, queries, wall, len(ordered), sent, statuses, 1000 * p50, 1000 * p99, memory)


def cell_result(
    url: str, mode: str, clients: int, queries: list[str], seconds: float, requests: int, sent: int,
    statuses: dict[int, int], p50_ms: float, p99_ms: float, memory: list[float],
) -> dict:  # fmt: skip
    """One (mode, clients) cell as either load generator reports it: `requests` answered, `sent` queries handed out."""
    return {
        "date": time.strftime("%Y-%m-%d"), "url": url, "mode": mode, "clients": clients,
        "seconds": seconds, "requests": requests, "throughput_rps": requests / seconds, "statuses": statuses,
        "server_5xx": sum(c for s, c in statuses.items() if s >= 500), "p50_ms": p50_ms, "p99_ms": p99_ms,
        "server_rss_mb_samples": memory, "cpu_count": os.cpu_count(),
        "repeated_query_share": max(0, sent - len(set(queries))) / max(1, sent),
    }  # fmt: skip


WRK_SCRIPT = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = dofile("%(bodies)s")
local threads = {}
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end
function init(args)
  -- each thread walks the queries from its own offset, so no query repeats before every one was sent once
  position = math.floor((id - 1) * #bodies / %(threads)d)
  statuses = {}
end
function request()
  position = position %% #bodies + 1
  return wrk.format(nil, "/search", nil, bodies[position])
end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local merged = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do merged[status] = (merged[status] or 0) + count end
  end
  local parts = {}
  for status, count in pairs(merged) do table.insert(parts, string.format('"%%d": %%d', status, count)) end
  io.write(string.format('RESULT {"requests": %%d, "seconds": %%f, "p50_us": %%d, "p99_us": %%d, "errors": %%d, ' ..
    '"statuses": {%%s}}\n', summary.requests, summary.duration / 1e6, latency:percentile(50),
    latency:percentile(99), summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout, table.concat(parts, ", ")))
end
"""


def load_wrk(url: str, queries: list[str], clients: int, seconds: float, mode: str, server_pid: int | None) -> dict:
    """The same cell as `load`, driven by wrk: `clients` connections over min(clients, 2) wrk threads."""
    if shutil.which("wrk") is None:
        raise SystemExit("--load-generator wrk needs wrk on PATH (Debian: apt-get install wrk)")
    threads = min(clients, 2)
    with tempfile.TemporaryDirectory() as folder:
        bodies = Path(folder) / "bodies.lua"
        entries = ",\n".join(
            "[==[" + json.dumps({"query": query, "k": 10, "mode": mode}) + "]==]" for query in queries
        )
        bodies.write_text("return {\n" + entries + "\n}\n")
        script = Path(folder) / "search.lua"
        script.write_text(WRK_SCRIPT % {"bodies": bodies, "threads": threads})
        memory = [rss_mb(server_pid)] if server_pid else []
        command = ["wrk", "-t", str(threads), "-c", str(clients), "-d", f"{seconds:g}s", "--timeout", "30s",
                   "-s", str(script), url]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        while process.poll() is None:
            time.sleep(min(5, seconds))
            if server_pid and process.poll() is None:
                memory.append(rss_mb(server_pid))
        output = process.stdout.read() if process.stdout else ""
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    if process.returncode != 0 or not lines:
        raise SystemExit(f"wrk failed ({process.returncode}):\n{output}")
    summary = json.loads(lines[-1].removeprefix("RESULT "))
    statuses = {int(status): count for status, count in summary["statuses"].items()}
    requests = summary["requests"]
    cell = cell_result(url, mode, clients, queries, summary["seconds"], requests, requests, statuses,
                       summary["p50_us"] / 1000, summary["p99_us"] / 1000, memory)  # fmt: skip
    return cell | {"load_generator": "wrk", "socket_errors": summary["errors"]}


def batch_sizes(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    response = httpx.get(url + "/metrics", timeout=10)
    if response.status_code != 200:  # a server version without /metrics
        return {}
    values = {s.name: s.value for f in text_string_to_metric_families(response.text) for s in f.samples}
    count = values.get("ragtune_query_batch_size_count", 0.0)
    return {"batches": count, "mean_batch": values.get("ragtune_query_batch_size_sum", 0.0) / count if count else 0.0}


def start_server(store: str, port: int, serve_args: str, src: str | None) -> subprocess.Popen:
    environment = dict(os.environ) | ({"PYTHONPATH": src} if src else {})
    command = [sys.executable, "-c", "from ragtune.cli import app; app()", "serve", "--store", store, "--port",
               str(port), "--generator", "none", *shlex.split(serve_args)]  # fmt: skip
    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)  # fmt: skip
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                time.sleep(2)  # every worker ready
                return process
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        time.sleep(0.3)
    raise SystemExit("the server did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8765")
    parser.add_argument("--clients", type=int, nargs="+", default=[8])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--queries", type=Path, default=Path("../shared/data/scifact/queries.jsonl"))
    parser.add_argument(
        "--title-queries", type=Path, default=None,
        help="Also send the titles of this corpus.jsonl as queries, so a run sends fewer repeats (the server "
        "remembers the vectors of its last 1,024 query texts).",
    )  # fmt: skip
    parser.add_argument("--mode", default="hybrid")
    parser.add_argument("--server-pid", type=int, default=None)
    parser.add_argument("--store", default=None, help="start servers over this store (see above)")
    parser.add_argument("--label", action="append", default=None)
    parser.add_argument("--src", action="append", default=None, help="per --label: a src folder, or '-' for this one")
    parser.add_argument("--serve-args", action="append", default=None, help="per --label: extra `ragtune serve` args")
    parser.add_argument("--modes", nargs="+", default=None)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--load-generator", choices=["python", "wrk"], default="python")
    args = parser.parse_args()
    run_cell = load_wrk if args.load_generator == "wrk" else load
    if urlparse(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("this load test only targets loopback addresses")
    queries = [json.loads(line)["text"] for line in args.queries.open()]
    if args.title_queries:
        titles = (json.loads(line).get("title", "").strip() for line in args.title_queries.open())
        queries = list(dict.fromkeys([*queries, *(title for title in titles if title)]))
    order = random.Random(0).sample(queries, len(queries))
    queries = order
    sent = 0  # each cell starts where the previous one stopped, so no cell repeats what the server just encoded

    def next_queries(cell: dict) -> list[str]:
        nonlocal sent
        sent += cell["requests"]
        start = sent % len(order)
        return order[start:] + order[:start]

    if args.store is None:
        for clients in args.clients:
            cell = run_cell(args.url, queries, clients, args.seconds, args.mode, args.server_pid)
            queries = next_queries(cell)
            print(json.dumps(cell, indent=2))
        return
    labels = args.label or ["this"]
    sources = args.src or ["-"] * len(labels)
    extra = args.serve_args or [""] * len(labels)
    if not len(labels) == len(sources) == len(extra):
        raise SystemExit("give as many --src and --serve-args as --label")
    url = f"http://127.0.0.1:{args.port}"
    results: list[dict] = []
    for round_number in range(args.rounds):
        for label, src, serve_args in zip(labels, sources, extra, strict=True):
            server = start_server(args.store, args.port, serve_args, None if src == "-" else src)
            try:
                for mode in args.modes or [args.mode]:
                    for clients in args.clients:
                        cell = run_cell(url, queries, clients, args.seconds, mode, server.pid)
                        queries = next_queries(cell)
                        cell |= {"label": label, "round": round_number, "serve_args": serve_args}
                        results.append(cell)
                        print(f"{label} r{round_number} {mode} {clients}: {cell['throughput_rps']:.1f} rps, p50 "
                              f"{cell['p50_ms']:.1f} / p99 {cell['p99_ms']:.1f} ms, 5xx {cell['server_5xx']}",
                              flush=True)  # fmt: skip
                results[-1]["batching"] = batch_sizes(url)
            finally:
                os.killpg(server.pid, signal.SIGINT)
                server.wait(timeout=60)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
