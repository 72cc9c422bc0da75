"""Running one long job in a fresh interpreter, so that all it allocated goes back to the OS when it ends.

A process keeps what a step freed: glibc cannot return heap pages that a few live objects pin, and the rest of a
long job starts from there. In one process the quickstart's fine-tuning began 1.1 GB above a fresh interpreter
(after indexing, evaluating and mining), and its peak was that much higher (BENCHMARKS.md). `run_in_child` runs a
module-level function in a `spawn`ed child — a `fork` would hang in OpenMP wherever the parent had already run
torch on several threads — passes the lines the child says to the parent's `say`, and returns the child's result or
raises its exception (with the child's traceback as a note, for a bug). A child that dies from a signal (the
out-of-memory killer's SIGKILL) becomes one clear error naming the job; a child never outlives its parent.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from ragtune.errors import RagtuneError
from ragtune.memory import libc_function

Say = Callable[[str], None]
_PR_SET_PDEATHSIG = 1


def run_in_child(what: str, function: Callable[..., Any], *args: Any, say: Say) -> Any:
    """`function(*args, say)` in a fresh interpreter; its `say` lines reach this process's `say` as they come.

    `function` and `args` must pickle (a module-level function and plain data). `what` names the job in errors.
    """
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child_main, args=(send, os.getpid(), function, args), name=f"ragtune {what}")
    child.start()
    send.close()  # the child holds the only writing end now: its death ends `recv` with EOFError
    try:
        while True:
            try:
                kind, payload = receive.recv()
            except EOFError:
                break
            if kind == "say":
                say(payload)
                continue
            child.join()
            if kind == "error":
                raise payload
            return payload
    except BaseException:
        _stop(child)
        raise
    finally:
        receive.close()
    child.join()
    raise RagtuneError(f"{what} stopped: its process {_ending(child.exitcode)}; what finished before it is kept")


def _ending(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        why = " (the kernel's out-of-memory killer sends it when memory runs out)" if name == "SIGKILL" else ""
        return f"was killed by {name}{why}"
    return f"exited with status {exitcode} before it reported"


def _stop(child: multiprocessing.process.BaseProcess) -> None:
    if child.is_alive():
        child.terminate()
    child.join(timeout=30)
    if child.is_alive():
        child.kill()
        child.join()


def _child_main(send: Connection, parent: int, function: Callable[..., Any], args: tuple[Any, ...]) -> None:
    _die_with(parent)

    def say(line: str) -> None:
        send.send(("say", line))

    try:
        result = function(*args, say)
    except BaseException as exc:  # noqa: BLE001 — every ending is reported to the parent, KeyboardInterrupt too
        send.send(("error", _transportable(exc)))
    else:
        send.send(("result", result))
    finally:
        send.close()


def _transportable(exc: BaseException) -> BaseException:
    """The exception itself where it pickles (a bug's with the child's traceback as a note); else a RagtuneError
    that carries its type, message and traceback."""
    where = "".join(traceback.format_exception(exc))
    if not isinstance(exc, (RagtuneError, KeyboardInterrupt)):
        exc.add_note(f"raised in a ragtune child process:\n{where}")
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 — any failure to pickle or unpickle: send what can be sent
        return RagtuneError(f"{type(exc).__name__}: {exc}\n{where}")
    return exc


def _die_with(parent: int) -> None:
    """Linux: the kernel SIGKILLs this process when its parent dies, so a killed quickstart leaves no orphan
    training on. Elsewhere (no prctl) the child runs to its end."""
    prctl = libc_function("prctl")
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the death signal was armed
        os._exit(1)
