"""Fine-tuning the embedding model with the sentence-transformers trainer and losses.

The trainer does the work (batching with NO_DUPLICATES, schedules, checkpoints, best-model selection, resume);
this module picks the loss, shapes the data for it, builds a held-out evaluator and writes the result atomically
with a model card.
"""

from __future__ import annotations

import json
import math
import random
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ragtune.errors import InputError, RagtuneError
from ragtune.models import ModelRef, quiet_transformers, resolve_model, set_threads
from ragtune.fsutil import write_directory_atomically
from ragtune.training.callbacks import (
    release_memory_callback, step_time_callback, time_budget_callback,
)  # fmt: skip
from ragtune.training.checkpoints import ResumePoint, train_resumably
from ragtune.training.examples import TrainingExample, duplicate_stats, split_by_query

TEMPERATURE_LOSSES = ("mnrl", "cached-mnrl", "gist")
LOSSES = ("mnrl", "cached-mnrl", "gist", "triplet", "contrastive", "distill", "mnrl-distill", "margin-mse",
          "mnrl-margin-mse")  # fmt: skip
_NEEDS_NEGATIVES = ("triplet", "contrastive")
_NEEDS_SCORES = ("distill", "mnrl-distill", "margin-mse", "mnrl-margin-mse")
STUDENT_TEMPERATURE = 0.05
"""The distillation losses read the student's cosines / 0.05 (MNRL's scale of 20): the KL losses compare their
softmax with that of the teacher's scores / TEACHER_TEMPERATURE; MarginMSE compares their margins (positive minus
each negative) with the teacher's margins, in the teacher's own units — a cross-encoder's logits."""
TEACHER_TEMPERATURE = 0.1
"""Hybrid-teacher scores lie in [0, 1] and spread about twice as wide as a tuned model's cosines."""
DEV_NAME = "dev"
TRAINING_RECORD = "ragtune_training.json"


LOW_MEMORY_TRAINING: dict[str, Any] = {"attention_dropout": 0.0, "gradient_checkpointing": True,
                                       "release_memory_each_step": True, "pad_to_multiple_of": 64}
"""FinetuneConfig settings that bound training memory (the quickstart's, `finetune --low-memory`): without
attention dropout PyTorch's fused attention keeps no (query, key) weight matrices, and checkpointing keeps one
layer's activations at a time. SciFact batches (32 × 3 texts, 256 tokens, bf16, 2 cores): 7.6 GB peak and 16.6 s
per step before, 2.0 GB and 8.7 s after (BENCHMARKS.md). Padding to multiples of 64 tokens keeps the memory flat
over a long run (`pad_to_multiple_of`)."""


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything that decides a fine-tuning run; saved next to the model it produced."""

    base: str = "minilm"
    loss: str = "mnrl"
    epochs: float = 1.0
    batch_size: int = 32
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    max_seq_length: int = 256
    max_negatives: int = 1
    matryoshka_dims: tuple[int, ...] = ()
    mini_batch_size: int = 16
    temperature: float | None = None
    """The softmax temperature of the in-batch losses (mnrl, cached-mnrl: 1 / their scale; gist); None keeps the
    library's default: 0.05 for MNRL (scale 20, as all-MiniLM-L6-v2 was trained), 0.01 for GISTEmbed."""
    seed: int = 42
    threads: int | None = None
    eval_steps: int | None = None
    early_stopping_patience: int = 3
    dev_fraction: float = 0.1
    dev_distractors: int = 1000
    bf16: bool = False
    gradient_checkpointing: bool = False
    """Keep only each layer's input and recompute the rest in the backward pass: about a third more compute,
    activation memory of one layer instead of all (batch 32 × 3 texts of 256 tokens: 8.4 GB peak without it)."""
    attention_dropout: float | None = None
    """Override the model's attention-probability dropout; 0 lets PyTorch's fused attention run in training
    without keeping every (query, key) weight matrix for the backward pass."""
    time_budget_minutes: float | None = None
    release_memory_each_step: bool = False
    """Return freed heap to the OS after each step (`release_memory_callback`): a lower, steadier peak for ~0.2 s
    a step."""
    pad_to_multiple_of: int | None = None
    """Pad each training and evaluation batch to a multiple of this many tokens. With every batch its own length,
    the CPU kernels' per-shape caches and the heap grow ~14 MB a step (180 steps: +2.5 GB); with a few lengths
    the memory stays flat, for ~4 % more compute (BENCHMARKS.md). The saved model does not keep the setting."""

    def check(self) -> None:
        if self.loss not in LOSSES:
            raise InputError(f"--loss {self.loss} is not one of: {', '.join(LOSSES)}")
        if self.epochs <= 0 or self.batch_size < 2 or self.learning_rate <= 0:
            raise InputError("--epochs and --lr must be positive and --batch-size at least 2")
        if self.max_seq_length < 8:
            raise InputError("--max-seq-length must be at least 8")
        if self.temperature is not None and (self.temperature <= 0 or self.loss not in TEMPERATURE_LOSSES):
            raise InputError(f"--temperature must be positive and applies to --loss {', '.join(TEMPERATURE_LOSSES)} "
                             f"(got {self.temperature} with --loss {self.loss})")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DevSet:
    """A retrieval evaluator's inputs: query id → text, doc id → text, query id → relevant doc ids."""

    queries: dict[str, str]
    corpus: dict[str, str]
    relevant: dict[str, set[str]]
    description: str


@dataclass(frozen=True)
class FinetuneResult:
    model_dir: Path
    base_dev: dict[str, float]
    tuned_dev: dict[str, float]
    train_seconds: float
    steps: int
    data: dict[str, int]
    log_history: list[dict[str, Any]] = field(default_factory=list)
    resume: ResumePoint = field(default_factory=lambda: ResumePoint(None))
    planned_steps: int = 0
    stopped_by: str = "plan"
    """Why training ended: "plan" (the planned steps ran), "time budget" or "early stopping"."""


def carve_dev_set(
    dev: Sequence[TrainingExample], distractor_pool: Sequence[str], size: int, seed: int
) -> DevSet:
    """A held-out retrieval task from training data: dev queries against their positives, their negatives and
    `size` other passages (a sample keeps periodic evaluation cheap on a CPU)."""
    texts: dict[str, str] = {}  # passage text -> doc id
    query_ids: dict[str, str] = {}  # query text -> query id
    relevant: dict[str, set[str]] = {}
    for example in dev:
        qid = query_ids.setdefault(example.query, f"q{len(query_ids)}")
        relevant.setdefault(qid, set()).add(texts.setdefault(example.positive, f"d{len(texts)}"))
        for negative in example.negatives:
            texts.setdefault(negative, f"d{len(texts)}")
    pool = [t for t in dict.fromkeys(distractor_pool) if t not in texts]
    random.Random(seed).shuffle(pool)
    for text in pool[:size]:
        texts.setdefault(text, f"d{len(texts)}")
    corpus = {i: t for t, i in texts.items()}
    queries = {qid: text for text, qid in query_ids.items()}
    return DevSet(queries, corpus, relevant, f"{len(queries)} held-out queries over {len(corpus)} passages")


MAX_SHORT_SHARE = 0.1
"""Up to this share of examples may be dropped for lacking negatives; beyond it, every row uses fewer negatives."""


def training_dataset(  # type: ignore[no-untyped-def]
    examples: Sequence[TrainingExample], loss: str, max_negatives: int
):
    """The trainer's dataset in the columns `loss` expects: (anchor, positive, negative_1..n); labelled sentence
    pairs for contrastive; teacher scores as `label` for the distillation losses."""
    from datasets import Dataset

    if loss in _NEEDS_NEGATIVES and not any(e.negatives for e in examples):
        raise InputError(f"--loss {loss} needs negatives: run `ragtune mine` on the training file first")
    if loss in _NEEDS_SCORES:
        return _scored_dataset(examples, loss)
    if loss == "contrastive":
        rows: dict[str, list[Any]] = {"sentence1": [], "sentence2": [], "label": []}
        for e in examples:
            for text, label in [(e.positive, 1.0), *((n, 0.0) for n in e.negatives[:max_negatives])]:
                rows["sentence1"].append(e.query)
                rows["sentence2"].append(text)
                rows["label"].append(label)
        return Dataset.from_dict(rows)
    if loss == "triplet":
        usable = [e for e in examples if e.negatives]
        return Dataset.from_dict(
            {"anchor": [e.query for e in usable], "positive": [e.positive for e in usable],
             "negative": [e.negatives[0] for e in usable]}
        )  # fmt: skip
    # MNRL family: (anchor, positive, negative_1..n); every row needs the same columns. A few examples short of
    # negatives (mining found none under the margin) are left out rather than costing every row its negatives.
    count = min(max_negatives, max((len(e.negatives) for e in examples), default=0))
    short = [e for e in examples if len(e.negatives) < count]
    if short and len(short) <= MAX_SHORT_SHARE * len(examples):
        warnings.warn(f"{len(short)} of {len(examples)} examples have fewer than {count} negatives: left out")
        examples = [e for e in examples if len(e.negatives) >= count]
    elif short:
        count = min(len(e.negatives) for e in examples)
        warnings.warn(f"{len(short)} examples have fewer than {max_negatives} negatives: training uses {count} per example")
    columns: dict[str, list[str]] = {"anchor": [e.query for e in examples], "positive": [e.positive for e in examples]}
    for i in range(count):
        columns[f"negative_{i + 1}"] = [e.negatives[i] for e in examples]
    return Dataset.from_dict(columns)


def _scored_dataset(examples: Sequence[TrainingExample], loss: str):  # type: ignore[no-untyped-def]
    """(anchor, positive, negative_1..n, label = teacher scores) rows for the distillation losses."""
    from datasets import Dataset

    if not examples or not all(e.scores for e in examples):
        raise InputError(f"--loss {loss} needs teacher scores on every example: run `ragtune mine --teacher hybrid` "
                         "(or `--teacher cross-encoder --reranker DIR` for the margin-mse losses)")
    count = min(len(e.negatives) for e in examples)
    if count < 1:
        raise InputError(f"--loss {loss} needs at least one negative per example")
    columns: dict[str, list[Any]] = {"anchor": [e.query for e in examples], "positive": [e.positive for e in examples]}
    for i in range(count):
        columns[f"negative_{i + 1}"] = [e.negatives[i] for e in examples]
    columns["label"] = [list(e.scores[: count + 1]) for e in examples]
    return Dataset.from_dict(columns)


def build_loss(model, config: FinetuneConfig, base: ModelRef):  # type: ignore[no-untyped-def]
    """The sentence-transformers loss `config.loss` names, set up for `model` (GISTEmbed's guide is `base`)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import losses

    scale = {"scale": 1.0 / config.temperature} if config.temperature else {}
    if config.loss == "mnrl":
        loss = losses.MultipleNegativesRankingLoss(model, **scale)
    elif config.loss == "cached-mnrl":
        loss = losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=config.mini_batch_size, **scale)
    elif config.loss == "gist":
        guide = SentenceTransformer(str(base.path), device=str(model.device), local_files_only=True)
        temperature = {"temperature": config.temperature} if config.temperature else {}
        loss = losses.GISTEmbedLoss(model, guide, **temperature)
    elif config.loss in _NEEDS_SCORES:
        if config.loss.endswith("margin-mse"):
            distill = losses.MarginMSELoss(model, similarity_fct=student_logits)
        else:
            distill = losses.DistillKLDivLoss(model, student_temperature=STUDENT_TEMPERATURE,
                                              teacher_temperature=TEACHER_TEMPERATURE)  # fmt: skip
        loss = distill if not config.loss.startswith("mnrl-") else SumOfLosses(
            model, [losses.MultipleNegativesRankingLoss(model), distill])  # fmt: skip
    elif config.loss == "triplet":
        loss = losses.TripletLoss(model, distance_metric=losses.TripletDistanceMetric.COSINE, triplet_margin=0.3)
    else:
        loss = losses.OnlineContrastiveLoss(model)
    if config.matryoshka_dims:
        dimension = model.get_embedding_dimension()
        if any(d < 1 or d > dimension for d in config.matryoshka_dims):
            raise InputError(f"--matryoshka dimensions must be within 1..{dimension}")
        loss = losses.MatryoshkaLoss(model, loss, matryoshka_dims=sorted(config.matryoshka_dims, reverse=True))
    return loss


def student_logits(queries, passages):  # type: ignore[no-untyped-def]
    """The student's score of each (query, passage) row on a logit scale: cosine / STUDENT_TEMPERATURE."""
    from sentence_transformers.util import pairwise_cos_sim

    return pairwise_cos_sim(queries, passages) / STUDENT_TEMPERATURE


def SumOfLosses(model, parts):  # type: ignore[no-untyped-def]  # noqa: N802 - builds an nn.Module (torch imported late)
    """One loss that is the sum of `parts` (losses with `compute_loss_from_embeddings`), all computed from one
    forward pass of the batch's columns (MNRL's in-batch negatives plus the teacher's distillation)."""
    from sentence_transformers.base.losses.merged_forward import embed_columns
    from torch import nn

    class _Sum(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.parts = nn.ModuleList(parts)

        def forward(self, sentence_features, labels):  # type: ignore[no-untyped-def]
            embeddings = embed_columns(self.model, sentence_features)
            return sum(part.compute_loss_from_embeddings(embeddings, labels) for part in self.parts)

    return _Sum()


def _evaluator(dev: DevSet, batch_size: int):  # type: ignore[no-untyped-def]
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    return InformationRetrievalEvaluator(
        queries=dev.queries, corpus=dev.corpus, relevant_docs=dev.relevant, name=DEV_NAME,
        ndcg_at_k=[10], mrr_at_k=[10], map_at_k=[100], accuracy_at_k=[1, 10], precision_recall_at_k=[10, 100],
        batch_size=batch_size, write_csv=False, show_progress_bar=False,
    )  # fmt: skip


def _scores(raw: dict[str, float]) -> dict[str, float]:
    prefix = f"{DEV_NAME}_cosine_"
    return {k.removeprefix(prefix): float(v) for k, v in raw.items() if k.startswith(prefix)}


def finetune(
    examples: Sequence[TrainingExample],
    out_dir: str | Path,
    config: FinetuneConfig = FinetuneConfig(),
    dev: DevSet | None = None,
    distractor_pool: Sequence[str] = (),
    show_progress: bool = False,
    on_step_time: Callable[[int, int, float], None] | None = None,
) -> FinetuneResult:
    """Train `config.base` on `examples` and write the best checkpoint (by dev nDCG@10) to `out_dir`.

    Without `dev`, a fraction of the training queries is held out. Checkpoints live in `<out_dir>.checkpoints`; a
    re-run with the same arguments resumes from the last one. `on_step_time(step, planned steps, seconds per step)`
    is called once, early, to estimate the time training will take.
    """
    config.check()
    quiet_transformers()
    set_threads(config.threads)
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers,
        SentenceTransformerTrainingArguments,
    )
    import torch
    from transformers import EarlyStoppingCallback

    out_dir = Path(out_dir).expanduser()
    base = resolve_model(config.base)
    train_examples = list(examples)
    if dev is None:
        train_examples, held_out = split_by_query(train_examples, config.dev_fraction, config.seed)
        pool = list(distractor_pool) or [t for e in train_examples for t in (e.positive, *e.negatives)]
        dev = carve_dev_set(held_out, pool, config.dev_distractors, config.seed)
    data_stats = duplicate_stats(train_examples) | {"dev_queries": len(dev.queries), "dev_corpus": len(dev.corpus)}

    model = SentenceTransformer(str(base.path), device=None, local_files_only=True)
    model.model_card_data.generate_widget_examples = False  # ragtune writes its own card (`model_card`)
    model.max_seq_length = config.max_seq_length
    if config.attention_dropout is not None:
        set_attention_dropout(model, config.attention_dropout)
    with padded_batches(model, config.pad_to_multiple_of):
        evaluator = _evaluator(dev, config.batch_size)
        base_dev = _scores(evaluator(model))

        train_dataset = training_dataset(train_examples, config.loss, config.max_negatives)
        steps_per_epoch = max(1, len(train_dataset) // config.batch_size)
        eval_steps = config.eval_steps or steps_per_epoch  # once per epoch: each evaluation costs ~40 s on 2 cores
        checkpoints = out_dir.with_name(out_dir.name + ".checkpoints")
        sampler = BatchSamplers.BATCH_SAMPLER if config.loss == "contrastive" else BatchSamplers.NO_DUPLICATES
        args = SentenceTransformerTrainingArguments(
            output_dir=str(checkpoints),
            num_train_epochs=config.epochs,
            per_device_train_batch_size=config.batch_size,
            per_device_eval_batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            warmup_steps=int(config.warmup_ratio * steps_per_epoch * config.epochs),
            batch_sampler=sampler,
            eval_strategy="steps",
            eval_steps=eval_steps,
            save_strategy="steps",
            save_steps=eval_steps,
            save_total_limit=2,
            load_best_model_at_end=True,
            metric_for_best_model=f"eval_{DEV_NAME}_cosine_ndcg@10",
            greater_is_better=True,
            logging_steps=max(1, min(10, eval_steps)),
            seed=config.seed,
            data_seed=config.seed,
            bf16=config.bf16,
            **{_checkpointing_argument(SentenceTransformerTrainingArguments): config.gradient_checkpointing},
            use_cpu=not torch.cuda.is_available(),  # transformers refuses bf16 on CPU unless told the device
            report_to="none",
            dataloader_num_workers=0,
            dataloader_pin_memory=torch.cuda.is_available(),
            disable_tqdm=not show_progress,
        )
        budget = time_budget_callback(config.time_budget_minutes) if config.time_budget_minutes else None
        extra = [c for c in (budget, step_time_callback(on_step_time) if on_step_time else None,
                             release_memory_callback() if config.release_memory_each_step else None) if c is not None]
        trainer = SentenceTransformerTrainer(
            model=model,
            args=args,
            train_dataset=train_dataset,
            loss=build_loss(model, config, base),
            evaluator=evaluator,
            callbacks=[EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience), *extra],
        )
        resume, train_seconds = train_resumably(trainer, checkpoints, show_progress)
        tuned_dev = _scores(evaluator(model))

    result = FinetuneResult(
        model_dir=out_dir, base_dev=base_dev, tuned_dev=tuned_dev, train_seconds=train_seconds,
        steps=int(trainer.state.global_step), data=data_stats, log_history=list(trainer.state.log_history),
        resume=resume, planned_steps=int(trainer.state.max_steps), stopped_by=_stop_reason(trainer, budget),
    )  # fmt: skip
    save_model_atomically(model, out_dir, config, result, base, dev.description)
    return result


def set_attention_dropout(model, p: float) -> int:  # type: ignore[no-untyped-def]
    """Set the dropout of every self-attention block's weights (BERT-style `*SelfAttention.dropout`); returns how
    many were set."""
    changed = 0
    for name, module in model.named_modules():
        if name.endswith("attention.self") and hasattr(module, "dropout"):
            module.dropout.p = p
            changed += 1
    return changed


@contextmanager
def padded_batches(model, multiple: int | None) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Within: the model's text batches are a multiple of `multiple` tokens long, rounded up (sentence-transformers'
    `processing_kwargs` of its transformer module); after: as before, so a saved model does not keep it. The
    tokenizer truncates at max_seq_length, so the multiple used is the largest that divides it too."""
    if not multiple:
        yield
        return
    module = model[0]
    before = module.processing_kwargs
    step = math.gcd(int(multiple), int(model.max_seq_length))
    module.processing_kwargs = {**before, "text": {**before.get("text", {}), "pad_to_multiple_of": step}}
    try:
        yield
    finally:
        module.processing_kwargs = before


def _stop_reason(trainer, budget) -> str:  # type: ignore[no-untyped-def]
    if trainer.state.global_step >= trainer.state.max_steps:
        return "plan"
    return "time budget" if budget is not None and budget.fired else "early stopping"


def save_model_atomically(
    model, out_dir: Path, config: FinetuneConfig, result: FinetuneResult, base: ModelRef, dev_description: str
) -> None:  # type: ignore[no-untyped-def]
    """Save into a sibling folder, then swap it in: a crash never leaves a half-written model at `out_dir`."""
    record = {
        "config": config.to_json(), "base": base.to_json(), "data": result.data, "dev": dev_description,
        "base_dev": result.base_dev, "tuned_dev": result.tuned_dev, "train_seconds": result.train_seconds,
        "steps": result.steps, "log_history": result.log_history,
    }  # fmt: skip

    def write(partial: Path) -> None:
        model.save(str(partial))
        (partial / TRAINING_RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
        (partial / "README.md").write_text(model_card(record), encoding="utf-8")

    write_directory_atomically(out_dir, write)


def _checkpointing_argument(arguments: type) -> str:
    """The training argument that turns on activation checkpointing: transformers renamed `gradient_checkpointing`
    to `activation_checkpointing` (the old name still works there, with a deprecation warning)."""
    names = {f.name for f in fields(arguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def model_card(record: dict[str, Any]) -> str:
    base_dev, tuned_dev = record["base_dev"], record["tuned_dev"]
    rows = "\n".join(
        f"| {metric} | {base_dev.get(metric, float('nan')):.4f} | {tuned_dev[metric]:.4f} | "
        f"{tuned_dev[metric] - base_dev.get(metric, float('nan')):+.4f} |"
        for metric in sorted(tuned_dev)
    )
    return f"""---
library_name: sentence-transformers
pipeline_tag: sentence-similarity
tags: [ragtune, sentence-transformers, feature-extraction]
base_model: {record['base']['name']}
---

# Fine-tuned with ragtune

Base: `{record['base']['name']}` (revision {record['base']['revision']}). Loss: `{record['config']['loss']}`.
Trained {record['steps']} steps in {record['train_seconds']:.0f} s.

## Held-out evaluation ({record['dev']})

| metric | base | tuned | Δ |
|---|---:|---:|---:|
{rows}

## Training data

```json
{json.dumps(record['data'], indent=2)}
```

## Configuration

```json
{json.dumps(record['config'], indent=2)}
```

Load it with `SentenceTransformer("<this folder>")`, or index with `ragtune index … --model <this folder>`.
"""


def merge_with_base(tuned_dir: str | Path, base: str, alpha: float, out_dir: str | Path) -> Path:
    """LM-Cocktail-style forgetting guard: weights = (1 − alpha) × tuned + alpha × base.

    alpha = 0 gives the tuned model, alpha = 1 the base. Both must share one architecture.
    """
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"--merge-base {alpha} must be within [0, 1]")
    quiet_transformers()  # no weight-loading and shard-writing bars
    from sentence_transformers import SentenceTransformer

    tuned = SentenceTransformer(str(Path(tuned_dir)), device="cpu", local_files_only=True)
    base_model = SentenceTransformer(str(resolve_model(base).path), device="cpu", local_files_only=True)
    base_state = base_model.state_dict()
    merged = {}
    for name, tensor in tuned.state_dict().items():
        if name not in base_state or base_state[name].shape != tensor.shape:
            raise RagtuneError(f"cannot merge: '{name}' differs between the tuned model and the base '{base}'")
        merged[name] = (1.0 - alpha) * tensor + alpha * base_state[name] if tensor.is_floating_point() else tensor
    tuned.load_state_dict(merged)
    record_path = Path(tuned_dir) / TRAINING_RECORD

    def write(partial: Path) -> None:
        tuned.save(str(partial))
        if record_path.exists():
            record = json.loads(record_path.read_text())
            record["merge"] = {"base": base, "alpha": alpha}
            (partial / TRAINING_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    return write_directory_atomically(Path(out_dir).expanduser(), write)
