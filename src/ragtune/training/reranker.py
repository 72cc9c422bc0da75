"""Training a cross-encoder reranker from a bi-encoder checkpoint (no pretrained cross-encoder can be had offline).

sentence-transformers' `CrossEncoderTrainer` does the training; this module shapes the data for the chosen loss,
holds out dev queries for best-checkpoint selection, and writes the model atomically.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ragtune.errors import InputError
from ragtune.models import quiet_transformers, resolve_model, set_threads
from ragtune.training.examples import TrainingExample, split_by_query
from ragtune.fsutil import write_directory_atomically
from ragtune.training.callbacks import time_budget_callback
from ragtune.training.checkpoints import ResumePoint, train_resumably

RERANKER_LOSSES = ("bce", "mnrl", "listwise")
DEV_NAME = "dev"


@dataclass(frozen=True)
class RerankerConfig:
    base: str = "minilm"
    loss: str = "mnrl"
    epochs: float = 1.0
    batch_size: int = 8
    learning_rate: float = 7e-5
    warmup_ratio: float = 0.1
    max_length: int = 256
    negatives: int = 7
    in_batch_negatives: int = 1
    seed: int = 42
    dev_seed: int = 42  # which queries dev holds out, apart from `seed`: runs of two seeds are judged on one dev split
    threads: int | None = None
    dev_fraction: float = 0.1
    eval_steps: int | None = None
    bf16: bool = False
    time_budget_minutes: float | None = None

    def check(self) -> None:
        if self.loss not in RERANKER_LOSSES:
            raise InputError(f"--loss {self.loss} is not one of: {', '.join(RERANKER_LOSSES)}")
        if self.negatives < 1:
            raise InputError("--negatives must be at least 1: a reranker learns from negatives")
        if self.in_batch_negatives < 0:
            raise InputError("--in-batch-negatives must be 0 or more")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RerankerResult:
    model_dir: Path
    dev_before: dict[str, float]
    dev_after: dict[str, float]
    train_seconds: float
    steps: int
    log_history: list[dict[str, Any]]
    resume: ResumePoint = field(default_factory=lambda: ResumePoint(None))
    dev_queries: tuple[str, ...] = ()  # held out for dev (and for choosing the checkpoint), sorted


def _dataset(examples: Sequence[TrainingExample], loss: str, negatives: int):  # type: ignore[no-untyped-def]
    from datasets import Dataset

    usable = [e for e in examples if e.negatives]
    if not usable:
        raise InputError("the reranker needs negatives: run `ragtune mine` on the training file first")
    if loss == "bce":
        rows: dict[str, list[Any]] = {"query": [], "passage": [], "label": []}
        for e in usable:
            for text, label in [(e.positive, 1.0), *((n, 0.0) for n in e.negatives[:negatives])]:
                rows["query"].append(e.query)
                rows["passage"].append(text)
                rows["label"].append(label)
        return Dataset.from_dict(rows)
    if loss == "listwise":
        return Dataset.from_dict(
            {"query": [e.query for e in usable],
             "docs": [[e.positive, *e.negatives[:negatives]] for e in usable],
             "labels": [[1.0] + [0.0] * len(e.negatives[:negatives]) for e in usable]}
        )  # fmt: skip
    count = min(negatives, min(len(e.negatives) for e in usable))
    columns: dict[str, list[str]] = {"query": [e.query for e in usable], "positive": [e.positive for e in usable]}
    for i in range(count):
        columns[f"negative_{i + 1}"] = [e.negatives[i] for e in usable]
    return Dataset.from_dict(columns)


def _loss(model, config: RerankerConfig):  # type: ignore[no-untyped-def]
    """bce weighs positives by the negatives per query (else it learns the base rate); listwise is LambdaLoss, since
    ListNet's softmax of 0/1 labels is nearly uniform over 8 documents and gives almost no gradient; mnrl is softmax
    cross-entropy over the positive, the hard negatives and `in_batch_negatives` other queries' positives."""
    import torch
    from sentence_transformers.cross_encoder import losses

    if config.loss == "bce":
        return losses.BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(config.negatives)))
    if config.loss == "listwise":
        return losses.LambdaLoss(model)
    return losses.MultipleNegativesRankingLoss(model, num_negatives=config.in_batch_negatives)


def _evaluator(dev: Sequence[TrainingExample], batch_size: int):  # type: ignore[no-untyped-def]
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator

    grouped: dict[str, dict[str, list[str]]] = {}
    for e in dev:
        sample = grouped.setdefault(e.query, {"positive": [], "documents": []})
        sample["positive"].append(e.positive)
        sample["documents"].extend([e.positive, *e.negatives])
    rng = random.Random(0)  # shuffled, so the evaluator's "base" order carries no hint of which is positive
    samples = []
    for query, sample in grouped.items():
        documents = list(dict.fromkeys(sample["documents"]))
        rng.shuffle(documents)
        samples.append({"query": query, "positive": sample["positive"], "documents": documents})
    return CrossEncoderRerankingEvaluator(samples, at_k=10, name=DEV_NAME, batch_size=batch_size, write_csv=False)


def train_reranker(
    examples: Sequence[TrainingExample], out_dir: str | Path, config: RerankerConfig = RerankerConfig(),
    show_progress: bool = False,
) -> RerankerResult:
    """Train a cross-encoder on (query, positive, negatives) and write the best dev checkpoint to `out_dir`.
    Re-running with the same `out_dir` resumes from `<out_dir>.checkpoints`."""
    config.check()
    quiet_transformers()
    set_threads(config.threads)
    import torch
    from sentence_transformers import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers
    from transformers import set_seed

    out_dir = Path(out_dir).expanduser()
    train, dev = split_by_query(list(examples), config.dev_fraction, config.dev_seed)
    base = resolve_model(config.base)
    set_seed(config.seed)  # the classifier head is initialised at random: same seed, same reranker
    model = CrossEncoder(str(base.path), num_labels=1, max_length=config.max_length, device=None, local_files_only=True)
    evaluator = _evaluator(dev, config.batch_size)
    prefix = f"{DEV_NAME}_"
    dev_before = {k.removeprefix(prefix): float(v) for k, v in evaluator(model).items()}
    dataset = _dataset(train, config.loss, config.negatives)
    steps_per_epoch = max(1, len(dataset) // config.batch_size)
    eval_steps = config.eval_steps or steps_per_epoch
    checkpoints = out_dir.with_name(out_dir.name + ".checkpoints")
    args = CrossEncoderTrainingArguments(
        output_dir=str(checkpoints), num_train_epochs=config.epochs, per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size, learning_rate=config.learning_rate,
        warmup_steps=int(config.warmup_ratio * steps_per_epoch * config.epochs),
        batch_sampler=BatchSamplers.NO_DUPLICATES if config.loss == "mnrl" else BatchSamplers.BATCH_SAMPLER,
        eval_strategy="steps", eval_steps=eval_steps, save_strategy="steps", save_steps=eval_steps,
        save_total_limit=2, load_best_model_at_end=True, metric_for_best_model=f"eval_{DEV_NAME}_ndcg@10",
        greater_is_better=True, logging_steps=max(1, min(20, eval_steps)), seed=config.seed, report_to="none",
        bf16=config.bf16, use_cpu=not torch.cuda.is_available(),  # bf16 on CPU needs the device named
        dataloader_num_workers=0, dataloader_pin_memory=torch.cuda.is_available(), disable_tqdm=not show_progress,
    )  # fmt: skip
    callbacks = [time_budget_callback(config.time_budget_minutes)] if config.time_budget_minutes else []
    trainer = CrossEncoderTrainer(
        model=model, args=args, train_dataset=dataset, loss=_loss(model, config), evaluator=evaluator,
        callbacks=callbacks,
    )  # fmt: skip
    resume, train_seconds = train_resumably(trainer, checkpoints, show_progress)
    dev_after = {k.removeprefix(prefix): float(v) for k, v in evaluator(model).items()}
    write_directory_atomically(out_dir, lambda partial: model.save_pretrained(str(partial)))
    return RerankerResult(out_dir, dev_before, dev_after, train_seconds, int(trainer.state.global_step),
                          list(trainer.state.log_history), resume, tuple(sorted({e.query for e in dev})))  # fmt: skip
