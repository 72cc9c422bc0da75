"""Dynamic batching of query encoding: concurrent callers share forward passes and get their own rows."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from ragtune.errors import InputError
from ragtune.query_batching import QueryBatcher


class SlowEncoder:
    """Vector of a text = (len, first char code, 1), normalised; each call takes `seconds` and is recorded."""

    model_ref = None

    def __init__(self, seconds: float = 0.02, fail_on: str | None = None) -> None:
        self.seconds = seconds
        self.fail_on = fail_on
        self.calls: list[list[str]] = []
        self.lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        with self.lock:
            self.calls.append(list(texts))
        time.sleep(self.seconds)
        if self.fail_on is not None and self.fail_on in texts:
            raise RuntimeError(f"cannot encode {self.fail_on}")
        vectors = np.array([[len(t), ord(t[0]), 1.0] for t in texts], dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _run_concurrently(batcher: QueryBatcher, texts: list[str]) -> dict[str, np.ndarray]:
    results: dict[str, np.ndarray] = {}
    errors: list[BaseException] = []

    def call(text: str) -> None:
        try:
            results[text] = batcher.encode_query(text)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(t,)) for t in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def test_concurrent_queries_share_batches_and_each_gets_its_own_vector() -> None:
    encoder = SlowEncoder()
    sizes: list[int] = []
    batcher = QueryBatcher(encoder, window_seconds=0.01, max_batch=8, on_batch=sizes.append)  # type: ignore[arg-type]
    texts = [f"{chr(97 + i % 26)}query {'x' * i}" for i in range(24)]
    try:
        results = _run_concurrently(batcher, texts)
    finally:
        batcher.close()
    direct = SlowEncoder(0.0)
    for text in texts:
        np.testing.assert_allclose(results[text], direct.encode([text])[0], rtol=1e-6)
    assert sum(sizes) == 24 and max(sizes) <= 8
    assert len(encoder.calls) < 24 and max(sizes) > 1  # shared forward passes


def test_a_lone_query_waits_at_most_the_window() -> None:
    batcher = QueryBatcher(SlowEncoder(0.0), window_seconds=0.05, max_batch=8)  # type: ignore[arg-type]
    try:
        started = time.perf_counter()
        batcher.encode_query("alone")
        assert time.perf_counter() - started < 0.5
    finally:
        batcher.close()


def test_a_failed_batch_fails_each_of_its_callers_and_the_batcher_goes_on() -> None:
    encoder = SlowEncoder(0.0, fail_on="bad")
    batcher = QueryBatcher(encoder, window_seconds=0.0, max_batch=8)  # type: ignore[arg-type]
    try:
        with pytest.raises(RuntimeError, match="cannot encode bad"):
            batcher.encode_query("bad")
        assert batcher.encode_query("good").shape == (3,)
        big = [f"t{i}" for i in range(10)]  # over max_batch: encoded directly, in one call
        assert batcher.encode(big).shape == (10, 3) and encoder.calls[-1] == big
    finally:
        batcher.close()
    assert batcher.encode_query("after close").shape == (3,)  # encodes directly once closed


def test_settings_are_checked() -> None:
    with pytest.raises(InputError, match="--batch-window-ms must be ≥ 0"):
        QueryBatcher(SlowEncoder(), window_seconds=-1)  # type: ignore[arg-type]


@pytest.mark.integration
def test_batched_vectors_match_one_at_a_time_with_the_real_model(minilm) -> None:  # type: ignore[no-untyped-def]
    """Padding a short query to a batch's longest changes nothing beyond rounding (the attention mask hides it)."""
    from ragtune.embedding import Embedder

    embedder = Embedder(minilm, purpose="queries")
    texts = ["pump", "why does the impeller of my centrifugal pump erode so quickly", "gate valve throttling",
             "bread", "how long should sourdough proof before baking at home in a cold kitchen"] * 3  # fmt: skip
    batcher = QueryBatcher(embedder, window_seconds=0.02, max_batch=16)
    try:
        results = _run_concurrently(batcher, texts)
    finally:
        batcher.close()
    for text in set(texts):
        assert float(results[text] @ embedder.encode_query(text)) > 0.999


def test_serve_settings_refuse_bad_batching_and_limits() -> None:
    from ragtune.server import ServeSettings

    for bad in ({"batch_window_ms": -1}, {"max_batch": 0}, {"max_asks": 0}, {"max_searches": -1}):
        with pytest.raises(InputError, match="--batch-window-ms and --max-searches must be ≥ 0, --max-batch and --max"):
            ServeSettings("stores/x", **bad)
    settings = ServeSettings("stores/x", max_asks=2, max_searches=0)
    assert ServeSettings(**json.loads(settings.to_environment())) == settings
