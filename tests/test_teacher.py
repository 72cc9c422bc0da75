"""The hybrid teacher (scores, exclusions) and the distillation losses that learn from it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ragtune.errors import InputError
from ragtune.training.examples import TrainingExample, read_training_jsonl, write_training_jsonl
from ragtune.training.finetune import (
    STUDENT_TEMPERATURE,
    TEACHER_TEMPERATURE,
    SumOfLosses,
    carve_dev_set,
    finetune,
)
from ragtune.training.mining import bm25_ranked
from ragtune.training.teacher import TeacherConfig, teacher_scored_examples
from test_training import _losses, _tiny_config, toy_examples


def scored_toy_examples() -> list[TrainingExample]:
    return [TrainingExample(e.query, e.positive, e.negatives, (0.9, 0.2)) for e in toy_examples()]


@pytest.mark.parametrize("loss", ["distill", "mnrl-distill"])
def test_distillation_losses_train_and_decrease(tiny_model_dir: Path, tmp_path: Path, loss: str) -> None:
    dev = carve_dev_set(toy_examples()[:2], [], 0, seed=0)
    result = finetune(scored_toy_examples() * 2, tmp_path / "model", _tiny_config(tiny_model_dir, loss=loss), dev=dev)
    history = _losses(result.log_history)
    assert len(history) >= 2 and history[-1] < history[0], history


def test_distillation_needs_scores(tiny_model_dir: Path, tmp_path: Path) -> None:
    dev = carve_dev_set(toy_examples()[:2], [], 0, seed=0)
    with pytest.raises(InputError, match="needs teacher scores"):
        finetune(toy_examples(), tmp_path / "m", _tiny_config(tiny_model_dir, loss="distill"), dev=dev)


def test_sum_of_losses_equals_the_library_losses_added(tiny_model_dir: Path) -> None:
    """One forward pass for both parts gives what MNRL and DistillKLDivLoss give on their own."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import losses

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    model.eval()
    examples = scored_toy_examples()[:4]
    columns = [[e.query for e in examples], [e.positive for e in examples], [e.negatives[0] for e in examples]]
    features = [model.tokenize(texts) for texts in columns]
    labels = torch.tensor([list(e.scores) for e in examples])
    mnrl = losses.MultipleNegativesRankingLoss(model)
    distill = losses.DistillKLDivLoss(model, student_temperature=STUDENT_TEMPERATURE,
                                      teacher_temperature=TEACHER_TEMPERATURE)  # fmt: skip
    with torch.no_grad():
        combined = SumOfLosses(model, [mnrl, distill])(features, labels)
        separate = mnrl(features, labels) + distill(features, labels)
    assert float(combined) == pytest.approx(float(separate), rel=1e-5)


def test_scores_survive_the_training_file_and_bad_ones_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    write_training_jsonl(path, scored_toy_examples())
    assert read_training_jsonl(path) == scored_toy_examples()
    path.write_text('{"query": "q", "positive": "p", "negatives": ["n"], "scores": [0.5]}\n')
    with pytest.raises(InputError, match=r"t\.jsonl:1: 'scores' must be a list of numbers, one for the positive"):
        read_training_jsonl(path)


CORPUS = [
    "Cavitation erodes the pump impeller when the inlet pressure is too low.",
    "The impeller of a centrifugal pump spins inside the volute casing.",
    "Pump seals leak when the shaft is misaligned.",
    "Gate valves should not be used to throttle flow.",
    "Knead the sourdough bread and bake it at 230 degrees.",
    "Tomatoes need six hours of sun and regular watering.",
    "Induction motors need a balanced three-phase supply.",
    "Ball bearings get noisy when their grease dries out.",
]


@pytest.mark.integration
@pytest.mark.parametrize("dense_weight", [0.0, 0.5, 1.0])
def test_teacher_scores_are_the_hybrid_fusion_of_dense_and_bm25(  # type: ignore[no-untyped-def]
    minilm, dense_weight: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sentence_transformers import SentenceTransformer

    monkeypatch.setenv("RAGTUNE_PRECISION", "fp32")  # compared with the library's fp32 vectors below

    query = "why does the pump impeller wear out"
    positive = "Low inlet pressure makes bubbles that collapse on the impeller vanes and pit the metal."
    sibling = CORPUS[0]
    examples = [TrainingExample(query, positive)]
    config = TeacherConfig(negatives=3, pool=5, depth=8, dense_weight=dense_weight)
    scored, report = teacher_scored_examples(examples, CORPUS, minilm, config, never_negative={query: [sibling]})
    assert report.examples == 1
    (example,) = scored
    assert example.positive == positive and len(example.negatives) == 3 and len(example.scores) == 4
    assert sibling not in example.negatives and positive not in example.negatives

    # The same fusion, computed here from the model and BM25 directly.
    texts = [*CORPUS, positive]
    model = SentenceTransformer(str(minilm.path), device="cpu")
    vectors = model.encode([query, *texts], normalize_embeddings=True)
    cosines = vectors[1:] @ vectors[0]
    high, low = np.sort(cosines)[-1], np.sort(cosines)[-8]  # depth 8 of 9 texts: the list's last is the 8th best
    ids, bm25 = bm25_ranked([query], texts, 8)[0]
    bm25_norm = dict(zip(ids.tolist(), ((bm25 - bm25.min()) / (bm25.max() - bm25.min())).tolist(), strict=True))

    def expected(text: str) -> float:
        i = texts.index(text)
        dense = min(1.0, max(0.0, (cosines[i] - low) / (high - low)))
        return dense_weight * dense + (1 - dense_weight) * bm25_norm.get(i, 0.0)

    for text, score in zip([example.positive, *example.negatives], example.scores, strict=True):
        assert score == pytest.approx(expected(text), abs=1e-4)
    fifth_best = sorted((expected(t) for t in CORPUS if t != sibling), reverse=True)[4]
    assert all(expected(t) >= fifth_best - 1e-6 for t in example.negatives)  # drawn from the teacher's top 5


def test_teacher_settings_are_checked() -> None:
    with pytest.raises(InputError, match="negatives ≤ pool ≤ depth"):
        TeacherConfig(negatives=5, pool=3).check()
    with pytest.raises(InputError, match="--teacher cross: the teacher is one of hybrid"):
        TeacherConfig(kind="cross").check()
    with pytest.raises(InputError, match="dense weight"):
        TeacherConfig(dense_weight=1.5).check()


@pytest.mark.integration
def test_cli_mine_with_the_hybrid_teacher_then_distil(tiny_model_dir: Path, tmp_path: Path, docs_dir: Path) -> None:
    from typer.testing import CliRunner

    from ragtune.cli import app
    from ragtune.store import index_sources

    runner = CliRunner()
    store = tmp_path / "store"
    index_sources(store, [docs_dir], show_progress=False)
    write_training_jsonl(tmp_path / "train.jsonl", toy_examples(negatives=False) * 2)
    mined = runner.invoke(
        app, ["mine", str(tmp_path / "train.jsonl"), "--out", str(tmp_path / "scored.jsonl"), "--store", str(store),
              "--negatives", "2", "--teacher", "hybrid"],
    )  # fmt: skip
    assert mined.exit_code == 0, mined.output
    assert "scored by the hybrid teacher" in mined.stdout
    scored = read_training_jsonl(tmp_path / "scored.jsonl")
    assert scored and all(len(e.negatives) == 2 and len(e.scores) == 3 for e in scored)
    assert all(0.0 <= s <= 1.0 for e in scored for s in e.scores)
    tuned = runner.invoke(
        app, ["finetune", str(tmp_path / "scored.jsonl"), "--out", str(tmp_path / "model"), "--base",
              str(tiny_model_dir), "--loss", "mnrl-distill", "--epochs", "1", "--batch-size", "4",
              "--max-seq-length", "32", "--threads", "2", "--dev-fraction", "0.25"],
    )  # fmt: skip
    assert tuned.exit_code == 0, tuned.output
    record = json.loads((tmp_path / "model" / "ragtune_training.json").read_text())
    assert record["config"]["loss"] == "mnrl-distill" and record["steps"] >= 1
    bad = runner.invoke(app, ["mine", str(tmp_path / "train.jsonl"), "--out", str(tmp_path / "x.jsonl"), "--store",
                              str(store), "--teacher", "oracle"])  # fmt: skip
    assert bad.exit_code == 2 and "--teacher oracle: the teacher is one of hybrid" in bad.stderr
