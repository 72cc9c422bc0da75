"""The OpenVINO copies of models in the user's cache folder, bounded.

One folder per (OpenVINO release, model revision) under `ragtune.paths.model_copies_root()`, holding the float copy
(model.xml + model.bin) and any int8 query copies beside it (int8-<digest>/). Every fine-tuned or merged model gets a
copy of its own (about 90 MB for all-MiniLM-L6-v2; a quickstart run makes two), so a user who tunes often would fill
the disk unseen. The copies are bounded by `$RAGTUNE_MODEL_COPIES_GB`: after a new copy is saved, the least recently
used others go until the rest fit, and `ragtune cache info|prune|clear` show and remove them. A copy's last use is
its model.xml's modification time, refreshed by every encoder that loads it.

Processes coordinate through one lock file in the root: an encoder holds it shared while it saves or loads a copy
(`copies_in_use`), a prune holds it exclusively while it picks copies and renames them away, so a prune in one
process never removes the copy another is writing or about to compile.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ragtune.child_process import exited
from ragtune.fsutil import READ_ONLY_ERRORS, waiting_lock
from ragtune.paths import model_copies_limit_bytes, model_copies_root

IDLE_BEFORE_EVICTION_SECONDS = 3600.0
"""The automatic bound removes only copies no encoder loaded for this long: one in use now is likely needed again
soon (a server and the jobs beside it load the same models over and over)."""
_REMOVING_PREFIX = ".removing-"
_LOCK_NAME = ".lock"


@dataclass(frozen=True)
class ModelCopy:
    folder: Path
    size_bytes: int
    last_used: float
    """Seconds since the epoch."""


def model_copies(root: Path | None = None) -> list[ModelCopy]:
    """Every copy under `root` (default: the cache's), least recently used first."""
    root = root or model_copies_root()
    copies = []
    for folder in root.glob("*/*"):
        if not folder.is_dir() or folder.name.startswith(_REMOVING_PREFIX):
            continue
        try:
            copies.append(_measured(folder))
        except FileNotFoundError:
            continue  # removed, or a partial file renamed, by another process meanwhile
    return sorted(copies, key=lambda copy: copy.last_used)


def _measured(folder: Path) -> ModelCopy:
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    xml = folder / "model.xml"
    last_used = xml.stat().st_mtime if xml.exists() else folder.stat().st_mtime  # an unfinished conversion
    return ModelCopy(folder, size, last_used)


def mark_used(model_xml: Path) -> None:
    """Record that an encoder loaded this copy now (its last use, for the bound)."""
    try:
        os.utime(model_xml)
    except OSError as exc:
        if exc.errno not in READ_ONLY_ERRORS:
            raise
        # a cache this user may only read (another user's, or a read-only mount): its owner bounds it


@contextmanager
def copies_in_use(root: Path | None = None) -> Iterator[None]:
    """Hold while saving or loading a copy: no prune removes a copy meanwhile. Never call a prune inside (a process
    that holds the lock shared and asks for it exclusively waits for itself)."""
    with waiting_lock((root or model_copies_root()) / _LOCK_NAME, shared=True, unlocked_if_read_only=True):
        yield


def prune_model_copies(
    limit_bytes: int, keep: Collection[Path] = (), min_idle_seconds: float = 0.0, root: Path | None = None
) -> list[ModelCopy]:
    """Remove the least recently used copies until the rest hold at most `limit_bytes`, never one in `keep` nor one
    used within `min_idle_seconds`; returns what went. Each folder is renamed away before it is deleted, so no
    encoder ever finds half a copy."""
    root = root or model_copies_root()
    _remove_abandoned_removals(root)
    kept = {path.resolve() for path in keep}
    removed, doomed = [], []
    with waiting_lock(root / _LOCK_NAME, unlocked_if_read_only=True):  # no copy is being saved or loaded now
        copies = model_copies(root)
        total = sum(copy.size_bytes for copy in copies)
        now = time.time()
        for copy in copies:
            if total <= limit_bytes:
                break
            if copy.folder.resolve() in kept or now - copy.last_used < min_idle_seconds:
                continue
            renamed = _renamed_away(copy.folder)
            total -= copy.size_bytes
            if renamed is not None:
                removed.append(copy)
                doomed.append(renamed)
    for folder in doomed:  # out of the lock: deleting 90 MB need not hold up the encoders
        shutil.rmtree(folder)
    return removed


def bound_after_saving(new_copy: Path) -> list[ModelCopy]:
    """The automatic bound, applied when `new_copy` (a folder) was just saved."""
    return prune_model_copies(model_copies_limit_bytes(), keep=[new_copy], min_idle_seconds=IDLE_BEFORE_EVICTION_SECONDS)


def _renamed_away(folder: Path) -> Path | None:
    doomed = folder.with_name(f"{_REMOVING_PREFIX}{os.getpid()}-{folder.name}")
    try:
        folder.rename(doomed)
    except FileNotFoundError:
        return None  # another process removed it first
    return doomed


def _remove_abandoned_removals(root: Path) -> None:
    """Folders a process killed mid-removal left behind."""
    for doomed in root.glob(f"*/{_REMOVING_PREFIX}*"):
        pid = doomed.name.removeprefix(_REMOVING_PREFIX).split("-", 1)[0]
        if exited(pid):
            shutil.rmtree(doomed, ignore_errors=True)  # another process may be removing it at the same time
