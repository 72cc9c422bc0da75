"""Encoding on a Ray cluster (`--ray local`: a real local cluster with 2 CPUs, started by the command): the same
passages and vectors as the local path on both engines, and an encoding actor killed with SIGKILL mid-run is restarted
by Ray with its batch retried — the run completes with every passage stored once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ragtune.datasets import shipped_dataset
from ragtune.store import open_store

pytestmark = pytest.mark.integration

RAGTUNE = [sys.executable, "-m", "ragtune"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """150 SciFact abstracts: ~300 passages, about ten CPU batches per run."""
    folder = tmp_path_factory.mktemp("ray-corpus")
    lines = (shipped_dataset("scifact") / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:150]
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / "corpus.jsonl"


@pytest.fixture(scope="module")
def local_contents(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, np.ndarray]]:
    """What the local path stores: the reference both engines' cluster runs are held to."""
    from ragtune.store import index_sources

    folder = tmp_path_factory.mktemp("ray-local")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAGTUNE_EMBEDDING_CACHE", str(folder / "cache.sqlite"))
        report = index_sources(folder / "store", [corpus], show_progress=False)
    assert report.encoded == report.passages_total > 250
    return contents(str(folder / "store"))


def index(corpus: Path, store: str, cache: Path, *extra: str, env: dict[str, str] | None = None) -> dict:
    return json.loads(index_run(corpus, store, cache, *extra, env=env).stdout)


def index_run(
    corpus: Path, store: str, cache: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*RAGTUNE, "index", str(corpus), "--store", store, "--json", *extra],
        env={**os.environ, "RAGTUNE_EMBEDDING_CACHE": str(cache), **(env or {})},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def contents(store: str) -> dict[str, tuple[str, np.ndarray]]:
    with open_store(store) as opened:
        return {p.id: (p.text, opened.embedding(p.id)) for p in opened.iter_passages()}


def assert_same_contents(got: dict[str, tuple[str, np.ndarray]], expected: dict[str, tuple[str, np.ndarray]]) -> None:
    assert list(got) == list(expected)  # same passage ids, same order
    for passage_id, (text, vector) in expected.items():
        assert got[passage_id][0] == text
        assert float(vector @ got[passage_id][1]) >= 0.9999, passage_id


def test_ray_local_stores_what_the_local_path_stores(tmp_path: Path, corpus: Path, local_contents) -> None:  # type: ignore[no-untyped-def]
    clustered = index(corpus, str(tmp_path / "ray"), tmp_path / "cache.sqlite", "--ray", "local", "--ray-workers", "2")
    assert clustered["encoded"] == clustered["passages_total"] == len(local_contents)
    assert len(clustered["workers"]) == 2 and sum(w["texts"] for w in clustered["workers"]) == len(local_contents)
    assert all(w["texts_per_second"] > 0 for w in clustered["workers"])
    assert_same_contents(contents(str(tmp_path / "ray")), local_contents)


def test_a_killed_actor_writing_into_postgresql_is_restarted_and_nothing_is_lost(  # type: ignore[no-untyped-def]
    tmp_path: Path, corpus: Path, local_contents, postgres_address: str
) -> None:
    """On the PostgreSQL engine, with one encoding actor killed (SIGKILL) at its second batch."""
    store = f"{postgres_address}?store=ray_killed"
    marker = tmp_path / "killed-once"
    run = index_run(
        corpus, store, tmp_path / "cache.sqlite", "--ray", "local", "--ray-workers", "2",
        env={"RAGTUNE_KILL_AT": "ray-encode-batch:2", "RAGTUNE_KILL_ONCE": str(marker)},
    )  # fmt: skip
    clustered = json.loads(run.stdout)  # stdout is the JSON report only: Ray's messages went to stderr
    assert marker.exists()  # an actor did die with SIGKILL on its second batch
    assert "will be retried" in run.stderr  # and the retry was reported
    assert clustered["encoded"] == clustered["passages_total"] == len(local_contents)
    assert sum(w["texts"] for w in clustered["workers"]) == len(local_contents)  # the lost batch counted once
    assert_same_contents(contents(store), local_contents)


def test_reindex_and_mine_on_ray_give_what_the_local_path_gives(  # type: ignore[no-untyped-def]
    tmp_path: Path, corpus: Path, tiny_model_dir: Path
) -> None:
    """`reindex --ray local` stores the local reindex's vectors; `mine --ray local` picks the local mining's
    negatives. Each run has its own embedding cache, so the cluster really encodes."""
    import shutil

    from ragtune.training.pairs import PairMethod, PairsConfig, build_pairs

    index(corpus, str(tmp_path / "local"), tmp_path / "build.sqlite")
    shutil.copytree(tmp_path / "local", tmp_path / "ray")
    runs = {}
    for where, extra in [("local", ()), ("ray", ("--ray", "local", "--ray-workers", "2"))]:
        cache = tmp_path / f"{where}-cache.sqlite"
        done = subprocess.run(
            [*RAGTUNE, "reindex", "--store", str(tmp_path / where), "--model", str(tiny_model_dir), *extra],
            env={**os.environ, "RAGTUNE_EMBEDDING_CACHE": str(cache)}, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        runs[where] = done.stdout + done.stderr
    assert "ray worker" in runs["ray"] and "ray worker" not in runs["local"]  # the cluster did the encoding
    assert_same_contents(contents(str(tmp_path / "ray")), contents(str(tmp_path / "local")))

    build_pairs(tmp_path / "local", tmp_path / "pairs.jsonl", PairsConfig(method=PairMethod.ict), show_progress=False)
    mined = {}
    for where, extra in [("local", ()), ("ray", ("--ray", "local", "--ray-workers", "2"))]:
        done = subprocess.run(
            [*RAGTUNE, "mine", str(tmp_path / "pairs.jsonl"), "--store", str(tmp_path / "local"), "--negatives", "2",
             "--out", str(tmp_path / f"mined-{where}.jsonl"), *extra],  # MiniLM: the tiny model's scores all tie
            env={**os.environ, "RAGTUNE_EMBEDDING_CACHE": str(tmp_path / f"mine-{where}.sqlite")},
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        mined[where] = [json.loads(line) for line in (tmp_path / f"mined-{where}.jsonl").read_text().splitlines()]
    assert len(mined["ray"]) == len(mined["local"]) > 100
    assert [(r["query"], r["positive"]) for r in mined["ray"]] == [(r["query"], r["positive"]) for r in mined["local"]]
    pairs = zip(mined["ray"], mined["local"], strict=True)
    negatives = [(set(a.get("negatives", [])), set(b.get("negatives", []))) for a, b in pairs]
    same = sum(len(a & b) for a, b in negatives) / sum(len(b) for _, b in negatives)
    assert sum(len(b) for _, b in negatives) > 100 and same >= 0.95, same  # a near tie may swap, little else


def test_without_ray_installed_the_flag_says_how_to_get_it(tmp_path: Path, corpus: Path) -> None:
    code = (
        "import sys; sys.modules['ray'] = None; from ragtune.cli import app; "
        f"app(['index', {str(corpus)!r}, '--store', {str(tmp_path / 's')!r}, '--ray', 'local'], prog_name='ragtune')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: optional dependency 'ray' is not installed; run: pip install 'ragtune[ray]'  (encoding on a Ray "
        "cluster)"
    ]
    assert not (tmp_path / "s").exists()


def test_ray_with_the_hybrid_teacher_is_refused_not_ignored(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from conftest import write_jsonl
    from ragtune.cli import app

    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"query": "pump seal", "positive": "Replace the seal."}])
    result = CliRunner().invoke(app, ["mine", str(pairs), "--out", str(tmp_path / "out.jsonl"), "--corpus",
                                      str(tmp_path), "--teacher", "hybrid", "--ray", "local"])  # fmt: skip
    assert result.exit_code == 2 and "--ray does not work with --teacher" in result.output, result.output
    assert not (tmp_path / "out.jsonl").exists()
