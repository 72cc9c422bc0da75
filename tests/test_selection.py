"""Choosing the system a user gets on dev queries, recording it in the store, and searching with it by default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragtune.cli import app
from ragtune.evaluation.selection import Candidate, candidate_specs, choose_system
from ragtune.retrieval import Fusion, Retriever, SearchMode, SearchSettings, store_search_settings
from ragtune.store import index_sources, open_store, record_search_settings, reindex_store

BM25 = SearchSettings(mode=SearchMode.bm25)
RRF = SearchSettings()
DENSE = SearchSettings(mode=SearchMode.dense)


def _candidate(label: str, model: str, settings: SearchSettings, scores: list[float]) -> Candidate:
    per_query = {f"q{i}": s for i, s in enumerate(scores)}
    return Candidate(label, model, settings, sum(scores) / len(scores), per_query)


def test_the_reference_is_the_better_of_bm25_and_the_base_hybrid() -> None:
    bm25 = _candidate("bm25", "base", BM25, [0.9, 0.8, 0.7])
    base_hybrid = _candidate("base:hybrid", "base", RRF, [0.6, 0.6, 0.6])
    tuned_dense = _candidate("tuned:dense", "tuned", DENSE, [0.9, 0.8, 0.702])  # +0.0007: below the bar
    selection = choose_system([bm25, base_hybrid, tuned_dense], base="base", min_gain=0.005)
    assert selection.reference is bm25 and selection.best is tuned_dense
    assert selection.chosen is bm25 and "kept what the user had" in selection.reason


def test_a_clearly_better_system_is_chosen_and_compared_with_the_reference() -> None:
    bm25 = _candidate("bm25", "base", BM25, [0.5, 0.4, 0.3])
    base_hybrid = _candidate("base:hybrid", "base", RRF, [0.6, 0.5, 0.4])
    convex = SearchSettings(mode=SearchMode.hybrid, fusion=Fusion.convex, alpha=0.3)
    tuned = _candidate("tuned:hybrid convex 0.30", "tuned", convex, [0.71, 0.6, 0.49])
    selection = choose_system([bm25, base_hybrid, tuned], base="base")
    assert selection.reference is base_hybrid and selection.chosen is tuned
    assert selection.comparison.delta == pytest.approx(0.1) and selection.comparison.improved == 3
    assert selection.comparison.t_test_p < 0.1 and "p " in selection.reason
    record = selection.search_record()
    assert SearchSettings.from_json(record, "") == convex and record["chosen_on"] == "3 dev queries"
    assert json.loads(json.dumps(selection.to_json()))["chosen"]["label"] == "tuned:hybrid convex 0.30"


def test_a_gain_on_too_few_or_too_noisy_dev_queries_keeps_what_the_user_had() -> None:
    bm25 = _candidate("bm25", "base", BM25, [0.5, 0.4])
    base_hybrid = _candidate("base:hybrid", "base", RRF, [0.6, 0.5])
    noisy = _candidate("tuned:dense", "tuned", DENSE, [1.0, 0.3])  # +0.1 on average, one query up, one down
    selection = choose_system([bm25, base_hybrid, noisy], base="base")
    assert selection.best is noisy and selection.chosen is base_hybrid
    assert "with p < 0.1" in selection.reason and "kept what the user had" in selection.reason


def test_candidates_cover_bm25_and_each_models_fusions_once() -> None:
    specs = candidate_specs(["base", "tuned"])
    labels = [s.label for s in specs]
    assert labels[:4] == ["bm25", "base:dense", "base:hybrid", "base:hybrid convex 0.10"]
    assert len(labels) == len(set(labels)) == 1 + 2 * 11 and "tuned:hybrid convex 0.90" in labels


def test_recorded_settings_are_the_stores_default_search(docs_dir: Path, tmp_path: Path, tiny_model_dir: Path) -> None:
    store_dir = tmp_path / "store"
    index_sources(store_dir, [docs_dir], show_progress=False)
    with open_store(store_dir) as store:
        assert store_search_settings(store) == RRF  # nothing recorded: the defaults
        expected = Retriever(store, mode=SearchMode.bm25).search("pump impeller", k=3)
    record_search_settings(store_dir, {**BM25.to_json(), "reason": "best on dev"})
    with open_store(store_dir) as store:
        retriever = Retriever(store)
        assert retriever.settings == BM25
        assert [h.id for h in retriever.search("pump impeller", k=3)] == [h.id for h in expected]
        assert Retriever(store, mode=SearchMode.dense).settings.mode is SearchMode.dense  # an explicit mode wins
    shown = CliRunner().invoke(app, ["info", "--store", str(store_dir)])
    assert shown.exit_code == 0 and "best on dev" in shown.stdout
    searched = CliRunner().invoke(app, ["search", "pump impeller", "--store", str(store_dir), "--k", "3", "--json"])
    assert searched.exit_code == 0 and [h["id"] for h in json.loads(searched.stdout)] == [h.id for h in expected]
    index_sources(store_dir, [docs_dir], show_progress=False)  # an update keeps the choice
    with open_store(store_dir) as store:
        assert store_search_settings(store) == BM25
    reindex_store(store_dir, str(tiny_model_dir), show_progress=False)  # chosen for another model: dropped
    with open_store(store_dir) as store:
        assert store_search_settings(store) == RRF and store.manifest.search == {}


def test_a_bad_recorded_setting_is_one_clear_error(docs_dir: Path, tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    index_sources(store_dir, [docs_dir], show_progress=False)
    record_search_settings(store_dir, {"mode": "hybrid", "fusion": "convex", "alpha": 3})
    result = CliRunner().invoke(app, ["search", "pump", "--store", str(store_dir)])
    assert result.exit_code == 2 and "recorded search settings" in result.output and "Traceback" not in result.output
