"""Choosing the checkpoint to resume from: the newest one that was written completely.

The trainer writes `checkpoint-N/` in place: weights, then optimizer and scheduler, then `trainer_state.json` last.
A run killed part-way leaves a folder the trainer would pick as the newest and then fail to load ("no file named
model.safetensors"), wedging every later run. Such folders are removed and the newest complete one is used.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from ragtune.faults import arm_checkpoint_kill
from ragtune.fsutil import exclusive_lock
from ragtune.training.callbacks import silence_log_printing

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_WEIGHTS = ("*.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class ResumePoint:
    """Where training resumes (`None`: from the start) and the incomplete checkpoints that were removed."""

    checkpoint: Path | None
    discarded: tuple[str, ...] = field(default_factory=tuple)


def find_resume_point(folder: Path) -> ResumePoint:
    """The newest complete `checkpoint-N` in `folder`; incomplete ones newer than it are deleted."""
    if not folder.is_dir():
        return ResumePoint(None)
    numbered = sorted(
        ((int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))),
        reverse=True,
    )
    discarded: list[str] = []
    for _, path in numbered:
        problem = checkpoint_problem(path)
        if problem is None:
            return ResumePoint(path, tuple(discarded))
        discarded.append(f"{path.name} ({problem})")
        shutil.rmtree(path)
    return ResumePoint(None, tuple(discarded))


def checkpoint_problem(path: Path) -> str | None:
    """Why a checkpoint folder cannot be resumed from, or None when it is complete."""
    state = path / "trainer_state.json"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no trainer_state.json: the run stopped while writing it"
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "trainer_state.json is cut short"
    weights = [p for pattern in _WEIGHTS for p in path.rglob(pattern)]
    if not weights:
        return "no model weights"
    for file in weights:
        if file.suffix == ".safetensors" and not _safetensors_complete(file):
            return f"{file.relative_to(path)} is cut short"
    return None


def _safetensors_complete(file: Path) -> bool:
    """A safetensors file holds an 8-byte header length, a JSON header, then the tensors' bytes: complete when the
    file is as long as the header's largest data offset says."""
    size = file.stat().st_size
    try:
        with file.open("rb") as handle:
            (header_length,) = struct.unpack("<Q", handle.read(8))
            if header_length > size - 8:
                return False
            header = json.loads(handle.read(header_length))
    except (struct.error, json.JSONDecodeError, UnicodeDecodeError):
        return False
    end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    return size == 8 + header_length + end


def train_resumably(trainer, checkpoints: Path, show_progress: bool) -> tuple[ResumePoint, float]:  # type: ignore[no-untyped-def]
    """Run a (sentence-transformers) trainer from the newest complete checkpoint under `checkpoints`, if any: returns
    where it resumed and the seconds training took. The fault hook for checkpoint writes is armed."""
    if not show_progress:
        silence_log_printing(trainer)
    arm_checkpoint_kill(trainer)
    busy = (f"another training run is writing '{checkpoints}'; wait for it to finish (running this command again "
            "then resumes from its checkpoints), or give another --out")  # fmt: skip
    with exclusive_lock(checkpoints, busy):  # two runs would save, rotate and resume from the same checkpoints
        resume = find_resume_point(checkpoints)
        started = time.perf_counter()
        trainer.train(resume_from_checkpoint=str(resume.checkpoint) if resume.checkpoint else None)
    return resume, time.perf_counter() - started
