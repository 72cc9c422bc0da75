"""Running one long job in a fresh interpreter, so that all it allocated goes back to the OS when it ends.

A process keeps what a step freed: glibc cannot return heap pages that a few live objects pin, and the rest of a
long job starts from there. In one process the quickstart's fine-tuning began 1.1 GB above a fresh interpreter
(after indexing, evaluating and mining), and its peak was that much higher (BENCHMARKS.md). `run_in_child` runs a
module-level function in a fresh child, passes the lines the child says to the parent's `say`, and returns the
child's result or raises its exception (with the child's traceback as a note, for a bug). A child that dies from a
signal (the out-of-memory killer's SIGKILL) becomes one clear error naming the job; a child never outlives its parent.

Children are forked from multiprocessing's fork server, which imports the model libraries once (`import
sentence_transformers` alone is ~10 s here) and never runs torch: a plain `fork` of the parent would hang in
OpenMP wherever the parent had already run torch on several threads, and a `spawn` pays the imports again for every
step. The child takes the parent's environment and working directory as they are at the call, not as they were when
the server started.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import select
import signal
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from ragtune.errors import RagtuneError

Say = Callable[[str], None]
_PRELOADED = ["ragtune.models", "sentence_transformers"]
"""Imported once by the fork server (ragtune.models first: it sets the offline and tokenizer-thread defaults)."""


def run_in_child(what: str, function: Callable[..., Any], *args: Any, say: Say) -> Any:
    """`function(*args, say)` in a fresh interpreter; its `say` lines reach this process's `say` as they come.

    `function` and `args` must pickle (a module-level function and plain data). `what` names the job in errors.
    """
    context = _context()
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child_main, args=(send, os.getpid(), dict(os.environ), os.getcwd(), function, args),
                            name=f"ragtune {what}")  # fmt: skip
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


def _context() -> multiprocessing.context.BaseContext:
    """The fork server where the platform has one (Linux, macOS), else spawn."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOADED)  # read when the server starts, at the first call
    return context


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


def _child_main(
    send: Connection, parent: int, environment: dict[str, str], cwd: str, function: Callable[..., Any],
    args: tuple[Any, ...],
) -> None:
    _die_with(parent)
    os.environ.clear()
    os.environ.update(environment)
    os.chdir(cwd)

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
    """The child SIGKILLs itself as soon as its parent is gone, so a killed quickstart leaves no orphan training on.

    A thread waits on a pidfd of the parent (Linux ≥ 5.3; elsewhere it polls). The kernel's parent-death signal
    cannot do this: the process that forked the child is the fork server, and the server only ends once its children
    have (each holds the pipe whose closing tells it the parent is gone).
    """
    try:
        handle: int | None = os.pidfd_open(parent)
    except ProcessLookupError:  # the parent died before the child started watching
        os._exit(1)
    except (AttributeError, OSError):
        handle = None

    def watch() -> None:
        if handle is not None:
            select.select([handle], [], [])  # readable once the parent has exited
        else:
            while process_is_alive(parent):
                time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="ragtune parent watch", daemon=True).start()


def process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def exited(pid: str) -> bool:
    """`pid`, a process id as written into a file or folder name, is one of this machine's processes no longer
    running (False for text that is no process id)."""
    return pid.isdigit() and not process_is_alive(int(pid))
