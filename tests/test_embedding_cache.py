"""The user's shared embedding cache: one encode per text and model across stores, concurrent writers, the size bound."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import write_docs
from ragtune.cli import app
from ragtune.embedding import Embedder
from ragtune.embedding_cache import EmbeddingCache, cache_summary, prune_cache, text_hash
from ragtune.errors import InputError
from ragtune.models import resolve_model
from ragtune.paths import parse_size
from ragtune.store import index_sources, open_store
from ragtune.store.integrity import check_store, repair_store

runner = CliRunner()
DIMENSION = 384


def _vector(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(DIMENSION).astype(np.float32)
    return vector / np.linalg.norm(vector)


def _cache(path: Path, limit_bytes: int = 10**9) -> EmbeddingCache:
    return EmbeddingCache("rev", "fp32", DIMENSION, path=path, limit_bytes=limit_bytes)


def _rows(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT count(*) FROM embeddings").fetchone()[0])
    finally:
        db.close()


@pytest.mark.integration
def test_a_second_store_of_the_same_text_encodes_nothing_and_cached_vectors_equal_fresh_ones(
    tmp_path: Path, minilm, _own_embedding_cache: Path  # type: ignore[no-untyped-def]
) -> None:
    docs = write_docs(tmp_path / "docs")
    first = index_sources(tmp_path / "a", [docs], model="minilm", show_progress=False)
    copy = shutil.copytree(docs, tmp_path / "elsewhere" / "docs")
    second = index_sources(tmp_path / "b", [copy], model="minilm", show_progress=False)
    assert first.encoded > 0 and first.cached == 0
    assert second.encoded == 0 and second.cached == first.encoded
    with open_store(tmp_path / "b") as store:
        passages = list(store.iter_passages())
        texts = [p.embedding_text() for p in passages]
        stored = np.vstack([store.embedding(p.id) for p in passages])
    embedder = Embedder(minilm)
    fresh = embedder.encode(texts)  # one batch of other lengths: bf16 padding may move the last digits
    assert np.min(np.sum(fresh * stored, axis=1)) >= 0.999
    with EmbeddingCache.for_encoder(embedder, embedder.dimension) as cache:
        cached = np.vstack([cache.get_many([text_hash(t)])[text_hash(t)] for t in texts])
    np.testing.assert_array_equal(cached, stored)
    assert not (tmp_path / "a" / "embeddings.sqlite").exists()  # no per-store copy any more
    assert _own_embedding_cache.exists()


def test_precision_and_model_are_part_of_the_key(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    with _cache(path) as fp32:
        fp32.put_many([(text_hash("a"), _vector(1))])
    with EmbeddingCache("rev", "bf16", DIMENSION, path=path) as bf16, EmbeddingCache("other", "fp32", DIMENSION, path=path) as other:
        assert bf16.get_many([text_hash("a")]) == {} and other.get_many([text_hash("a")]) == {}
    with _cache(path) as again:
        np.testing.assert_array_equal(again.get_many([text_hash("a")])[text_hash("a")], _vector(1))


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np
    sys.path.insert(0, sys.argv[4])
    from test_embedding_cache import _cache, _vector
    from ragtune.embedding_cache import text_hash

    path, first, last = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    while not Path(str(path) + ".go").exists():
        time.sleep(0.01)
    with _cache(path) as cache:
        for start in range(first, last, 50):
            texts = [f"text {i}" for i in range(start, min(last, start + 50))]
            cache.encode(texts, lambda batch: np.vstack([_vector(int(t.split()[1])) for t in batch]))
    """
)


def test_two_processes_filling_one_cache_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    tests = str(Path(__file__).parent)
    writers = [
        subprocess.Popen([sys.executable, str(script), str(path), str(first), str(last), tests], env=os.environ.copy())
        for first, last in ((0, 1500), (1000, 2500))  # 500 texts in common
    ]
    Path(str(path) + ".go").touch()
    assert [w.wait(timeout=240) for w in writers] == [0, 0]
    assert _rows(path) == 2500
    with _cache(path) as cache:
        hashes = [text_hash(f"text {i}") for i in range(2500)]
        found = cache.get_many(hashes)
        assert len(found) == 2500
        for i in (0, 999, 1000, 1499, 1500, 2499):
            np.testing.assert_array_equal(found[hashes[i]], _vector(i))


def test_eviction_keeps_the_bound_and_drops_the_least_recently_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ragtune.embedding_cache as module

    clock = [1_000_000.0]
    monkeypatch.setattr(module.time, "time", lambda: clock[0])
    path = tmp_path / "cache.sqlite"
    limit = 700_000  # about 300 vectors of 384 floats (two to a 4 KiB page, and the indexes)
    with _cache(path, limit_bytes=limit) as cache:
        cache.put_many([(text_hash(f"old {i}"), _vector(i)) for i in range(100)])
        clock[0] += 3600
        cache.put_many([(text_hash(f"newer {i}"), _vector(i)) for i in range(100)])
        clock[0] += 3600
        assert len(cache.get_many([text_hash(f"old {i}") for i in range(50)])) == 50  # used again: now recent
        clock[0] += 3600
        for batch in range(4):
            cache.put_many([(text_hash(f"fresh {batch} {i}"), _vector(i)) for i in range(50)])
            assert module._used_bytes(cache._db) <= limit
        assert cache.evicted > 0
        kept_old = cache.get_many([text_hash(f"old {i}") for i in range(100)])
        kept_newer = cache.get_many([text_hash(f"newer {i}") for i in range(100)])
    assert all(text_hash(f"old {i}") in kept_old for i in range(50))  # touched: survived the not-touched newer ones
    assert len(kept_newer) < 100
    assert path.stat().st_size <= limit * 1.5  # the freed pages went back to the filesystem


def test_prune_and_the_cache_commands(tmp_path: Path, _own_embedding_cache: Path) -> None:
    with EmbeddingCache("rev", "fp32", DIMENSION) as cache:
        cache.put_many([(text_hash(f"t {i}"), _vector(i)) for i in range(300)])
    info = runner.invoke(app, ["cache", "info", "--json"])
    assert info.exit_code == 0 and '"vectors": 300' in info.output
    assert runner.invoke(app, ["cache", "prune", "--max-size", "200KB"]).exit_code == 0
    assert 0 < cache_summary().vectors < 300 and cache_summary().size_bytes <= 200_000 * 1.5
    assert prune_cache(0) > 0 and cache_summary().vectors == 0
    bad = runner.invoke(app, ["cache", "prune", "--max-size", "lots"])
    assert bad.exit_code == 2 and "not understood" in bad.stderr
    assert runner.invoke(app, ["cache", "clear"]).exit_code == 0 and not _own_embedding_cache.exists()


def test_prune_one_kind_keeps_every_other_kind_and_model(_own_embedding_cache: Path) -> None:
    """`cache prune --kind` drops the vectors an older ragtune made (another vector kind), nothing else."""
    contents = (("rev", "bf16/torch", 120), ("rev", "bf16/torch-packed", 80), ("other", "bf16/torch", 30))
    for model, kind, count in contents:
        with EmbeddingCache(model, kind, DIMENSION) as cache:
            cache.put_many([(text_hash(f"{model} {kind} {i}"), _vector(i)) for i in range(count)])
    info = runner.invoke(app, ["cache", "info"])
    assert "model rev · kind bf16/torch: 120 vectors" in info.output
    narrowed = runner.invoke(app, ["cache", "prune", "--kind", "bf16/torch", "--model", "other"])
    assert narrowed.exit_code == 0 and "removed 30 vectors of kind bf16/torch" in narrowed.output
    assert runner.invoke(app, ["cache", "prune", "--kind", "bf16/torch"]).exit_code == 0
    assert cache_summary().by_model == [("rev", "bf16/torch-packed", 80)]
    with EmbeddingCache("rev", "bf16/torch-packed", DIMENSION) as cache:
        assert len(cache.get_many([text_hash(f"rev bf16/torch-packed {i}") for i in range(80)])) == 80
    unknown = runner.invoke(app, ["cache", "prune", "--kind", "bf16/torch"])
    assert unknown.exit_code != 0 and "no vectors of kind 'bf16/torch'" in unknown.output
    assert "bf16/torch-packed (model rev)" in unknown.output
    alone = runner.invoke(app, ["cache", "prune", "--model", "rev"])
    assert alone.exit_code != 0 and "--model only narrows --kind" in alone.output
    assert cache_summary().vectors == 80


def test_parse_size() -> None:
    assert parse_size("2GB") == 2 * 10**9 and parse_size("1.5 GiB") == int(1.5 * 2**30) and parse_size("0") == 0
    with pytest.raises(InputError):
        parse_size("-1MB")


def test_an_edited_file_reuses_the_stores_own_vectors_when_the_cache_lost_them(
    tmp_path: Path, tiny_model_dir: Path, _own_embedding_cache: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    paragraphs = [f"Paragraph {i} explains how pump number {i} is serviced every {i + 2} months." for i in range(40)]
    (docs / "manual.txt").write_text("\n\n".join(paragraphs))
    store = tmp_path / "store"
    first = index_sources(store, [docs], model=str(tiny_model_dir), show_progress=False)
    runner.invoke(app, ["cache", "clear"])
    (docs / "manual.txt").write_text("\n\n".join(paragraphs) + "\n\nA new closing paragraph about valves.")
    second = index_sources(store, [docs], model=str(tiny_model_dir), show_progress=False)
    assert first.encoded > 1 and second.files_modified == 1
    assert second.encoded < first.encoded  # only the chunks whose text changed


def test_a_format_1_store_cache_is_a_leftover_that_repair_removes(tmp_path: Path, tiny_model_dir: Path) -> None:
    store = tmp_path / "store"
    index_sources(store, [write_docs(tmp_path / "docs")], model=str(tiny_model_dir), show_progress=False)
    (store / "embeddings.sqlite").write_bytes(b"")
    assert check_store(store).leftovers == ["embeddings.sqlite"]
    report = repair_store(store)
    assert report.healthy and not (store / "embeddings.sqlite").exists()


@pytest.mark.integration
def test_mining_reads_the_stores_vectors_from_the_cache(tmp_path: Path, minilm) -> None:  # type: ignore[no-untyped-def]
    from ragtune.training.examples import TrainingExample
    from ragtune.training.mining import MiningConfig, mine_hard_negatives

    store = tmp_path / "store"
    index_sources(store, [write_docs(tmp_path / "docs")], model="minilm", show_progress=False)
    with open_store(store) as opened:
        corpus = list(opened.passage_texts())
    calls: list[int] = []
    real = Embedder.encode

    def counting(self: Embedder, texts):  # type: ignore[no-untyped-def]
        calls.append(len(texts))
        return real(self, texts)

    examples = [TrainingExample("how do pumps move water", corpus[0])]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Embedder, "encode", counting)
        mine_hard_negatives(examples, corpus, resolve_model("minilm"), MiningConfig(num_negatives=1))
    assert calls == [1]  # the query only: every corpus vector came from the cache


def test_streamed_blocks_are_kept_as_they_arrive_and_a_lost_text_is_an_error(tmp_path: Path) -> None:
    """A cluster's batches come back in any order; what arrived before a failure stays cached."""
    from ragtune.errors import StoreError

    texts = ["alpha", "beta", "gamma", "delta"]
    vectors = np.eye(4, dtype=np.float32)

    def two_blocks_then_fail(missing):  # type: ignore[no-untyped-def]
        yield np.array([2, 0]), vectors[[2, 0]]
        raise RuntimeError("the cluster went away")

    with EmbeddingCache("rev", "fp32/torch", 4, tmp_path / "c.sqlite") as cache:
        with pytest.raises(RuntimeError, match="went away"):
            cache.encode_blocks(texts, two_blocks_then_fail)
        assert set(cache.get_many([text_hash(t) for t in texts])) == {text_hash("alpha"), text_hash("gamma")}
        asked: list[list[str]] = []

        def rest(missing):  # type: ignore[no-untyped-def]
            asked.append(list(missing))
            yield np.arange(len(missing))[::-1], vectors[[3, 1]]  # reversed order: delta, beta

        assert np.array_equal(cache.encode_blocks(texts, rest), vectors)
        assert asked == [["beta", "delta"]]
        with pytest.raises(StoreError, match="no vector for 1 of 1"):
            cache.encode_blocks(["epsilon"], lambda missing: iter([]))
