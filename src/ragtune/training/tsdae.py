"""TSDAE (Wang et al., 2021): denoising pre-adaptation of an embedding model to the sentences of a domain.

A decoder tied to the encoder must rebuild each sentence from the encoder's embedding of a copy with most words
deleted, so the embedding learns what the domain's sentences carry. It needs nothing but the store's text. The
paper's recipe is TSDAE first, then pairs: pass the result as `--base` to `ragtune finetune`.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ragtune.corpus.sentences import sentences
from ragtune.errors import InputError, RagtuneError
from ragtune.models import quiet_transformers, resolve_model, set_threads
from ragtune.store import open_store
from ragtune.fsutil import write_directory_atomically

TSDAE_RECORD = "ragtune_tsdae.json"


@dataclass(frozen=True)
class TsdaeConfig:
    base: str = "minilm"
    max_sentences: int | None = 20_000
    min_words: int = 6
    max_words: int = 60
    deletion_ratio: float = 0.6
    epochs: float = 1.0
    batch_size: int = 8
    learning_rate: float = 3e-5
    max_seq_length: int = 128
    seed: int = 42
    threads: int | None = None
    bf16: bool = False
    time_budget_minutes: float | None = None

    def check(self) -> None:
        if not 0.0 < self.deletion_ratio < 1.0:
            raise InputError(f"--deletion-ratio {self.deletion_ratio} must be between 0 and 1 (exclusive)")
        if self.epochs <= 0 or self.batch_size < 1 or self.learning_rate <= 0:
            raise InputError("--epochs, --batch-size and --lr must be positive")
        if self.max_sentences is not None and self.max_sentences < 1:
            raise InputError("--max-sentences must be at least 1")


@dataclass
class TsdaeResult:
    model_dir: Path
    sentences: int
    steps: int
    train_seconds: float
    first_loss: float | None
    last_loss: float | None


def store_sentences(store_dir: str | Path, config: TsdaeConfig) -> list[str]:
    """The store's sentences of `min_words`..`max_words` words, distinct, shuffled, at most `max_sentences`."""
    seen: set[str] = set()
    with open_store(store_dir) as store:
        for passage in store.iter_passages():
            for sentence in sentences(passage.text):
                if config.min_words <= len(sentence.split()) <= config.max_words:
                    seen.add(sentence)
    if not seen:
        raise InputError(f"{store_dir}: no sentences of {config.min_words}–{config.max_words} words to adapt on")
    found = sorted(seen)
    random.Random(config.seed).shuffle(found)
    return found[: config.max_sentences] if config.max_sentences else found


def delete_words(sentence: str, ratio: float, rng: random.Random) -> str:
    """TSDAE's noise: each word is deleted with probability `ratio`; at least one word stays."""
    words = sentence.split()
    kept = [w for w in words if rng.random() >= ratio]
    return " ".join(kept) if kept else rng.choice(words)


def tsdae_adapt(
    texts: Sequence[str], out_dir: str | Path, config: TsdaeConfig = TsdaeConfig(), show_progress: bool = False
) -> TsdaeResult:
    """Train `config.base` as the encoder of a denoising auto-encoder on `texts`; write it atomically to `out_dir`."""
    config.check()
    if not texts:
        raise InputError("TSDAE needs at least one sentence")
    quiet_transformers()
    set_threads(config.threads)
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import DenoisingAutoEncoderLoss
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

    from ragtune.training.callbacks import silence_log_printing, time_budget_callback

    base = resolve_model(config.base)
    model = SentenceTransformer(str(base.path), device=None, local_files_only=True)
    model.max_seq_length = config.max_seq_length
    try:
        loss = DenoisingAutoEncoderLoss(model, tie_encoder_decoder=True)
    except (ValueError, AssertionError, OSError) as error:
        raise RagtuneError(f"{config.base}: cannot serve as a TSDAE encoder/decoder ({error})") from error
    rng = random.Random(config.seed)
    dataset = Dataset.from_dict(
        {"noisy": [delete_words(t, config.deletion_ratio, rng) for t in texts], "text": list(texts)}
    )
    out_dir = Path(out_dir).expanduser()
    scratch = out_dir.with_name(out_dir.name + ".checkpoints")  # the trainer wants a folder; nothing is saved there
    args = SentenceTransformerTrainingArguments(
        output_dir=str(scratch),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        lr_scheduler_type="constant",  # as in the paper
        weight_decay=0.0,
        save_strategy="no",
        logging_steps=10,
        seed=config.seed,
        data_seed=config.seed,
        bf16=config.bf16,
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        dataloader_num_workers=0,
        disable_tqdm=not show_progress,
    )
    callbacks = [time_budget_callback(config.time_budget_minutes)] if config.time_budget_minutes else []
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss, callbacks=callbacks)
    if not show_progress:
        silence_log_printing(trainer)
    started = time.perf_counter()
    trainer.train()
    shutil.rmtree(scratch, ignore_errors=True)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    result = TsdaeResult(
        model_dir=out_dir, sentences=len(texts), steps=int(trainer.state.global_step),
        train_seconds=time.perf_counter() - started, first_loss=losses[0] if losses else None,
        last_loss=losses[-1] if losses else None,
    )  # fmt: skip
    record: dict[str, Any] = {
        "method": "tsdae", "config": asdict(config), "base": base.to_json(),
        "result": {k: v for k, v in asdict(result).items() if k != "model_dir"},
    }  # fmt: skip

    def write(partial: Path) -> None:
        model.save(str(partial))
        (partial / TSDAE_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    write_directory_atomically(out_dir, write)
    return result
