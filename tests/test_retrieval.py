"""Retrieval modes, filters and query validation on a small store built with the real MiniLM."""

from __future__ import annotations


import pytest

from ragtune import Retriever, index_sources, open_store
from ragtune.store import StoreReader
from ragtune.errors import InputError
from conftest import ENGINES, new_store, rel, write_docs

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=[*ENGINES, "postgresql-hnsw"])
def store(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Each engine; PostgreSQL also through its HNSW index (built from the first passage on), filters included."""
    from ragtune.store import postgres

    root = tmp_path_factory.mktemp("retrieval")
    docs = write_docs(root / "docs")
    address = new_store(request.param.removesuffix("-hnsw"), root, request)
    with pytest.MonkeyPatch.context() as patch:
        if request.param.endswith("-hnsw"):
            patch.setattr(postgres, "HNSW_FROM", 1)
            address += "&m=8&ef_construction=32&ef_search=40"  # the index's settings, from the address
        report = index_sources(address, [docs], show_progress=False)
    with open_store(address) as opened:
        if request.param.endswith("-hnsw"):
            assert report.dense_kind == "hnsw"
            assert opened.info()["backends"]["hnsw"] == "m=8,ef_construction=32"
        yield opened


def test_dense_finds_meaning_without_shared_words(store: StoreReader) -> None:
    [hit] = Retriever(store).search("how long should I cook a loaf", k=1, mode="dense")
    assert rel(hit.doc_id) == "docs/notes/cooking.txt"
    assert rel(hit.source) == "docs/notes/cooking.txt" and hit.title == "cooking"


def test_bm25_uses_english_stemming(store: StoreReader) -> None:
    hits = Retriever(store).search("pumps", k=5, mode="bm25")
    assert [rel(h.doc_id) for h in hits] == ["docs/guide/pumps.md"]
    assert Retriever(store).search("throttling", k=5, mode="bm25")[0].doc_id.endswith("/docs/guide/valves.txt")


def test_query_syntax_characters_are_plain_text(store: StoreReader) -> None:
    hits = Retriever(store).search('gate: valve (throttle) AND "flow', k=2, mode="bm25")
    assert hits[0].doc_id.endswith("/docs/guide/valves.txt")


@pytest.mark.parametrize("fusion", ["rrf", "convex"])
def test_hybrid_fuses_both_lists(store: StoreReader, fusion: str) -> None:
    hits = Retriever(store, fusion=fusion).search("impeller cavitation", k=4, mode="hybrid")
    assert hits[0].doc_id.endswith("/docs/guide/pumps.md")
    assert len(hits) == 4
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_hybrid_rrf_scores_are_reciprocal_ranks(store: StoreReader) -> None:
    retriever = Retriever(store, rrf_k=60)
    dense = [h.id for h in retriever.search("impeller cavitation", k=4, mode="dense")]
    bm25 = [h.id for h in retriever.search("impeller cavitation", k=4, mode="bm25")]
    hybrid = retriever.search("impeller cavitation", k=4, mode="hybrid")
    for hit in hybrid:
        expected = sum(1 / (60 + ranking.index(hit.id) + 1) for ranking in (dense, bm25) if hit.id in ranking)
        assert hit.score == pytest.approx(expected)


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_filters(store: StoreReader, mode: str) -> None:
    retriever = Retriever(store)
    in_notes = retriever.search("water", k=10, mode=mode, filters=[("source", "docs/notes")])
    assert in_notes and all(rel(h.source).startswith("docs/notes/") for h in in_notes)
    markdown = retriever.search("water", k=10, mode=mode, filters=[("format", "md")])
    assert [rel(h.doc_id) for h in markdown] == ["docs/guide/pumps.md"]
    assert retriever.search("water", k=10, mode=mode, filters=[("format", "pdf")]) == []


def test_source_prefix_does_not_match_sibling_names(store: StoreReader) -> None:
    assert Retriever(store).search("valve", k=10, mode="bm25", filters=[("source", "docs/gui")]) == []


@pytest.mark.parametrize("k", [0, -3])
def test_k_must_be_positive(store: StoreReader, k: int) -> None:
    with pytest.raises(InputError, match="k must be at least 1"):
        Retriever(store).search("pump", k=k)


def test_whitespace_query_is_refused(store: StoreReader) -> None:
    with pytest.raises(InputError, match="empty or only whitespace"):
        Retriever(store).search("   \n\t", k=3)


def test_k_larger_than_store(store: StoreReader) -> None:
    for mode in ("dense", "bm25", "hybrid"):
        assert len(Retriever(store).search("water pump valve bread tomato", k=50, mode=mode)) <= 4


def test_query_words_joined_by_underscores_or_symbols(store: StoreReader) -> None:
    """Found by the load test: 'CRF01_1b2k' became a phrase query and failed on the index."""
    hits = Retriever(store).search("gate_valve throttle-flow α2β1 CRF01_1b2k", k=2, mode="bm25")
    assert hits[0].doc_id.endswith("/docs/guide/valves.txt")
