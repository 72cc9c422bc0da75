"""TSDAE pre-adaptation: sentences from a store, the deletion noise, and training mechanics on a tiny model."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from conftest import TEST_THREADS, unwrapped, write_docs
from ragtune.errors import InputError
from ragtune.store import index_sources
from ragtune.training.tsdae import TSDAE_RECORD, TsdaeConfig, delete_words, store_sentences, tsdae_adapt

SENTENCES = [
    "Cavitation damages the impeller when the inlet pressure drops too low.",
    "Replace the mechanical seal every two years and check the bearings.",
    "Bake the sourdough bread at 230 degrees for forty minutes.",
    "Let the dough rise overnight in the fridge before baking it.",
    "Gate valves are fully open or fully closed in normal service.",
    "Tomatoes need six hours of sun and deep watering every week.",
]


def test_deletion_noise_drops_words_but_never_all() -> None:
    rng = random.Random(0)
    sentence = " ".join(f"w{i}" for i in range(1000))
    kept = delete_words(sentence, 0.6, rng).split()
    assert 300 < len(kept) < 500 and set(kept) <= set(sentence.split())
    assert all(delete_words("one two", 0.99, rng) in ("one", "two", "one two") for _ in range(50))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tsdae")
    docs = write_docs(root / "docs", {"a.txt": " ".join(SENTENCES) + " Too short here."})
    index_sources(root / "store", [docs], model="minilm", show_progress=False)
    return root / "store"


def test_store_sentences_takes_whole_sentences_of_the_allowed_length(store: Path) -> None:
    assert sorted(store_sentences(store, TsdaeConfig(min_words=6, max_sentences=None))) == sorted(SENTENCES)
    assert len(store_sentences(store, TsdaeConfig(max_sentences=2))) == 2
    with pytest.raises(InputError, match="no sentences"):
        store_sentences(store, TsdaeConfig(min_words=50))


def test_tsdae_lowers_the_reconstruction_loss_and_writes_a_loadable_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    config = TsdaeConfig(base=str(tiny_model_dir), epochs=60, batch_size=6, learning_rate=2e-3, threads=TEST_THREADS)
    result = tsdae_adapt(SENTENCES, tmp_path / "adapted", config)
    assert result.steps == 60 and result.first_loss is not None and result.last_loss is not None
    assert result.last_loss < 0.6 * result.first_loss  # it learns to rebuild the sentences
    record = json.loads((tmp_path / "adapted" / TSDAE_RECORD).read_text())
    assert record["method"] == "tsdae" and record["result"]["sentences"] == len(SENTENCES)
    vectors = SentenceTransformer(str(tmp_path / "adapted"), device="cpu").encode(SENTENCES[:2])
    assert vectors.shape == (2, 32)
    assert not (tmp_path / "adapted.checkpoints").exists()


def test_tsdae_stops_at_its_time_budget(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = TsdaeConfig(
        base=str(tiny_model_dir), epochs=1000, batch_size=2, threads=TEST_THREADS, time_budget_minutes=0.05
    )
    result = tsdae_adapt(SENTENCES, tmp_path / "adapted", config)
    assert 1 <= result.steps < 3000 and (tmp_path / "adapted" / TSDAE_RECORD).exists()


def test_tsdae_refuses_a_deletion_ratio_outside_zero_to_one(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--deletion-ratio"):
        tsdae_adapt(SENTENCES, tmp_path / "x", TsdaeConfig(deletion_ratio=1.0))


def test_tsdae_cli(store: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ragtune.cli import app

    runner = CliRunner()
    args = ["tsdae", "--store", str(store), "--out", str(tmp_path / "m"), "--base", str(tiny_model_dir)]
    result = runner.invoke(app, [*args, "--epochs", "1", "--threads", str(TEST_THREADS)])
    assert result.exit_code == 0, result.output
    assert "6 sentences" in unwrapped(result.stdout) and (tmp_path / "m" / TSDAE_RECORD).exists()
    wrong = runner.invoke(app, [*args, "--deletion-ratio", "1.5"])
    assert wrong.exit_code == 2 and "--deletion-ratio" in wrong.stderr
    nowhere = runner.invoke(app, ["tsdae", "--store", str(tmp_path / "none"), "--out", str(tmp_path / "n")])
    assert nowhere.exit_code == 2 and "does not exist" in nowhere.stderr
