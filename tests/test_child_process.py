"""A job in a fresh process: its result, its lines, its errors and its death reach the parent; it dies with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ragtune.child_process import run_in_child
from ragtune.errors import InputError, RagtuneError


def counts_to(n: int, say) -> dict[str, int]:  # type: ignore[no-untyped-def]
    for i in range(n):
        say(f"line {i}")
    return {"pid": os.getpid(), "n": n}


def fails_with_input_error(say) -> None:  # type: ignore[no-untyped-def]
    raise InputError("data.jsonl line 3: no 'text' field; add one")


def has_a_bug(say) -> None:  # type: ignore[no-untyped-def]
    {}["missing"]


def kills_itself(say) -> None:  # type: ignore[no-untyped-def]
    say("about to die")
    os.kill(os.getpid(), signal.SIGKILL)


def says_then_sleeps(pid_file: str, say) -> None:  # type: ignore[no-untyped-def]
    Path(pid_file).write_text(str(os.getpid()))
    say("started")
    time.sleep(600)


def test_result_and_lines_come_back_from_another_process() -> None:
    lines: list[str] = []
    result = run_in_child("counting", counts_to, 3, say=lines.append)
    assert result["n"] == 3 and result["pid"] != os.getpid()
    assert lines == ["line 0", "line 1", "line 2"]


def test_a_user_error_is_raised_as_itself_and_a_bug_keeps_the_child_traceback() -> None:
    with pytest.raises(InputError, match="data.jsonl line 3: no 'text' field") as user:
        run_in_child("reading", fails_with_input_error, say=print)
    assert not getattr(user.value, "__notes__", None)  # a user error stays one line
    with pytest.raises(KeyError) as bug:
        run_in_child("buggy", has_a_bug, say=print)
    assert "has_a_bug" in "".join(bug.value.__notes__)


def test_a_killed_child_becomes_one_clear_error() -> None:
    lines: list[str] = []
    with pytest.raises(RagtuneError, match="dying stopped: its process was killed by SIGKILL .*out-of-memory killer"):
        run_in_child("dying", kills_itself, say=lines.append)
    assert lines == ["about to die"]


def test_an_interrupted_parent_stops_its_child(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"

    def interrupt(line: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_in_child("sleeping", says_then_sleeps, str(pid_file), say=interrupt)
    assert not _alive(int(pid_file.read_text()))


PARENT = """
import sys
from test_child_process import says_then_sleeps
from ragtune.child_process import run_in_child
run_in_child("sleeping", says_then_sleeps, sys.argv[1], say=print)
"""


def test_a_child_dies_with_its_killed_parent(tmp_path: Path) -> None:
    """The parent SIGKILLed (no handler runs): the kernel kills the child too, so no orphan trains on."""
    pid_file = tmp_path / "pid"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(pid_file)], env=env, stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None and parent.stdout.readline().strip() == "started"
    child = int(pid_file.read_text())
    parent.kill()
    parent.wait(timeout=30)
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split(")")[-1].split()[0] != "Z"  # a zombie is dead


def environment_and_folder(name: str, say) -> tuple[str | None, str]:  # type: ignore[no-untyped-def]
    return os.environ.get(name), os.getcwd()


def test_a_child_sees_the_environment_and_folder_of_the_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Children are forked from a server started at the first call: what the parent changed since must reach them."""
    run_in_child("first", counts_to, 1, say=print)  # the server is running from here on
    monkeypatch.setenv("RAGTUNE_TEST_SETTING", "set after the server started")
    monkeypatch.chdir(tmp_path)
    assert run_in_child("second", environment_and_folder, "RAGTUNE_TEST_SETTING", say=print) == (
        "set after the server started", str(tmp_path))
    monkeypatch.delenv("RAGTUNE_TEST_SETTING")
    assert run_in_child("third", environment_and_folder, "RAGTUNE_TEST_SETTING", say=print)[0] is None
