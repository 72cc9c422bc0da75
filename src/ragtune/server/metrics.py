"""Prometheus metrics of the server (prometheus-client): requests by route and status, latency, query-encoding batch
sizes, /ask requests turned away. With several worker processes the client's multiprocess mode sums them (the
`PROMETHEUS_MULTIPROC_DIR` environment variable, which `ragtune serve --workers N` sets)."""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServerMetrics:
    """One registry per app (tests create several apps in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("ragtune_requests", "HTTP requests by route, method and status.",
                                ["route", "method", "status"], registry=self.registry)  # fmt: skip
        self.latency = Histogram("ragtune_request_seconds", "Time to the end of the response, by route.",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)  # fmt: skip
        self.batch_size = Histogram("ragtune_query_batch_size", "Queries encoded together in one forward pass.",
                                    buckets=BATCH_BUCKETS, registry=self.registry)  # fmt: skip
        self.asks_rejected = Counter("ragtune_ask_rejected", "/ask requests answered 503 because too many were "
                                     "in flight.", registry=self.registry)  # fmt: skip

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
