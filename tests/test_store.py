"""Store behaviour with the real MiniLM on a four-file corpus: incremental updates, atomicity, refusals."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from ragtune import Retriever, index_sources, open_store
from ragtune.corpus import ChunkingConfig
from ragtune.errors import StoreError
from ragtune.store import store as store_module
from conftest import rel

pytestmark = pytest.mark.integration


def _bump(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))


def _passage_ids(store_dir: str | Path) -> set[str]:
    with open_store(store_dir) as store:
        return {rel(p.id) for p in store.iter_passages()}


def test_first_index_then_unchanged_rerun_embeds_nothing(docs_dir: Path, store_address: str) -> None:
    store_dir = store_address
    first = index_sources(store_dir, [docs_dir], show_progress=False)
    assert (first.files_added, first.passages_total, first.encoded) == (4, 4, 4)
    second = index_sources(store_dir, [docs_dir], show_progress=False)
    assert (second.files_unchanged, second.encoded, second.cached) == (4, 0, 0)
    assert second.generation == first.generation
    with open_store(store_dir) as store:
        info = store.info()
    assert info["counts"] == {"sources": 4, "documents": 4, "passages": 4}
    assert info["model"]["name"] == "minilm" and info["dimension"] == 384


def test_touch_without_change_is_not_reembedded(docs_dir: Path, store_address: str) -> None:
    store_dir = store_address
    index_sources(store_dir, [docs_dir], show_progress=False)
    path = docs_dir / "guide" / "valves.txt"
    _bump(path, path.read_text())
    report = index_sources(store_dir, [docs_dir], show_progress=False)
    assert (report.files_unchanged, report.encoded) == (4, 0)


def test_add_modify_delete(docs_dir: Path, store_address: str) -> None:
    store_dir = store_address
    index_sources(store_dir, [docs_dir], show_progress=False)
    (docs_dir / "notes" / "cooking.txt").unlink()
    _bump(docs_dir / "guide" / "valves.txt", "Ball valves turn a quarter turn to close.")
    (docs_dir / "guide" / "motors.md").write_text("# Motors\n\nInduction motors need balanced three-phase supply.")
    report = index_sources(store_dir, [docs_dir], show_progress=False)
    assert (report.files_added, report.files_modified, report.files_deleted, report.files_unchanged) == (1, 1, 1, 2)
    assert (report.encoded, report.passages_removed, report.passages_total) == (2, 2, 4)
    assert _passage_ids(store_dir) == {
        "docs/guide/pumps.md#0", "docs/guide/valves.txt#0", "docs/guide/motors.md#0", "docs/notes/garden.html#0"
    }  # fmt: skip
    with open_store(store_dir) as store:
        [hit] = Retriever(store).search("quarter turn ball valve", k=1, mode="bm25")
        every = {p.id: p.embedding_text() for p in store.iter_passages()}
        some = [next(iter(every)), hit.id]
        assert store.passage_texts_of([*some, hit.id, "no/such/passage#0"]) == {i: every[i] for i in some}
    assert hit.text == "Ball valves turn a quarter turn to close."


def test_other_roots_are_not_deleted(docs_dir: Path, store_address: str, tmp_path: Path) -> None:
    store_dir = store_address
    other = tmp_path / "more"
    other.mkdir()
    (other / "extra.txt").write_text("Extra document about compressors.")
    index_sources(store_dir, [docs_dir], show_progress=False)
    report = index_sources(store_dir, [other], show_progress=False)
    assert (report.files_added, report.files_deleted, report.passages_total) == (1, 0, 5)


def test_crash_while_building_keeps_previous_store_and_next_run_finishes(
    docs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_dir = tmp_path / "store"
    index_sources(store_dir, [docs_dir], show_progress=False)
    before = _passage_ids(store_dir)
    (docs_dir / "guide" / "motors.md").write_text("# Motors\n\nInduction motors need balanced supply.")

    def crash(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt  # as if Ctrl-C arrived after embedding, before the indexes were written

    monkeypatch.setattr(store_module._IndexChange, "apply", crash)
    with pytest.raises(KeyboardInterrupt):
        index_sources(store_dir, [docs_dir], show_progress=False)
    assert _passage_ids(store_dir) == before
    with open_store(store_dir) as store:
        assert Retriever(store).search("impeller cavitation", k=1, mode="dense")[0].doc_id.endswith("/docs/guide/pumps.md")

    monkeypatch.undo()
    report = index_sources(store_dir, [docs_dir], show_progress=False)
    assert report.files_added == 1 and report.encoded == 0 and report.cached == 1  # embedded before the crash
    assert _passage_ids(store_dir) == before | {"docs/guide/motors.md#0"}
    assert not list(store_dir.glob("*.partial"))


def test_crash_before_manifest_switch_keeps_previous_generation(
    docs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_dir = tmp_path / "store"
    index_sources(store_dir, [docs_dir], show_progress=False)
    before = _passage_ids(store_dir)
    (docs_dir / "notes" / "cooking.txt").unlink()

    def crash(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError("disk full")

    monkeypatch.setattr(store_module, "write_manifest", crash)
    with pytest.raises(OSError):
        index_sources(store_dir, [docs_dir], show_progress=False)
    assert _passage_ids(store_dir) == before


def test_other_model_is_refused_naming_both(docs_dir: Path, store_address: str, tiny_model_dir: Path) -> None:
    store_dir = store_address
    index_sources(store_dir, [docs_dir], show_progress=False)
    with pytest.raises(StoreError, match=r"built with model 'minilm'.*but '.*model' .* was given"):
        index_sources(store_dir, [docs_dir], model=str(tiny_model_dir), show_progress=False)


def test_changed_chunking_is_refused(docs_dir: Path, store_address: str) -> None:
    store_dir = store_address
    index_sources(store_dir, [docs_dir], show_progress=False)
    with pytest.raises(StoreError, match="chunk_tokens=254"):
        index_sources(store_dir, [docs_dir], chunking=ChunkingConfig(chunk_tokens=100), show_progress=False)


def test_corrupt_and_half_written_stores(docs_dir: Path, tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    index_sources(store_dir, [docs_dir], show_progress=False)
    manifest = store_dir / "manifest.json"
    data = json.loads(manifest.read_text())

    manifest.write_text(json.dumps(data | {"generation": "gen-000099"}))
    with pytest.raises(StoreError, match="gen-000099.*missing"):
        open_store(store_dir)

    manifest.write_text('{"format_version": 1, "genera')
    with pytest.raises(StoreError, match="corrupt manifest.json"):
        open_store(store_dir)

    manifest.unlink()
    with pytest.raises(StoreError, match="incomplete"):
        open_store(store_dir)

    manifest.write_text(json.dumps(data))
    (store_dir / data["generation"] / "passages.sqlite").write_bytes(b"garbage" * 100)
    with pytest.raises(StoreError, match="unreadable"):
        open_store(store_dir)


def test_foreign_directory_and_missing_store(docs_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.docx").write_text("precious")
    with pytest.raises(StoreError, match="not a ragtune store"):
        index_sources(tmp_path / "mine", [docs_dir], show_progress=False)
    assert (tmp_path / "mine" / "thesis.docx").read_text() == "precious"
    with pytest.raises(StoreError, match="does not exist"):
        open_store(tmp_path / "nowhere")


def test_skipped_files_are_counted_and_nothing_is_lost(docs_dir: Path, store_address: str) -> None:
    (docs_dir / "blob.txt").write_bytes(b"\x00\x01binary")
    (docs_dir / "empty.md").write_text("")
    report = index_sources(store_address, [docs_dir], show_progress=False)
    assert {rel(k): v for k, v in report.skipped.items()} == {"docs/blob.txt": "binary content", "docs/empty.md": "empty"}
    assert report.passages_total == 4
    readable = report.files_seen - 2
    assert report.files_added == readable  # the skipped files are not counted as added too
    again = index_sources(store_address, [docs_dir], show_progress=False)
    assert (again.files_added, again.files_unchanged, again.skipped) == (0, readable, report.skipped)
    assert again.generation == report.generation  # unreadable files alone build no new generation (a copy of it all)
    (docs_dir / "blob.txt").write_text("Blob valves are mended by hand.")  # the user fixes one
    fixed = index_sources(store_address, [docs_dir], show_progress=False)
    assert fixed.files_added == 1 and {rel(k) for k in fixed.skipped} == {"docs/empty.md"}
    assert fixed.passages_total == 5 and fixed.generation != report.generation


def test_concurrent_writer_is_refused(docs_dir: Path, store_address: str) -> None:
    from ragtune.store.engines import write_lock

    with write_lock(store_address):
        start = time.perf_counter()
        with pytest.raises(StoreError, match="being written by another process"):
            index_sources(store_address, [docs_dir], show_progress=False)
        assert time.perf_counter() - start < 5
    assert index_sources(store_address, [docs_dir], show_progress=False).passages_total == 4


def test_reindex_switches_model_atomically(
    docs_dir: Path, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragtune.store import reindex_store

    store_dir = tmp_path / "store"
    index_sources(store_dir, [docs_dir], show_progress=False)
    before = _passage_ids(store_dir)

    def crash(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(store_module, "_build_indexes", crash)
    with pytest.raises(KeyboardInterrupt):
        reindex_store(store_dir, str(tiny_model_dir), show_progress=False)
    with open_store(store_dir) as store:
        assert store.info()["model"]["name"] == "minilm"
    monkeypatch.undo()

    report = reindex_store(store_dir, str(tiny_model_dir), show_progress=False)
    assert report.passages_total == 4 and report.cached == 4  # embedded before the interruption
    assert _passage_ids(store_dir) == before
    with open_store(store_dir) as store:
        assert store.info()["dimension"] == 32
        assert store.info()["model"]["path"] == str(tiny_model_dir.resolve())
        assert len(Retriever(store).search("pump", k=4, mode="dense")) == 4
    with pytest.raises(StoreError, match="built with model"):
        index_sources(store_dir, [docs_dir], model="minilm", show_progress=False)


def test_a_store_moved_with_its_model_finds_it_and_a_lost_model_is_one_clear_error(
    docs_dir: Path, tmp_path: Path, tiny_model_dir: Path
) -> None:
    run = tmp_path / "run"  # what a quickstart run leaves: the store and the tuned model in one folder
    shutil.copytree(tiny_model_dir, run / "tuned-model")
    index_sources(run / "stores" / "docs", [docs_dir], model=str(run / "tuned-model"), show_progress=False)
    with open_store(run / "stores" / "docs") as store:
        expected = [(h.id, round(h.score, 5)) for h in Retriever(store).search("pump", k=4, mode="dense")]
    moved = run.rename(tmp_path / "archive-2026")
    with open_store(moved / "stores" / "docs") as store:
        assert store.info()["model"]["path"] == str((moved / "tuned-model").resolve())
        assert [(h.id, round(h.score, 5)) for h in Retriever(store).search("pump", k=4, mode="dense")] == expected
    assert index_sources(moved / "stores" / "docs", [docs_dir], show_progress=False).files_unchanged == 4
    shutil.rmtree(moved / "tuned-model")
    with open_store(moved / "stores" / "docs") as store, pytest.raises(StoreError, match=(
        r"the store's model '.*run/tuned-model' \(revision \w+\) is no longer there: put it back.*ragtune reindex"
    )):  # fmt: skip
        Retriever(store).search("pump", k=4, mode="dense")


def test_reindex_on_postgresql_switches_model_and_dimension(
    docs_dir: Path, tmp_path: Path, tiny_model_dir: Path, request: pytest.FixtureRequest
) -> None:
    from conftest import new_store
    from ragtune.store import reindex_store

    address = new_store("postgresql", tmp_path, request)
    index_sources(address, [docs_dir], show_progress=False)
    before = _passage_ids(address)
    report = reindex_store(address, str(tiny_model_dir), show_progress=False)
    assert report.passages_total == 4 and report.encoded == 4
    assert _passage_ids(address) == before
    with open_store(address) as store:
        assert store.info()["dimension"] == 32
        assert len(Retriever(store).search("pump", k=4, mode="dense")) == 4
    with pytest.raises(StoreError, match="built with model"):
        index_sources(address, [docs_dir], model="minilm", show_progress=False)


def test_postgresql_bm25_statistics_follow_updates(docs_dir: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The lexeme counts each writer keeps in step give the scores a store built from scratch gives."""
    from conftest import new_store

    updated = new_store("postgresql", tmp_path, request)
    index_sources(updated, [docs_dir], show_progress=False)
    (docs_dir / "notes" / "cooking.txt").unlink()
    _bump(docs_dir / "guide" / "valves.txt", "Ball valves turn a quarter turn to close the water flow.")
    (docs_dir / "guide" / "motors.md").write_text("# Motors\n\nInduction motors drive the water pump impeller.")
    index_sources(updated, [docs_dir], show_progress=False)
    fresh = new_store("postgresql", tmp_path, request)
    index_sources(fresh, [docs_dir], show_progress=False)
    queries = ["water pump", "impeller motors", "quarter turn valve", "bread crust", "tomato sun watering"]
    with open_store(updated) as one, open_store(fresh) as other:
        for query in queries:
            got = [(h.id, round(h.score, 6)) for h in Retriever(one).search(query, k=5, mode="bm25")]
            want = [(h.id, round(h.score, 6)) for h in Retriever(other).search(query, k=5, mode="bm25")]
            assert got == want, query
        assert Retriever(one).search("bread crust", k=5, mode="bm25") == []


TOPICS = ["pump impeller", "gate valve", "sourdough bread", "tomato garden", "electric motor", "steam boiler"]


def _topic_docs(count: int) -> dict[str, str]:
    return {
        f"part{i % 3}/doc{i}.txt": f"Note {i} about the {TOPICS[i % len(TOPICS)]}: check item {i} and record {i * 7}."
        for i in range(count)
    }


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_an_update_changes_the_indexes_and_searches_as_a_rebuild_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    from conftest import write_docs

    if kind == "hnsw":
        monkeypatch.setattr(store_module, "EXACT_THRESHOLD", 1)
    docs = write_docs(tmp_path / "docs", _topic_docs(40))
    store_dir = tmp_path / "store"
    index_sources(store_dir, [docs], show_progress=False)
    for i in (1, 2, 3):
        (docs / f"part{i % 3}" / f"doc{i}.txt").unlink()
    _bump(docs / "part1" / "doc4.txt", "A rewritten note about centrifugal pump seals.")
    (docs / "part0" / "new.txt").write_text("A new note about a steam boiler safety valve.")
    report = index_sources(store_dir, [docs], show_progress=False)
    assert (report.files_deleted, report.files_modified, report.files_added, report.dense_kind) == (3, 1, 1, kind)
    generation = store_dir / report.generation
    assert any(p.stat().st_nlink > 1 for p in (generation / "keyword").iterdir())  # segments shared, not rewritten
    assert (generation / "dense.faiss.deleted.npy").exists() == (kind == "hnsw")  # HNSW keeps tombstones
    fresh = tmp_path / "fresh"
    index_sources(fresh, [docs], show_progress=False)
    with open_store(store_dir) as updated, open_store(fresh) as rebuilt:
        for query in ["pump seal", "steam boiler valve", "tomato garden note 19", "sourdough bread record"]:
            got = Retriever(updated).search(query, k=8, mode="dense")
            want = Retriever(rebuilt).search(query, k=8, mode="dense")
            assert [h.id for h in got] == [h.id for h in want]
            assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-5)
            got_bm25 = {h.id for h in Retriever(updated).search(query, k=50, mode="bm25")}
            assert got_bm25 == {h.id for h in Retriever(rebuilt).search(query, k=50, mode="bm25")}
            assert not any("/doc1.txt" in h.id for h in got)


def test_hnsw_is_rebuilt_once_removed_vectors_pass_the_threshold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import write_docs

    monkeypatch.setattr(store_module, "EXACT_THRESHOLD", 1)
    docs = write_docs(tmp_path / "docs", _topic_docs(20))
    store_dir = tmp_path / "store"
    index_sources(store_dir, [docs], show_progress=False)
    for i in range(6):  # 30 % of the vectors
        (docs / f"part{i % 3}" / f"doc{i}.txt").unlink()
    report = index_sources(store_dir, [docs], show_progress=False)
    generation = store_dir / report.generation
    assert report.passages_total == 14 and not (generation / "dense.faiss.deleted.npy").exists()
    assert all(p.stat().st_nlink == 1 for p in (generation / "keyword").iterdir())
    with open_store(store_dir) as store:
        assert len(store.dense) == 14 and store.dense.deleted_share == 0


def test_small_files_are_encoded_in_shared_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import write_docs

    from ragtune.embedding import Embedder

    docs = write_docs(tmp_path / "docs", _topic_docs(30))
    (docs / "blob.txt").write_bytes(b"\x00\x01binary")  # skipped in the middle: nothing of it is written
    batches: list[int] = []
    real = Embedder.encode

    def spy(self, texts, *args, **kwargs):  # type: ignore[no-untyped-def]
        batches.append(len(texts))
        return real(self, texts, *args, **kwargs)

    monkeypatch.setattr(Embedder, "encode", spy)
    report = index_sources(tmp_path / "store", [docs], show_progress=False)
    assert batches == [30] and report.passages_total == 30 and list(report.skipped) == [str(docs / "blob.txt")]


def test_postgresql_addresses_hide_passwords_and_fail_clearly() -> None:
    from ragtune.errors import InputError
    from ragtune.store.postgres import PostgresAddress

    parsed = PostgresAddress.parse("postgresql://alice:s3cret@127.0.0.1:5432/docs?store=manuals&sslmode=disable")
    assert parsed.schema == "manuals" and "s3cret" not in parsed.display and "store=" not in parsed.conninfo
    assert "sslmode=disable" in parsed.conninfo and parsed.display.startswith("postgresql://alice@127.0.0.1:5432/")
    tuned = PostgresAddress.parse("postgresql://alice@127.0.0.1/docs?ef_search=400&m=24&sslmode=disable")
    assert (tuned.schema, tuned.ef_search, tuned.m, tuned.ef_construction) == ("ragtune", 400, 24, 200)
    assert tuned.conninfo == "postgresql://alice@127.0.0.1/docs?sslmode=disable"
    for bad_setting in ("ef_search=0", "ef_search=1001", "m=many", "ef_construction=-5"):
        with pytest.raises(InputError, match=r"must be a whole number from \d+ to \d+"):
            PostgresAddress.parse(f"postgresql://alice@127.0.0.1/docs?{bad_setting}")
    with pytest.raises(InputError, match="lower-case letters") as bad:
        PostgresAddress.parse("postgresql://alice:s3cret@127.0.0.1/docs?store=Drop;Table")
    assert "s3cret" not in str(bad.value)
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL at 'postgres://nobody@127.0.0.1:1/x'"):
        open_store("postgres://nobody@127.0.0.1:1/x")


def test_the_local_postgresql_builds_hnsw_graphs_in_memory_sized_to_the_machine(postgres_address: str) -> None:
    import psycopg

    from ragtune.store.pg_server import build_memory_mb

    with psycopg.connect(postgres_address, autocommit=True) as connection:
        shown = connection.execute("SELECT pg_size_bytes(current_setting('maintenance_work_mem'))").fetchone()[0]
    machine = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert shown == build_memory_mb() * 2**20 and min(machine // 5, 8 * 2**30) <= shown <= machine // 4


def test_an_open_store_sees_search_settings_recorded_within_the_same_second(
    engine: str, docs_dir: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from conftest import new_store
    from ragtune.store import record_search_settings

    address = new_store(engine, tmp_path, request)
    index_sources(address, [docs_dir], show_progress=False)
    with open_store(address) as opened:
        assert not opened.changed_since_open()
        record_search_settings(address, {"mode": "bm25"})  # same generation, very likely the same second
        assert opened.changed_since_open()
    with open_store(address) as reopened:
        assert reopened.manifest.search == {"mode": "bm25"} and not reopened.changed_since_open()


def test_a_postgresql_store_of_another_schema_version_is_refused_with_what_to_do(
    docs_dir: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    import psycopg

    from conftest import new_store
    from ragtune.store.postgres import PostgresAddress

    address = new_store("postgresql", tmp_path, request)
    index_sources(address, [docs_dir], show_progress=False)
    parsed = PostgresAddress.parse(address)
    with psycopg.connect(parsed.conninfo, autocommit=True) as connection:  # as the first release of the engine wrote
        connection.execute(f"UPDATE {parsed.table('manifest')} SET schema_version = 1")
    for attempt in (lambda: open_store(address), lambda: index_sources(address, [docs_dir], show_progress=False)):
        with pytest.raises(StoreError, match=r"schema version 1; this ragtune reads version 3: index .* new store"):
            attempt()


def test_a_version_2_postgresql_store_is_upgraded_in_place_by_the_next_index(
    docs_dir: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Version 2 kept BM25 lengths in distinct lexemes; readers are told how to upgrade and `index` does it, keeping
    every passage and giving the scores of a store built by this version."""
    import psycopg

    from conftest import new_store
    from ragtune.store.postgres import PostgresAddress

    address = new_store("postgresql", tmp_path, request)
    index_sources(address, [docs_dir], show_progress=False)
    queries = ["water pump", "quarter turn valve", "bread crust"]
    with open_store(address) as store:
        want = [[(h.id, round(h.score, 6)) for h in Retriever(store).search(q, k=5, mode="bm25")] for q in queries]
    parsed = PostgresAddress.parse(address)
    t = parsed.table
    with psycopg.connect(parsed.conninfo, autocommit=True) as connection:  # the statistics as version 2 kept them
        connection.execute(f"ALTER TABLE {t('passages')} DROP COLUMN tokens")
        connection.execute(f"ALTER TABLE {t('keyword_totals')} RENAME COLUMN tokens TO lexemes")
        connection.execute(
            f"UPDATE {t('keyword_totals')} SET lexemes = (SELECT sum(length(tsv)) FROM {t('passages')})"
        )
        connection.execute(f"UPDATE {t('manifest')} SET schema_version = 2")
    with pytest.raises(StoreError, match=r"schema version 2; .* upgrade it in place .*ragtune index SOURCE --store"):
        open_store(address)
    report = index_sources(address, [docs_dir], show_progress=False)
    assert report.encoded == 0
    with open_store(address) as store:
        got = [[(h.id, round(h.score, 6)) for h in Retriever(store).search(q, k=5, mode="bm25")] for q in queries]
    assert got == want and any(got)


def test_postgresql_bm25_gives_tantivys_scores_where_both_tokenise_alike(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """No stop words and plain words: PostgreSQL's english parser and tantivy's en_stem make the same tokens, so the
    SQL BM25 (lengths in tokens) must score each passage as tantivy does; lengths in distinct lexemes would not."""
    from conftest import new_store, write_docs

    docs = write_docs(tmp_path / "docs", {
        "pumps.txt": "Centrifugal pumps move water fast. Pump impellers spin; pump seals leak water; seals wear.",
        "valves.txt": "Gate valves stop water flow. Ball valves turn quickly.",
        "boilers.txt": "Steam boilers heat water. Boiler pumps feed water; boiler water needs treatment, "
        "boiler scale blocks pipes, boiler inspections matter.",
        "motors.txt": "Electric motors drive pumps. Motor bearings wear.",
        "bread.txt": "Sourdough bread needs starter, flour, water, salt, time.",
    })  # fmt: skip
    scores = {}
    for engine in ("embedded", "postgresql"):
        address = new_store(engine, tmp_path, request)
        index_sources(address, [docs], show_progress=False)
        with open_store(address) as store:
            retriever = Retriever(store)
            scores[engine] = {
                query: {h.doc_id: h.score for h in retriever.search(query, k=5, mode="bm25")}
                for query in ("water pump", "boiler water", "valves water")
            }
    for query, tantivy_scores in scores["embedded"].items():
        assert len(tantivy_scores) >= 2, query
        assert scores["postgresql"][query] == pytest.approx(tantivy_scores, rel=1e-4), query


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_each_vector_is_kept_once_in_the_dense_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    import sqlite3
    import shutil

    import numpy as np
    from conftest import write_docs

    from ragtune.embedding import Embedder
    from ragtune.embedding_cache import EmbeddingCache, text_hash

    if kind == "hnsw":
        monkeypatch.setattr(store_module, "EXACT_THRESHOLD", 1)
    docs = write_docs(tmp_path / "docs", _topic_docs(12))
    store_dir = tmp_path / "store"
    report = index_sources(store_dir, [docs], show_progress=False)
    generation = store_dir / report.generation
    columns = {row[1] for row in sqlite3.connect(generation / "passages.sqlite").execute("PRAGMA table_info(passages)")}
    assert "embedding" not in columns and not (generation / "pending-vectors.sqlite").exists()
    with open_store(store_dir) as store:
        assert store.dense.storage == ("float16" if kind == "hnsw" else "float32")
        passages = list(store.iter_passages())
        held = np.vstack([store.embedding(p.id) for p in passages])
        embedder = Embedder(store.embedder.model_ref)
        with EmbeddingCache.for_encoder(embedder, embedder.dimension) as cache:
            cached = cache.get_many([text_hash(p.embedding_text()) for p in passages])
    want = np.vstack([cached[text_hash(p.embedding_text())] for p in passages])
    np.testing.assert_allclose(held, want, atol=1e-3 if kind == "hnsw" else 0)  # float16: ~5e-4 per value at most
    # with the cache emptied, a moved file keeps its vectors: they are read back from the dense index
    shutil.rmtree(Path(os.environ["RAGTUNE_EMBEDDING_CACHE"]).parent)
    (docs / "part0").rename(docs / "moved")
    moved = index_sources(store_dir, [docs], show_progress=False)
    assert moved.encoded == 0 and moved.passages_total == 12
    held_by_text = {p.embedding_text(): vector for p, vector in zip(passages, held, strict=True)}
    with open_store(store_dir) as store:
        for passage in store.iter_passages():
            np.testing.assert_array_equal(store.embedding(passage.id), held_by_text[passage.embedding_text()])


def test_a_format_1_store_is_read_and_its_first_update_drops_the_table_vectors(tmp_path: Path) -> None:
    import sqlite3

    import numpy as np
    from conftest import write_docs

    docs = write_docs(tmp_path / "docs", _topic_docs(9))
    store_dir = tmp_path / "store"
    report = index_sources(store_dir, [docs], show_progress=False)
    with open_store(store_dir) as store:
        vectors = {p.id: store.embedding(p.id) for p in store.iter_passages()}
        rowids = {p.id: store.passages.rowid_of(p.id) for p in store.iter_passages()}
        before = [h.id for h in Retriever(store).search("pump seal", k=5, mode="hybrid")]
    # what version 1 wrote: every vector also in the passage table, format_version 1 in both manifests
    table = sqlite3.connect(store_dir / report.generation / "passages.sqlite")
    table.execute("ALTER TABLE passages ADD COLUMN embedding BLOB NOT NULL DEFAULT x''")
    table.executemany("UPDATE passages SET embedding = ? WHERE rowid = ?",
                      [(vectors[pid].tobytes(), rowids[pid]) for pid in vectors])  # fmt: skip
    table.commit()
    table.close()
    for manifest in (store_dir / "manifest.json", store_dir / report.generation / "manifest.json"):
        data = json.loads(manifest.read_text())
        manifest.write_text(json.dumps({**data, "format_version": 1}))
    with open_store(store_dir) as store:
        assert [h.id for h in Retriever(store).search("pump seal", k=5, mode="hybrid")] == before
    (docs / "part0" / "extra.txt").write_text("A new note about a steam boiler safety valve.")
    updated = index_sources(store_dir, [docs], show_progress=False)
    assert updated.encoded == 1 and json.loads((store_dir / "manifest.json").read_text())["format_version"] == 2
    table = sqlite3.connect(store_dir / updated.generation / "passages.sqlite")
    assert "embedding" not in {row[1] for row in table.execute("PRAGMA table_info(passages)")}
    table.close()
    with open_store(store_dir) as store:
        for pid, vector in vectors.items():
            np.testing.assert_array_equal(store.embedding(pid), vector)
        after = [h.id for h in Retriever(store).search("pump seal", k=5, mode="hybrid")]
        assert [pid for pid in after if "extra" not in pid][:4] == before[:4]


def test_a_store_of_an_unknown_format_is_refused_with_what_to_do(tmp_path: Path) -> None:
    from conftest import write_docs

    store_dir = tmp_path / "store"
    index_sources(store_dir, [write_docs(tmp_path / "docs", _topic_docs(3))], show_progress=False)
    manifest = store_dir / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "format_version": 3}))  # a newer ragtune's
    with pytest.raises(StoreError, match=r"format version 3; this ragtune reads versions 1, 2: rebuild it"):
        open_store(store_dir)
