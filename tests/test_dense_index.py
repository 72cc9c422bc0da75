from __future__ import annotations

import numpy as np

from ragtune.store.dense import FaissDenseIndex


def _clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors around 200 centres: closer to real embeddings than uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(200, dim))
    vectors = centres[rng.integers(0, 200, n)] + 0.6 * rng.normal(size=(n, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32)


def test_ann_recall_at_10_against_exact() -> None:
    vectors = _clustered(20_000, 64, seed=0)
    queries = _clustered(200, 64, seed=1)
    ids = np.arange(5, 20_005, dtype=np.int64)
    exact = FaissDenseIndex.create(64, len(vectors))
    ann = FaissDenseIndex.create(64, len(vectors), exact_threshold=1000)
    assert (exact.kind, ann.kind) == ("flat", "hnsw")
    for index in (exact, ann):
        index.add(ids, vectors)
    _, truth = exact.search(queries, 10)
    _, found = ann.search(queries, 10)
    recall = np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found)])
    assert recall >= 0.98


def test_filtered_search_returns_only_allowed_ids(tmp_path) -> None:  # type: ignore[no-untyped-def]
    vectors = _clustered(5_000, 32, seed=2)
    ids = np.arange(5_000, dtype=np.int64)
    allowed = np.array([3, 77, 1234, 4999], dtype=np.int64)
    for threshold in (10**6, 100):  # flat, then hnsw (small allowed share → exact scan of the subset)
        index = FaissDenseIndex.create(32, 5_000, exact_threshold=threshold)
        index.add(ids, vectors)
        index.save(tmp_path / "dense.faiss")
        loaded = FaissDenseIndex.load(tmp_path / "dense.faiss")
        _, found = loaded.search(vectors[[77]], 3, allowed)
        assert found[0][0] == 77
        assert set(found[0]) <= set(allowed.tolist())


def test_single_queries_search_on_one_thread_with_the_batch_result() -> None:
    import faiss

    vectors = _clustered(3_000, 32, seed=3)
    index = FaissDenseIndex.create(32, len(vectors))
    index.add(np.arange(len(vectors), dtype=np.int64), vectors)
    queries = vectors[:25]
    batch_scores, batch_ids = index.search(queries, 10)
    threads = faiss.omp_get_max_threads()
    for i in range(len(queries)):  # one at a time: below FAISS's BLAS threshold, run on one thread
        scores, ids = index.search(queries[i], 10)
        assert ids[0].tolist() == batch_ids[i].tolist() and np.allclose(scores[0], batch_scores[i], atol=1e-5)
    assert faiss.omp_get_max_threads() == threads  # the caller's thread setting is restored


def test_a_memory_mapped_index_searches_and_reconstructs_as_a_loaded_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pathlib import Path

    vectors = _clustered(4_000, 32, seed=4)
    ids = np.arange(10, 4_010, dtype=np.int64)
    for threshold, storage in ((10**6, "float32"), (100, "float16")):
        index = FaissDenseIndex.create(32, len(vectors), exact_threshold=threshold)
        index.add(ids, vectors)
        index.remove(ids[:50])
        path = tmp_path / f"{storage}.faiss"
        index.save(path)
        loaded, mapped = FaissDenseIndex.load(path), FaissDenseIndex.load(path, memory_map=True)
        assert str(path) in Path("/proc/self/maps").read_text()  # the file is mapped, not read into memory
        assert mapped.storage == storage and len(mapped) == len(loaded) == 3_950
        for got, want in zip(mapped.search(vectors[100:120], 5), loaded.search(vectors[100:120], 5), strict=True):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(mapped.vectors(ids[60:70]), loaded.vectors(ids[60:70]))
        np.testing.assert_allclose(mapped.vectors(ids[60:70]), vectors[60:70], atol=1e-3)
        live = np.concatenate([batch for batch, _ in mapped.iter_live(batch=1000)])
        assert sorted(live.tolist()) == ids[50:].tolist()
