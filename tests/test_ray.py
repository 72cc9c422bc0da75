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
    """300 SciFact abstracts: ~600 passages, about ten batches of 64 per run."""
    folder = tmp_path_factory.mktemp("ray-corpus")
    lines = (shipped_dataset("scifact") / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:300]
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / "corpus.jsonl"


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


def test_ray_local_stores_what_the_local_path_stores(engine: str, tmp_path: Path, corpus: Path, request) -> None:  # type: ignore[no-untyped-def]
    from conftest import new_store

    here, there = new_store(engine, tmp_path, request), new_store(engine, tmp_path, request)
    local = index(corpus, here, tmp_path / "cache-local.sqlite")
    clustered = index(corpus, there, tmp_path / "cache-ray.sqlite", "--ray", "local", "--ray-workers", "2")
    assert clustered["encoded"] == local["encoded"] == local["passages_total"] > 500
    assert len(clustered["workers"]) == 2 and sum(w["texts"] for w in clustered["workers"]) == local["encoded"]
    expected, got = contents(here), contents(there)
    assert list(got) == list(expected)  # same passage ids, same order
    for passage_id, (text, vector) in expected.items():
        assert got[passage_id][0] == text
        assert float(vector @ got[passage_id][1]) >= 0.9999, passage_id


def test_a_killed_encoding_actor_is_restarted_and_nothing_is_lost(tmp_path: Path, corpus: Path) -> None:
    local = index(corpus, str(tmp_path / "local"), tmp_path / "cache-local.sqlite")
    marker = tmp_path / "killed-once"
    run = index_run(
        corpus, str(tmp_path / "ray"), tmp_path / "cache-ray.sqlite", "--ray", "local", "--ray-workers", "2",
        env={"RAGTUNE_KILL_AT": "ray-encode-batch:2", "RAGTUNE_KILL_ONCE": str(marker)},
    )  # fmt: skip
    clustered = json.loads(run.stdout)  # stdout is the JSON report only: Ray's messages went to stderr
    assert marker.exists()  # an actor did die with SIGKILL on its second batch
    assert "will be retried" in run.stderr  # and the retry was reported
    assert clustered["encoded"] == local["encoded"] == clustered["passages_total"] == local["passages_total"]
    assert sum(w["texts"] for w in clustered["workers"]) == local["encoded"]  # the lost batch counted once
    expected, got = contents(str(tmp_path / "local")), contents(str(tmp_path / "ray"))
    assert list(got) == list(expected)
    assert min(float(v @ got[i][1]) for i, (_, v) in expected.items()) >= 0.9999


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
