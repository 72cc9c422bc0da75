"""Evaluation: dataset checks, metric parity with hand computation and pytrec_eval, significance, reports."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import time
from itertools import product
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ragtune.cli import app
from ragtune.errors import InputError
from ragtune.evaluation import evaluate_systems, load_beir, per_query_scores, write_report
from ragtune.evaluation.significance import compare, paired_randomization_test, paired_t_test
from ragtune.store import open_store

from conftest import write_jsonl

CORPUS = [
    {"_id": "p1", "title": "Centrifugal pumps", "text": "Cavitation damages the impeller when inlet pressure is low."},
    {"_id": "p2", "title": "Pump seals", "text": "Replace the mechanical seal of the pump every two years."},
    {"_id": "v1", "title": "Gate valves", "text": "Gate valves must not be used to throttle flow."},
    {"_id": "b1", "title": "Sourdough", "text": "Bake the bread at 230 degrees for forty minutes."},
    {"_id": "t1", "title": "Tomatoes", "text": "Tomatoes need six hours of sun and deep watering."},
    {"_id": "m1", "title": "Motors", "text": "Induction motors need a balanced three-phase supply."},
]
QUERIES = [
    {"_id": "q1", "text": "why is my impeller damaged"},
    {"_id": "q2", "text": "how often to change the pump seal"},
    {"_id": "q3", "text": "can a gate valve throttle"},
    {"_id": "q4", "text": "baking temperature for bread"},
    {"_id": "q5", "text": "unjudged query"},
]


def make_dataset(root: Path, qrels: str | None = None, corpus: list[dict] | None = None) -> Path:
    write_jsonl(root / "corpus.jsonl", corpus or CORPUS)
    write_jsonl(root / "queries.jsonl", QUERIES)
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    default = "query-id\tcorpus-id\tscore\nq1\tp1\t2\nq1\tp2\t1\nq2\tp2\t1\nq3\tv1\t1\nq4\tb1\t1\n"
    (root / "qrels" / "test.tsv").write_text(qrels if qrels is not None else default)
    return root


def test_load_with_and_without_header_and_graded(tmp_path: Path) -> None:
    data = load_beir(make_dataset(tmp_path / "d"))
    assert set(data.queries) == {"q1", "q2", "q3", "q4"}
    assert data.qrels["q1"] == {"p1": 2, "p2": 1}
    assert data.has_titles and not data.warnings
    no_header = load_beir(make_dataset(tmp_path / "e", qrels="q1\tp1\t1\nq2\tp2\t1\n"))
    assert no_header.qrels == {"q1": {"p1": 1}, "q2": {"p2": 1}}


def test_unknown_ids_are_reported_not_dropped(tmp_path: Path) -> None:
    data = load_beir(make_dataset(tmp_path / "d", qrels="q1\tp1\t1\nq1\tghost\t1\nq9\tp1\t1\n"))
    assert any("1 judged document ids are not in corpus.jsonl (e.g. ghost)" in w for w in data.warnings)
    assert any("1 judged query ids are not in queries.jsonl (e.g. q9)" in w for w in data.warnings)
    assert data.qrels == {"q1": {"p1": 1, "ghost": 1}}


def test_bad_datasets_give_clear_errors(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "d")
    with pytest.raises(InputError, match="no qrels for split 'dev'.*available splits: test"):
        load_beir(root, "dev")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tp1\t1\nq2 p2 1\n")
    with pytest.raises(InputError, match=r"test\.tsv:3: expected 'query-id<TAB>corpus-id<TAB>score'"):
        load_beir(root)
    (root / "qrels" / "test.tsv").write_text("q1\tp1\tvery\n")
    with pytest.raises(InputError, match=r"test\.tsv:1: relevance 'very' is not a number"):
        load_beir(root)
    write_jsonl(root / "queries.jsonl", [{"_id": "q1", "text": "  "}])
    (root / "qrels" / "test.tsv").write_text("q1\tp1\t1\n")
    with pytest.raises(InputError, match="empty text"):
        load_beir(root)
    with pytest.raises(InputError, match="does not exist"):
        load_beir(tmp_path / "missing")


def test_dataset_without_titles_loads(tmp_path: Path) -> None:
    corpus = [{"_id": d["_id"], "text": d["text"]} for d in CORPUS]
    data = load_beir(make_dataset(tmp_path / "d", corpus=corpus))
    assert not data.has_titles and len(data.queries) == 4


def test_metrics_match_hand_computation_and_pytrec_eval() -> None:
    qrels = {"q1": {"a": 2, "b": 1, "z": 1}, "q2": {"c": 1}}
    run = {"q1": {"b": 0.9, "x": 0.8, "a": 0.7}, "q2": {"y": 0.5, "c": 0.4}}
    scores = per_query_scores(qrels, run, ["ndcg@10", "recall@10", "mrr@10", "map@100"])
    dcg = 1 / math.log2(2) + 2 / math.log2(4)
    ideal = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert scores["ndcg@10"]["q1"] == pytest.approx(dcg / ideal)
    assert scores["recall@10"]["q1"] == pytest.approx(2 / 3)
    assert scores["mrr@10"]["q2"] == pytest.approx(0.5)
    assert scores["map@100"]["q1"] == pytest.approx((1 / 1 + 2 / 3) / 3)

    import pytrec_eval

    reference = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.10", "map_cut.100"}).evaluate(run)
    for qid in qrels:
        assert scores["ndcg@10"][qid] == pytest.approx(reference[qid]["ndcg_cut_10"])
        assert scores["recall@10"][qid] == pytest.approx(reference[qid]["recall_10"])
        assert scores["map@100"][qid] == pytest.approx(reference[qid]["map_cut_100"])


def test_missing_query_in_run_scores_zero() -> None:
    scores = per_query_scores({"q1": {"a": 1}, "q2": {"b": 1}}, {"q1": {"a": 1.0}}, ["ndcg@10"])
    assert scores["ndcg@10"] == {"q1": 1.0, "q2": 0.0}


def test_t_test_matches_scipy_and_the_formula() -> None:
    from scipy import stats

    a = np.array([0.2, 0.5, 0.1, 0.7, 0.4, 0.3, 0.9, 0.6])
    b = np.array([0.3, 0.55, 0.1, 0.9, 0.35, 0.5, 0.95, 0.8])
    d = b - a
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    assert paired_t_test(a, b) == pytest.approx(2 * stats.t.sf(abs(t), len(d) - 1))
    assert paired_t_test(a, b) == pytest.approx(stats.ttest_rel(b, a).pvalue)
    assert paired_t_test(a, a) == 1.0


def test_randomization_test_is_exact_for_small_samples() -> None:
    a = np.array([0.2, 0.5, 0.1, 0.7, 0.4, 0.3, 0.9, 0.6])
    b = np.array([0.3, 0.55, 0.1, 0.9, 0.35, 0.5, 0.95, 0.8])
    d = b - a
    observed = abs(d.mean())
    flips = [abs(np.mean(d * np.array(signs))) for signs in product([1, -1], repeat=len(d))]
    expected = np.mean([f >= observed - 1e-12 for f in flips])
    assert paired_randomization_test(a, b) == pytest.approx(expected)


def test_compare_counts_query_deltas() -> None:
    c = compare("ndcg@10", {"q1": 0.5, "q2": 0.5, "q3": 0.2}, {"q1": 0.7, "q2": 0.5, "q3": 0.1})
    assert (c.improved, c.worse, c.unchanged) == (1, 1, 1)
    assert c.delta == pytest.approx((0.2 - 0.1) / 3)


@pytest.mark.integration
def test_evaluation_end_to_end_writes_every_output(tmp_path: Path) -> None:
    data = load_beir(make_dataset(tmp_path / "tiny"))
    cache = tmp_path / "cache"
    evaluation = evaluate_systems(data, models=["minilm"], k=10, cache_dir=cache, show_progress=False)
    assert [s.label for s in evaluation.systems] == ["bm25", "minilm:dense", "minilm:hybrid"]
    dense = evaluation.systems[1]
    assert dense.metrics["ndcg@10"] > 0.8
    out = tmp_path / "out"
    data_json = write_report(evaluation, out)
    for name in ("metrics.json", "report.md", "metrics.png", "delta_minilm_dense.png", "runs/bm25.trec"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["systems"][1]["metrics"] == pytest.approx(dense.metrics)
    assert saved["versions"]["torch"] == "2.13.0+cpu" or saved["versions"]["torch"].startswith("2.13.0")
    assert {c["metric"] for c in saved["comparisons"]["minilm:dense"]} == set(data_json["settings"]["metrics"])
    first_line = (out / "runs" / "minilm_dense.trec").read_text().splitlines()[0].split()
    assert first_line[1] == "Q0" and first_line[3] == "1" and first_line[5] == "minilm_dense"
    assert "paired t-test" in (out / "report.md").read_text()

    stores = list(cache.iterdir())
    generation = json.loads((stores[0] / "manifest.json").read_text())["generation"]
    evaluate_systems(data, models=["minilm"], modes=["dense"], k=10, cache_dir=cache, show_progress=False)
    assert json.loads((stores[0] / "manifest.json").read_text())["generation"] == generation
    assert list(cache.iterdir()) == stores


@pytest.mark.integration
def test_eval_cli_json_and_errors(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "tiny")
    runner = CliRunner()
    args = ["eval", str(root), "--mode", "bm25", "--mode", "dense", "--k", "10", "--cache-dir", str(tmp_path / "c")]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [s["label"] for s in data["systems"]] == ["bm25", "minilm:dense"]
    table = runner.invoke(app, args)
    assert "minilm:dense" in table.stdout and "paired t-test" in table.stdout
    missing = runner.invoke(app, ["eval", str(root), "--split", "dev"])
    assert missing.exit_code == 2 and "available splits: test" in missing.stderr


@pytest.mark.integration
def test_eval_keeps_its_stores_in_postgresql_and_reuses_them(tmp_path: Path, postgres_address: str) -> None:
    data = load_beir(make_dataset(tmp_path / "tiny"))
    cache = f"{postgres_address}?store=unused"
    folder = evaluate_systems(data, models=["minilm"], k=10, cache_dir=tmp_path / "c", show_progress=False)
    first = evaluate_systems(data, models=["minilm"], k=10, cache_dir=cache, show_progress=False)
    assert first.settings["encoding"]["minilm"]["encoded"] == 0  # the folder store's vectors, from the cache
    stores = {s.store for s in first.systems}
    assert len(stores) == 1 and stores.pop().startswith(postgres_address) and "store=eval_" in first.systems[0].store
    for on_disk, in_postgres in zip(folder.systems, first.systems, strict=True):
        assert on_disk.label == in_postgres.label
        if on_disk.mode == "dense":
            assert in_postgres.metrics == pytest.approx(on_disk.metrics, abs=1e-6)
    with open_store(first.systems[0].store) as store:
        generation = store.manifest.generation
    again = evaluate_systems(data, models=["minilm"], modes=["dense"], k=10, cache_dir=cache, show_progress=False)
    assert again.systems[0].store == first.systems[0].store
    with open_store(first.systems[0].store) as store:
        assert store.manifest.generation == generation  # reused, not rebuilt


def test_scoring_prints_no_numba_note_when_ranx_compiles(tmp_path: Path) -> None:
    """A fresh install compiles ranx's kernels on first use; numba's cast note must not reach the user's terminal."""
    import os
    import subprocess
    import sys

    script = (
        "import warnings; warnings.simplefilter('always')\n"
        "from ragtune.evaluation.metrics import per_query_scores\n"
        "print(per_query_scores({'q': {'d': 1}}, {'q': {'d': 1.0, 'e': 0.5}}, ['ndcg@10'])['ndcg@10']['q'])\n"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}  # empty cache: the kernels compile now
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1.0"
    assert "NumbaTypeSafetyWarning" not in done.stderr and "unsafe cast" not in done.stderr


def test_two_evaluations_at_once_share_one_store_instead_of_one_failing(tmp_path: Path, tiny_model_dir: Path) -> None:
    rng = random.Random(0)
    words = "pump seal valve bearing shaft motor gasket flange impeller casing coupling torque pressure flow".split()
    root = tmp_path / "beir"
    write_jsonl(root / "corpus.jsonl", [{"_id": f"d{i}", "title": "", "text": " ".join(rng.choices(words, k=30)) +
                                         f" part{i}"} for i in range(3000)])  # fmt: skip  # some seconds to index
    write_jsonl(root / "queries.jsonl", [{"_id": f"q{i}", "text": f"part{i} seal"} for i in range(30)])
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(30)))
    env = {**os.environ, "RAGTUNE_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    command = [sys.executable, "-m", "ragtune.cli", "eval", str(root), "--model", str(tiny_model_dir), "--mode", "dense",
               "--json"]  # fmt: skip
    first = subprocess.Popen([*command, "--out", str(tmp_path / "a")], env=env, stdout=subprocess.PIPE, text=True)
    stores = tmp_path / "cache" / "eval-stores"
    deadline = time.monotonic() + 120
    while not any(p.is_dir() for p in stores.glob("beir-*")) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    second = subprocess.run([*command, "--out", str(tmp_path / "b")], env=env, capture_output=True, text=True)
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, second.stderr[-2000:]  # before: "being written by another"
    scores = [json.loads(text)["systems"][0]["metrics"] for text in (out, second.stdout)]
    assert scores[0] == scores[1] and len([p for p in stores.iterdir() if p.is_dir()]) == 1
