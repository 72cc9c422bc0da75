"""Test hooks that kill the process at a named point of a long job, so fault tests exercise real crashes.

Inactive unless the environment variable `RAGTUNE_KILL_AT` names a point: `NAME` kills the first time the point is
reached, `NAME:N` the N-th time. The kill is a SIGKILL, as from the OOM killer or a power cut: no handler, no
`finally` block and no flush runs. With `RAGTUNE_KILL_ONCE=FILE` as well, only one process of all that reach the
point dies (the one that creates FILE): a restarted worker process does not die again.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

KILL_ENV = "RAGTUNE_KILL_AT"
ONCE_ENV = "RAGTUNE_KILL_ONCE"
_reached: Counter[str] = Counter()


def armed(name: str) -> bool:
    """Whether `RAGTUNE_KILL_AT` names this point (whatever its count)."""
    return os.environ.get(KILL_ENV, "").partition(":")[0] == name


def kill_point(name: str) -> None:
    """SIGKILL this process if `RAGTUNE_KILL_AT` names this point and this is the chosen visit."""
    if not armed(name):
        return
    _reached[name] += 1
    count = os.environ[KILL_ENV].partition(":")[2]
    if _reached[name] == (int(count) if count else 1) and _first_across_processes():
        os.kill(os.getpid(), signal.SIGKILL)


def _first_across_processes() -> bool:
    marker = os.environ.get(ONCE_ENV)
    if not marker:
        return True
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def arm_checkpoint_kill(trainer) -> None:  # type: ignore[no-untyped-def]
    """With `RAGTUNE_KILL_AT=checkpoint-write[:N]`, die while the trainer writes its N-th checkpoint: after the
    folder is made, before any weights are in it (the state a crash mid-save leaves)."""
    if not armed("checkpoint-write"):
        return
    save_model = trainer.save_model

    def save_then_maybe_die(output_dir=None, _internal_call=False):  # type: ignore[no-untyped-def]
        if _internal_call and output_dir:
            os.makedirs(output_dir, exist_ok=True)
            kill_point("checkpoint-write")
        return save_model(output_dir, _internal_call=_internal_call)

    trainer.save_model = save_then_maybe_die
