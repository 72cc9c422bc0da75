"""The teachers (hybrid fusion, cross-encoder), their exclusions, and the distillation losses that learn from them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TEST_THREADS, unwrapped
from ragtune.errors import InputError
from ragtune.training.examples import TrainingExample, read_training_jsonl, write_training_jsonl
from ragtune.training.finetune import (
    STUDENT_TEMPERATURE,
    TEACHER_TEMPERATURE,
    SumOfLosses,
    carve_dev_set,
    finetune,
    student_logits,
)
from ragtune.training.mining import bm25_ranked
from ragtune.training.teacher import TeacherConfig, teacher_scored_examples
from test_training import _losses, _tiny_config, toy_examples


def scored_toy_examples() -> list[TrainingExample]:
    return [TrainingExample(e.query, e.positive, e.negatives, (0.9, 0.2)) for e in toy_examples()]


@pytest.mark.parametrize("loss", ["distill", "mnrl-distill", "margin-mse", "mnrl-margin-mse"])
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


def test_margin_mse_compares_the_students_cosine_margins_times_20_with_the_teachers(tiny_model_dir: Path) -> None:
    """The library's MarginMSELoss with ragtune's student scale (cosine / 0.05, MNRL's 20), checked by hand: the mean
    over rows and negatives of ((cos(q, p) − cos(q, n)) / 0.05 − (teacher p − teacher n))²."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import losses

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    model.eval()
    examples = [TrainingExample(e.query, e.positive, (e.negatives[0], e.positive[::-1]), (3.0, -1.5, 0.5))
                for e in toy_examples()[:4]]  # fmt: skip
    columns = [[e.query for e in examples], [e.positive for e in examples],
               [e.negatives[0] for e in examples], [e.negatives[1] for e in examples]]  # fmt: skip
    features = [model.tokenize(texts) for texts in columns]
    labels = torch.tensor([list(e.scores) for e in examples])
    with torch.no_grad():
        loss = float(losses.MarginMSELoss(model, similarity_fct=student_logits)(features, labels))
        q, p, n1, n2 = (torch.nn.functional.normalize(model(f)["sentence_embedding"], dim=-1) for f in features)
    cos = lambda a, b: (a * b).sum(-1)  # noqa: E731
    student = torch.stack([(cos(q, p) - cos(q, n)) / STUDENT_TEMPERATURE for n in (n1, n2)], dim=1)
    teacher = labels[:, :1] - labels[:, 1:]
    assert loss == pytest.approx(float(((student - teacher) ** 2).mean()), rel=1e-4)
    assert STUDENT_TEMPERATURE == 0.05


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
    with pytest.raises(InputError, match="--teacher cross: the teacher is one of hybrid, cross-encoder"):
        TeacherConfig(kind="cross").check()
    with pytest.raises(InputError, match="--teacher cross-encoder needs --reranker DIR"):
        TeacherConfig(kind="cross-encoder").check()
    with pytest.raises(InputError, match="only it takes one"):
        TeacherConfig(kind="hybrid", cross_encoder="ce").check()
    with pytest.raises(InputError, match="dense weight"):
        TeacherConfig(dense_weight=1.5).check()


@pytest.fixture(scope="module")
def tiny_cross_encoder_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained cross-encoder (random head on the tiny BERT): its scores are arbitrary but fixed."""
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)
    target = tmp_path_factory.mktemp("tiny-ce") / "reranker"
    CrossEncoder(str(tiny_model_dir), num_labels=1, max_length=64, device="cpu").save_pretrained(str(target))
    return target


@pytest.mark.integration
def test_the_cross_encoder_teacher_scores_the_hybrid_negatives_with_the_reranker(  # type: ignore[no-untyped-def]
    minilm, tiny_cross_encoder_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same negatives as the hybrid teacher draws (same seed, same exclusions); the scores are the reranker's logits
    for (query, positive) and each (query, negative), as the library's CrossEncoder.predict gives them before its
    sigmoid (MarginMSE compares margins of logits)."""
    from sentence_transformers import CrossEncoder

    monkeypatch.setenv("RAGTUNE_PRECISION", "fp32")
    examples = [TrainingExample("why does the pump impeller wear out", CORPUS[0]),
                TrainingExample("how to throttle flow", CORPUS[3])]  # fmt: skip
    never = {examples[0].query: [CORPUS[1]]}
    hybrid, _ = teacher_scored_examples(examples, CORPUS, minilm, TeacherConfig(negatives=3, pool=5, depth=8),
                                        never_negative=never)  # fmt: skip
    config = TeacherConfig(kind="cross-encoder", cross_encoder=str(tiny_cross_encoder_dir), negatives=3, pool=5,
                           depth=8)  # fmt: skip
    scored, report = teacher_scored_examples(examples, CORPUS, minilm, config, never_negative=never)
    assert [(e.query, e.positive, e.negatives) for e in scored] == [(e.query, e.positive, e.negatives) for e in hybrid]
    assert CORPUS[1] not in scored[0].negatives
    library = CrossEncoder(str(tiny_cross_encoder_dir), device="cpu")
    for example in scored:
        pairs = [(example.query, t) for t in (example.positive, *example.negatives)]
        logits = library.predict(pairs, activation_fn=torch.nn.Identity())  # not the sigmoid predict applies
        assert example.scores == pytest.approx([float(x) for x in logits], abs=1e-4)
        assert example.scores != pytest.approx([float(x) for x in library.predict(pairs)], abs=1e-3)
    assert report.examples == 2
    assert report.positive_first_share == sum(e.scores[0] > max(e.scores[1:]) for e in scored) / 2


@pytest.fixture
def toy_store(tmp_path: Path, docs_dir: Path) -> tuple[Path, Path]:
    """A store of the docs folder and a pairs file of toy examples without negatives."""
    from ragtune.store import index_sources

    index_sources(tmp_path / "store", [docs_dir], show_progress=False)
    write_training_jsonl(tmp_path / "train.jsonl", toy_examples(negatives=False) * 2)
    return tmp_path / "store", tmp_path / "train.jsonl"


@pytest.mark.integration
@pytest.mark.parametrize(("teacher", "loss"), [("hybrid", "mnrl-distill"), ("cross-encoder", "margin-mse")])
def test_cli_mine_with_a_teacher_then_distil(  # type: ignore[no-untyped-def]
    tiny_model_dir: Path, tiny_cross_encoder_dir: Path, tmp_path: Path, toy_store, teacher: str, loss: str
) -> None:
    from typer.testing import CliRunner

    from ragtune.cli import app

    store, pairs = toy_store
    runner = CliRunner()
    reranker = ["--reranker", str(tiny_cross_encoder_dir)] if teacher == "cross-encoder" else []
    mined = runner.invoke(
        app, ["mine", str(pairs), "--out", str(tmp_path / "scored.jsonl"), "--store", str(store), "--negatives", "2",
              "--teacher", teacher, *reranker],
    )  # fmt: skip
    assert mined.exit_code == 0, mined.output
    assert f"scored by the {teacher} teacher" in mined.stdout
    scored = read_training_jsonl(tmp_path / "scored.jsonl")
    assert scored and all(len(e.negatives) == 2 and len(e.scores) == 3 for e in scored)
    if teacher == "hybrid":
        assert all(0.0 <= s <= 1.0 for e in scored for s in e.scores)
    tuned = runner.invoke(
        app, ["finetune", str(tmp_path / "scored.jsonl"), "--out", str(tmp_path / "model"), "--base",
              str(tiny_model_dir), "--loss", loss, "--epochs", "1", "--batch-size", "4", "--negatives", "2",
              "--max-seq-length", "32", "--threads", str(TEST_THREADS), "--dev-fraction", "0.25"],
    )  # fmt: skip
    assert tuned.exit_code == 0, tuned.output
    record = json.loads((tmp_path / "model" / "ragtune_training.json").read_text())
    assert record["config"]["loss"] == loss and record["steps"] >= 1


@pytest.mark.integration
def test_cli_teacher_settings_that_do_not_fit_get_one_error(  # type: ignore[no-untyped-def]
    tiny_model_dir: Path, tiny_cross_encoder_dir: Path, tmp_path: Path, toy_store
) -> None:
    from typer.testing import CliRunner

    from ragtune.cli import app

    store, pairs = toy_store
    mine = ["mine", str(pairs), "--out", str(tmp_path / "x.jsonl"), "--store", str(store)]
    for extra, message in [
        (["--teacher", "oracle"], "--teacher oracle: the teacher is one of hybrid, cross-encoder"),
        (["--teacher", "cross-encoder"], "needs --reranker DIR"),
        (["--reranker", str(tiny_cross_encoder_dir)], "add that, or drop --reranker"),
        (["--teacher", "cross-encoder", "--reranker", str(tiny_model_dir)],
         f"reranker '{tiny_model_dir}' is not a cross-encoder"),
    ]:
        bad = CliRunner().invoke(app, [*mine, *extra])
        assert bad.exit_code == 2 and message in unwrapped(bad.stderr), (extra, bad.output)
    assert not (tmp_path / "x.jsonl").exists()
