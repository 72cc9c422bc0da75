"""Small filesystem helpers for atomic writes and exclusive access."""

from __future__ import annotations

import errno
import fcntl
import glob
import os
import shutil
import socket
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ragtune.errors import StoreError
from ragtune.faults import kill_point


_DISK_FULL_WORDS = ("no space left on device", "database or disk is full", "disk quota exceeded")


def printable_path(path: str) -> str:
    """`path` as valid UTF-8 text. A name that is not UTF-8 (a Latin-1 archive's `caf\\xe9.txt`) comes from the OS
    with lone surrogates, which a tokenizer, SQLite, JSON and the terminal all refuse; its bytes are written as
    `\\xe9` instead. The file itself is still opened by its real path; a valid name is returned unchanged."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def path_problem(exc: BaseException) -> str | None:
    """One line for an error about a path the user gave (a folder where a file is needed, a file in the middle of
    a path, no permission, a read-only disk), naming the path; None for any other error."""
    if not isinstance(exc, OSError) or not exc.filename:
        return None
    where = printable_path(os.fsdecode(exc.filename))
    if isinstance(exc, IsADirectoryError):
        return f"'{where}' is a folder where a file is needed: give a file's path"
    if isinstance(exc, NotADirectoryError):
        return f"'{where}' runs through a file as if it were a folder: check the path"
    if isinstance(exc, FileExistsError) and Path(os.fsdecode(exc.filename)).is_file():
        return f"'{where}' is a file where a folder is needed: check the path"
    if isinstance(exc, PermissionError):
        return f"permission denied on '{where}': use a place you may write to, or change its permissions"
    if exc.errno == errno.EROFS:
        return f"'{where}' is on a read-only disk: use a place you may write to"
    return None


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` (or an exception it was raised from) is the filesystem running out of space: ENOSPC/EDQUOT
    from the OS, SQLite's "database or disk is full", or the same words from FAISS or tantivy."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(current, (sqlite3.Error, OSError, RuntimeError, ValueError)) and any(
            word in str(current).lower() for word in _DISK_FULL_WORDS
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


def free_space_text(path: Path) -> str:
    """'12.3 MB free of 64 MB': the space on the filesystem that holds `path`."""
    usage = shutil.disk_usage(path)
    return f"{usage.free / 1e6:.1f} MB free of {usage.total / 1e6:.0f} MB"


@contextmanager
def sqlite_damage_reported(what: str, fix: str) -> Iterator[None]:
    """SQLite's errors for a damaged file ("malformed", "not a database") as one `StoreError` naming the file and
    the fix; a locked database or a full disk (OperationalError) is not damage and passes through."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError):
            raise
        raise StoreError(f"{what} is damaged ({exc}); {fix}") from exc


def sqlite_problems(db: sqlite3.Connection, quick: bool = True, limit: int = 5) -> list[str]:
    """SQLite's own check of a database file (`quick_check` skips the index-to-table cross-check); [] when sound."""
    pragma = "quick_check" if quick else "integrity_check"
    try:
        rows = [str(r[0]) for r in db.execute(f"PRAGMA {pragma}({int(limit)})").fetchall()]
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    return [] if rows == ["ok"] else rows


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a sibling temporary file of this writer's own (`<path>.tmp-<pid>-<random>@<host>`), fsync, then
    rename over `path`: readers see old or new, never half, and two processes writing one path at once leave one's
    text whole (with one shared temporary name, the second truncated the first's and one of them failed with
    FileNotFoundError). Temporaries of this machine's writers that died are removed."""
    tmp = _own_sibling(path, "tmp", _writer_id())
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        kill_point("atomic-write")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    remove_abandoned_temporaries(path)


def remove_abandoned_temporaries(path: Path) -> None:
    """`atomic_write_text`'s temporaries of `path` whose writer, on this machine, is no longer running (killed
    mid-write), and the shared `<path>.tmp` of versions before 2026-12-04."""
    _remove_abandoned_siblings(path, kinds=("tmp",))


def is_locked(directory: Path, lock_file: str = ".lock") -> bool:
    """Whether another process holds `directory/<lock_file>` (an `exclusive_lock` writer) right now; a lock file
    that does not exist or cannot be opened is not held, nor is one this process holds (`check --repair` holds the
    store's lock while it reads the store)."""
    if os.path.abspath(directory / lock_file) in _HELD_HERE:
        return False
    try:
        descriptor = os.open(directory / lock_file, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)  # closing releases a lock taken here
    return False


_HELD_HERE: set[str] = set()
"""The `exclusive_lock` files this process holds now."""


@contextmanager
def exclusive_lock(directory: Path, busy: str | None = None, lock_file: str = ".lock") -> Iterator[None]:
    """Hold `directory/<lock_file>` for writing; a second writer is refused instead of corrupting the store (`busy`:
    the refusal's text for a folder that is not a store). The lock file is opened for appending: an existing file
    that also serves another purpose keeps its contents."""
    directory.mkdir(parents=True, exist_ok=True)
    held = os.path.abspath(directory / lock_file)
    handle = (directory / lock_file).open("a")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise StoreError(
                busy or f"store '{directory}' is being written by another process; wait for it to finish"
            ) from exc
        _HELD_HERE.add(held)
        try:
            yield
        finally:
            _HELD_HERE.discard(held)
    finally:
        handle.close()


READ_ONLY_ERRORS = (errno.EACCES, errno.EPERM, errno.EROFS)


@contextmanager
def waiting_lock(path: Path, shared: bool = False, unlocked_if_read_only: bool = False) -> Iterator[None]:
    """Hold the lock file `path` (made, with its folder, if missing), waiting while another process holds it: alone,
    or `shared` with other shared holders. For short critical sections. `unlocked_if_read_only`: where the folder
    may only be read (another user's cache, a read-only mount), go on without the lock, since nobody who could take
    it can change what it guards there either."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError as exc:
        if not (unlocked_if_read_only and exc.errno in READ_ONLY_ERRORS):
            raise
        yield
        return
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def write_directory_atomically(target: Path, write: Callable[[Path], None]) -> Path:
    """Let `write` fill a fresh sibling of this process's own (`<target>.partial-<pid>-<random>@<host>`, not yet made),
    then swap it in for `target`.

    At any moment `target` is either the old or a new complete directory. Two processes writing one target at once
    each write their own sibling, and the target ends as one of them whole (the last to finish), never a mix of both.
    Siblings left by processes of this machine that died are removed first (a folder on shared storage may be written
    from another machine, whose processes cannot be seen from here).
    """
    _remove_abandoned_siblings(target)
    own = _writer_id()
    partial = _own_sibling(target, "partial", own)
    set_aside: list[Path] = []
    try:
        write(partial)
        while True:  # another writer may put its directory in place between our two renames: set that aside too
            aside = _own_sibling(target, "old", f"{own}-{len(set_aside)}")
            try:
                os.replace(target, aside)
                set_aside.append(aside)
            except FileNotFoundError:
                pass
            try:
                os.replace(partial, target)
                break
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        if set_aside and not target.exists():  # the swap failed half-way: put the last complete folder back
            os.replace(set_aside.pop(), target)
        raise
    for aside in set_aside:
        shutil.rmtree(aside, ignore_errors=True)
    return target


def _writer_id() -> str:
    """`<pid>-<random>`: this writer's own part of a sibling's name (the pid tells whether the writer still runs)."""
    return f"{os.getpid()}-{os.urandom(4).hex()}"


def _own_sibling(target: Path, kind: str, writer: str) -> Path:
    """`<target>.<kind>-<writer>@<host>`, the name `_remove_abandoned_siblings` reads back."""
    return target.with_name(f"{target.name}.{kind}-{writer}@{socket.gethostname()}")


def _remove_abandoned_siblings(target: Path, kinds: tuple[str, ...] = ("partial", "old")) -> None:
    """`<target>.<kind>-<pid>-…@<host>` (a folder or a file) of this machine's processes that are no longer running
    (a run killed mid-save), and the `<target>.<kind>` of versions before 2026-12-04. A sibling of another machine
    (shared storage) is left alone: its process cannot be seen from here."""
    from ragtune.child_process import exited

    if not target.parent.is_dir():
        return
    for sibling in target.parent.glob(f"{glob.escape(target.name)}.*"):
        kind, _, owner = sibling.name[len(target.name) + 1 :].partition("-")
        if kind not in kinds:
            continue
        process, _, host = owner.partition("@")
        if not owner or (host == socket.gethostname() and exited(process.split("-")[0])):
            if sibling.is_dir() and not sibling.is_symlink():
                shutil.rmtree(sibling, ignore_errors=True)
            else:
                sibling.unlink(missing_ok=True)


@contextmanager
def scratch_directory(prefix: str) -> Iterator[Path]:
    """A temporary directory, removed afterwards even while a library's background thread still settles files in it
    (tantivy's segment garbage collection can outlive its writer by a moment)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        _remove_settling_tree(path)


def _remove_settling_tree(path: Path, attempts: int = 20, pause_s: float = 0.05) -> None:
    for attempt in range(attempts):
        try:
            shutil.rmtree(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.ENOTEMPTY or attempt == attempts - 1:
                raise
            time.sleep(pause_s)
