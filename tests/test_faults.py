"""Faults tested for real: SIGKILLed subprocesses at named points, a full disk (a small tmpfs), two writers in two
processes, damaged files of each kind, name collisions between roots, and hostile queries."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import TEST_THREADS, mounted_tmpfs, new_store, write_docs
from ragtune import Retriever, index_sources, open_store
from ragtune.store import StoreReader
from ragtune.cli import app
from ragtune.errors import InputError, StoreError
from ragtune.store.integrity import check_store, repair_store
from ragtune.training.checkpoints import checkpoint_problem, find_resume_point

runner = CliRunner()
CLI = [sys.executable, "-c", "from ragtune.cli import app; app()"]
WORDS = (
    "pump impeller seal valve bearing motor boiler filter pressure flow water steam safety grease noise phase supply "
    "cartridge garden tomato bread oven crust manual replace check inspect drain clean measure torque bolt gasket"
).split()


def ragtune(*args: str, kill_at: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RAGTUNE_KILL_AT"}
    if kill_at:
        env["RAGTUNE_KILL_AT"] = kill_at
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=timeout)


def ragtune_here(*args: str) -> subprocess.CompletedProcess[str]:
    """The same command in this process, where the models are imported already: for the runs that are not killed
    (each fresh process pays ~10 s of imports)."""
    result = runner.invoke(app, list(args))
    failure = f"\n{result.exception!r}" if result.exit_code and result.exception else ""
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr + failure)


def prose(words: int, seed: int) -> str:
    rng = random.Random(seed)
    sentences = []
    while words > 0:
        n = rng.randint(6, 14)
        sentences.append(" ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + ".")
        words -= n
    return " ".join(sentences)


def many_docs(root: Path, files: int, words: int = 120, seed: int = 0) -> Path:
    return write_docs(root, {f"part{i // 50}/doc{i}.txt": prose(words, seed + i) for i in range(files)})


def passage_ids(store_dir: str | Path) -> set[str]:
    with open_store(store_dir) as store:
        return {p.id for p in store.iter_passages()}


# --- name collisions -------------------------------------------------------------------------------------------


def test_two_roots_with_one_folder_name_keep_their_passages(tmp_path: Path, tiny_model_dir: Path) -> None:
    a = write_docs(tmp_path / "projA" / "docs", {"notes.txt": "Alpha pumps need seals.", "a.txt": "Only in A."})
    b = write_docs(tmp_path / "projB" / "docs", {"notes.txt": "Beta valves throttle flow.", "b.txt": "Only in B."})
    store = tmp_path / "store"
    index_sources(store, [a], model=str(tiny_model_dir), show_progress=False)
    report = index_sources(store, [b], model=str(tiny_model_dir), show_progress=False)
    assert report.files_deleted == 0 and report.passages_removed == 0 and report.passages_total == 4
    with open_store(store) as opened:
        texts = {p.source: p.text for p in opened.iter_passages()}
    assert texts[(a / "notes.txt").resolve().as_posix()] == "Alpha pumps need seals."
    assert texts[(b / "notes.txt").resolve().as_posix()] == "Beta valves throttle flow."
    # single files of one name in two folders
    x = write_docs(tmp_path / "x", {"notes.txt": "Notes of x."}) / "notes.txt"
    y = write_docs(tmp_path / "y", {"notes.txt": "Notes of y."}) / "notes.txt"
    index_sources(store, [x], model=str(tiny_model_dir), show_progress=False)
    index_sources(store, [y], model=str(tiny_model_dir), show_progress=False)
    with open_store(store) as opened:
        texts = {p.text for p in opened.iter_passages()}
    assert {"Notes of x.", "Notes of y."} <= texts
    # deleting a file under one root still removes it, and only it
    (a / "a.txt").unlink()
    report = index_sources(store, [a], model=str(tiny_model_dir), show_progress=False)
    assert report.files_deleted == 1 and report.passages_total == 5


def test_a_store_keyed_by_folder_name_migrates_without_encoding(tmp_path: Path, tiny_model_dir: Path) -> None:
    docs = write_docs(tmp_path / "docs")
    store = tmp_path / "store"
    index_sources(store, [docs], model=str(tiny_model_dir), show_progress=False)
    before = len(passage_ids(store))
    generation = json.loads((store / "manifest.json").read_text())["generation"]
    db = sqlite3.connect(store / generation / "passages.sqlite")  # rewrite the keys as format 1 wrote them
    prefix = docs.resolve().parent.as_posix() + "/"
    for table, column in (("sources", "key"), ("passages", "source"), ("passages", "id"), ("passages", "doc_id")):
        db.execute(f"UPDATE {table} SET {column} = substr({column}, ?)", (len(prefix) + 1,))
    db.execute("UPDATE sources SET root_key = 'docs/'")
    db.commit()
    db.close()
    assert all(pid.startswith("docs/") for pid in passage_ids(store))
    (docs / "guide" / "extra.md").write_text("# Extra\n\nA new page about gaskets.")
    report = index_sources(store, [docs], model=str(tiny_model_dir), show_progress=False)
    assert report.files_migrated == 4 and report.files_added == 1 and report.files_deleted == 0
    assert report.encoded == 1  # only the new page: the migrated files' vectors come from the cache
    ids = passage_ids(store)
    assert len(ids) == before + 1 and all(pid.startswith(prefix) for pid in ids)


# --- hostile queries -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreReader]:
    root = tmp_path_factory.mktemp("fuzz")
    index_sources(root / "store", [write_docs(root / "docs")], show_progress=False)
    with open_store(root / "store") as store:
        yield store


@pytest.mark.parametrize("query", ["vitamin D OR", "salt AND OR pepper", "NOT", "pumps NOT valves", "a IN b", "OR"])
@pytest.mark.parametrize("mode", ["bm25", "hybrid"])
def test_boolean_words_are_plain_words(small_store: StoreReader, query: str, mode: str) -> None:
    Retriever(small_store).search(query, k=3, mode=mode)
    assert Retriever(small_store).search("replace seal NOT", k=1, mode="bm25")[0].doc_id.endswith("/docs/guide/pumps.md")


def test_fuzzed_queries_raise_nothing_but_input_errors(small_store: StoreReader) -> None:
    rng = random.Random(7)
    pieces = ["AND", "OR", "NOT", "IN", "TO", "+", "-", "!", "(", ")", "[", "]", "{", "}", '"', "'", ":", "^", "~",
              "*", "?", "\\", "/", "&&", "||", "title:", "pump", "été", "Ω", "😀", "\u200b", "\x00", " ", "\n",
              "\t", "0", "1e9", "NaN", "<script>", "%", "_", "$", "#"]  # fmt: skip
    queries = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))) for _ in range(120)]
    queries += ["pump " * 3000, "x" * 20000, "", "   ", "\x00"]
    retriever = Retriever(small_store)
    for mode in ("bm25", "dense", "hybrid"):
        for query in queries:
            try:
                retriever.search(query, k=5, mode=mode)
            except InputError:
                pass


def test_cli_search_with_operators_does_not_crash(small_store: StoreReader) -> None:
    result = runner.invoke(app, ["search", "salt AND OR pepper", "--store", str(small_store.directory), "--json"])
    assert result.exit_code == 0, result.output


# --- checkpoints -----------------------------------------------------------------------------------------------


def test_checkpoint_problems_of_each_kind(tmp_path: Path) -> None:
    from safetensors.torch import save_file
    import torch

    good = tmp_path / "checkpoint-4"
    good.mkdir()
    save_file({"w": torch.ones(64)}, good / "model.safetensors")
    (good / "trainer_state.json").write_text("{}")
    assert checkpoint_problem(good) is None
    empty = tmp_path / "checkpoint-8"
    empty.mkdir()
    assert "trainer_state" in checkpoint_problem(empty)
    cut = tmp_path / "checkpoint-12"
    cut.mkdir()
    (cut / "trainer_state.json").write_text("{}")
    data = (good / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: len(data) - 10])
    assert "cut short" in checkpoint_problem(cut)
    state_cut = tmp_path / "checkpoint-16"
    state_cut.mkdir()
    (state_cut / "model.safetensors").write_bytes(data)
    (state_cut / "trainer_state.json").write_text('{"global_step": 1')
    assert "cut short" in checkpoint_problem(state_cut)
    resume = find_resume_point(tmp_path)
    assert resume.checkpoint == good and len(resume.discarded) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4"]


def _training_file(tmp_path: Path) -> Path:
    from test_training import toy_examples

    from ragtune.training.examples import write_training_jsonl

    write_training_jsonl(tmp_path / "train.jsonl", toy_examples() * 2)
    return tmp_path / "train.jsonl"


@pytest.mark.parametrize("command", ["finetune", "train-reranker"])
def test_kill_while_writing_a_checkpoint_then_resume(tmp_path: Path, tiny_model_dir: Path, command: str) -> None:
    train = _training_file(tmp_path)
    out = tmp_path / "model"
    args = [command, str(train), "--out", str(out), "--base", str(tiny_model_dir), "--epochs", "2",
            "--batch-size", "4", "--threads", str(TEST_THREADS)]  # fmt: skip
    args += ["--max-seq-length", "32", "--dev-fraction", "0.25"] if command == "finetune" else ["--max-length", "32"]
    killed = ragtune(*args, kill_at="checkpoint-write:2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    checkpoints = out.with_name("model.checkpoints")
    folders = sorted(checkpoints.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert len(folders) == 2 and not list(folders[-1].iterdir())  # the newest: a folder without weights
    again = ragtune_here(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"removed incomplete checkpoint {folders[-1].name}" in again.stderr
    assert f"resumed from {folders[0]}" in again.stderr
    assert (out / "config.json").exists()


def test_a_second_training_run_into_the_same_folder_is_refused_while_the_first_trains(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    train = _training_file(tmp_path)
    out = tmp_path / "model"
    args = ["finetune", str(train), "--out", str(out), "--base", str(tiny_model_dir), "--epochs", "200",
            "--batch-size", "4", "--threads", "1", "--max-seq-length", "32", "--dev-fraction", "0.25"]  # fmt: skip
    first = subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        checkpoints = out.with_name("model.checkpoints")
        deadline = time.monotonic() + 240
        while not list(checkpoints.glob("checkpoint-*")) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert list(checkpoints.glob("checkpoint-*")), "the first run never saved a checkpoint"
        second = ragtune_here(*args)
        assert first.poll() is None  # the two really met: before, the second trained beside the first
    finally:
        first.kill()
        first.wait()
    assert second.returncode == 2 and "another training run is writing" in " ".join(second.stderr.split())
    assert not out.exists()  # the refused run wrote no model


# --- SIGKILL during store writes and pairs ---------------------------------------------------------------------


@pytest.mark.parametrize("point", ["index-batch:2", "publish-rename", "publish-manifest"])
def test_kill_during_index_keeps_the_last_store_and_the_rerun_finishes(
    tmp_path: Path, tiny_model_dir: Path, point: str
) -> None:
    docs = many_docs(tmp_path / "docs", 20)
    store = tmp_path / "store"
    index_sources(store, [docs], model=str(tiny_model_dir), show_progress=False)
    before = passage_ids(store)
    many_docs(tmp_path / "docs", 600, seed=100)  # rewrites the 20 and adds more: several ingest batches
    killed = ragtune("index", str(docs), "--store", str(store), kill_at=point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert passage_ids(store) == before  # the last published generation, whole
    assert check_store(store).healthy
    done = ragtune_here("index", str(docs), "--store", str(store), "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["passages_total"] == len(passage_ids(store)) > len(before)
    assert check_store(store).leftovers == [] or all(".partial" not in name for name in check_store(store).leftovers)
    assert not list(store.glob("*.partial"))


@pytest.mark.parametrize("point", ["index-batch:2", "pg-commit:2"])
def test_kill_during_a_postgresql_update_leaves_whole_files_and_the_rerun_finishes(
    tmp_path: Path, tiny_model_dir: Path, request: pytest.FixtureRequest, point: str
) -> None:
    store = new_store("postgresql", tmp_path, request)
    docs = many_docs(tmp_path / "docs", 20)
    index_sources(store, [docs], model=str(tiny_model_dir), show_progress=False)
    many_docs(tmp_path / "docs", 600, seed=100)  # rewrites the 20 and adds more
    killed = ragtune("index", str(docs), "--store", store, kill_at=point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    with open_store(store) as opened:  # every file either absent or whole: no passage without its source record
        documents = {p.doc_id for p in opened.iter_passages()}
        sources, kept = opened.info()["counts"]["sources"], opened.count()
    assert len(documents) == sources
    assert sources > 0  # what was committed before the kill stays
    done = ragtune_here("index", str(docs), "--store", store, "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["encoded"] <= report["passages_total"] - kept + 40  # only files the killed run did not commit
    assert report["passages_total"] == len(passage_ids(store))
    with open_store(store) as opened:
        assert len({p.doc_id for p in opened.iter_passages()}) == opened.info()["counts"]["sources"] == 600


def test_kill_during_reindex_keeps_the_old_model(tmp_path: Path, tiny_model_dir: Path, minilm) -> None:  # type: ignore[no-untyped-def]
    docs = many_docs(tmp_path / "docs", 600)
    store = tmp_path / "store"
    index_sources(store, [docs], model=str(tiny_model_dir), show_progress=False)
    killed = ragtune("reindex", "--store", str(store), "--model", "minilm", kill_at="reindex-batch:1")
    assert killed.returncode == -signal.SIGKILL
    with open_store(store) as opened:
        assert opened.manifest.dimension == 32 and len(opened.dense) == len(passage_ids(store))
    done = ragtune_here("reindex", "--store", str(store), "--model", "minilm")
    assert done.returncode == 0, done.stderr[-2000:]
    with open_store(store) as opened:
        assert opened.manifest.dimension == 384
    assert not list(store.glob("*.partial"))


def test_kill_during_pairs_then_resume_writes_each_pair_once(tmp_path: Path, tiny_model_dir: Path) -> None:
    docs = many_docs(tmp_path / "docs", 80, words=60)
    store = tmp_path / "store"
    index_sources(store, [docs], model=str(tiny_model_dir), show_progress=False)
    whole = tmp_path / "whole.jsonl"
    assert ragtune_here("pairs", "--store", str(store), "--out", str(whole), "--method", "ict").returncode == 0
    out = tmp_path / "pairs.jsonl"
    killed = ragtune("pairs", "--store", str(store), "--out", str(out), "--method", "ict", kill_at="pairs-batch:1")
    assert killed.returncode == -signal.SIGKILL
    assert out.read_text().strip() and not (tmp_path / "pairs.jsonl.done").read_text().strip()
    assert ragtune_here("pairs", "--store", str(store), "--out", str(out), "--method", "ict").returncode == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    keys = [(r["query"], r["passage_id"]) for r in rows]
    assert len(keys) == len(set(keys))
    assert sorted(keys) == sorted((r["query"], r["passage_id"]) for r in map(json.loads, whole.read_text().splitlines()))


# --- two writers -----------------------------------------------------------------------------------------------


def test_two_writer_processes_one_is_refused_and_nothing_is_lost(tmp_path: Path, tiny_model_dir: Path) -> None:
    docs = many_docs(tmp_path / "docs", 1500)
    other = write_docs(tmp_path / "other", {"one.txt": "A separate note about gaskets."})
    store = tmp_path / "store"
    index_sources(store, [other], model=str(tiny_model_dir), show_progress=False)
    first = subprocess.Popen([*CLI, "index", str(docs), "--store", str(store)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(store.glob("*.partial")) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    second = ragtune_here("index", str(other), "--store", str(store))
    assert first.wait(timeout=300) == 0, first.stderr.read()[-2000:]
    assert second.returncode == 2 and "being written by another process" in second.stderr
    assert "Traceback" not in second.stderr
    documents = {pid.rsplit("#", 1)[0] for pid in passage_ids(store)}
    assert len(documents) == 1501 and check_store(store).healthy


def test_files_deleted_while_index_runs_are_reported_and_the_run_finishes(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A user tidies the folder while a long `index` runs: files it listed are gone when it comes to read them.
    Before, the run died with a FileNotFoundError traceback; now they are reported as skipped (why), the rest is
    indexed, and the next run has nothing to do."""
    docs = many_docs(tmp_path / "docs", 1500)
    last_two = sorted(docs.rglob("*.txt"))[-2:]  # read last: still unread when the build begins
    store = tmp_path / "store"
    running = subprocess.Popen([*CLI, "index", str(docs), "--store", str(store), "--model", str(tiny_model_dir),
                                "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(store.glob("*.partial")) and running.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    for path in last_two:
        path.unlink()
    out, err = running.communicate(timeout=300)
    assert running.returncode == 0 and "Traceback" not in err, err[-2000:]
    reasons = {str(path.resolve()): "deleted or moved while it was being indexed" for path in last_two}
    assert json.loads(out)["skipped"] == reasons  # (the terminal lines say the same, wrapped at any character)
    documents = {pid.rsplit("#", 1)[0] for pid in passage_ids(store)}
    assert len(documents) == 1498 and check_store(store).healthy
    again = ragtune_here("index", str(docs), "--store", str(store), "--model", str(tiny_model_dir), "--json")
    assert again.returncode == 0, again.stderr[-2000:]
    report = json.loads(again.stdout)
    assert (report["files_unchanged"], report["files_added"], report["files_deleted"]) == (1498, 0, 0), report


def test_a_store_in_its_first_build_is_reported_as_being_built_and_an_interrupted_one_as_interrupted(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """`search`, `info` and `check` on a store whose first `index` is still running said it "was interrupted" (and
    `info` called it damaged and advised a repair); now they say another process is building it. Once that process
    is killed, the store is called interrupted, with the command that finishes it."""
    docs = many_docs(tmp_path / "docs", 4000)  # tens of seconds of work: still building while three commands run
    store = tmp_path / "store"
    running = subprocess.Popen([*CLI, "index", str(docs), "--store", str(store), "--model", str(tiny_model_dir)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(store.glob("*.partial")) and running.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        for command in (["search", "pump", "--store", str(store)], ["info", "--store", str(store)],
                        ["check", "--store", str(store)]):  # fmt: skip
            answer = ragtune_here(*command)
            message = " ".join(answer.stderr.split())
            assert answer.returncode == 2 and "is being built by another process" in message, answer.stderr
            assert "interrupted" not in message and "repair" not in message and "Traceback" not in message
    finally:
        running.send_signal(signal.SIGKILL)
        running.wait(timeout=60)
    answer = ragtune_here("search", "pump", "--store", str(store))
    assert answer.returncode == 2 and "the first index run was interrupted" in " ".join(answer.stderr.split())


# --- full disk -------------------------------------------------------------------------------------------------


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "disk", "4m") as mount:
        yield mount


SLOW_DIRECTORY_WRITER = """
import sys, time
from pathlib import Path
from ragtune.fsutil import write_directory_atomically

def write(folder: Path) -> None:
    folder.mkdir()
    print("writing", flush=True)
    for part in range(30):
        (folder / f"part{part}").write_text(sys.argv[2])
        time.sleep(float(sys.argv[3]))

write_directory_atomically(Path(sys.argv[1]), write)
"""


def test_two_processes_saving_one_model_folder_leave_one_whole_folder_and_a_killed_save_leaves_nothing(
    tmp_path: Path,
) -> None:
    """Two real processes save into one --out at once (two `merge`, `tsdae` or `finetune` runs): each finishes, and
    the folder holds one writer's files, never a mix (before, the second deleted the first's half-written folder
    and the first went on writing into the second's). A save killed with SIGKILL leaves a folder that the next save
    of that target removes."""
    target = tmp_path / "model"

    def writer(tag: str, pause: float = 0.01) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", SLOW_DIRECTORY_WRITER, str(target), tag, str(pause)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip

    for _ in range(3):
        first = writer("A")
        assert first.stdout is not None and first.stdout.readline() == "writing\n"
        second = writer("B")
        for process in (first, second):
            _, err = process.communicate(timeout=120)
            assert process.returncode == 0, err
        contents = {part.read_text() for part in target.iterdir()}
        assert len(list(target.iterdir())) == 30 and len(contents) == 1, contents
        assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]

    killed = writer("K", pause=1.0)
    assert killed.stdout is not None and killed.stdout.readline() == "writing\n"
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    assert any(p.name.startswith("model.partial-") for p in tmp_path.iterdir())
    last = writer("C", pause=0.0)
    _, err = last.communicate(timeout=120)
    assert last.returncode == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert {part.read_text() for part in target.iterdir()} == {"C"}


FILE_WRITER = """
import sys
from pathlib import Path
from ragtune.fsutil import atomic_write_text

for _ in range(int(sys.argv[3])):
    atomic_write_text(Path(sys.argv[1]), (sys.argv[2] * 1000 + "\\n") * 500)
"""


def test_two_processes_writing_one_file_leave_one_writers_text_and_a_killed_write_leaves_nothing(
    tmp_path: Path,
) -> None:
    """Two real processes replace one file at once (two `ragtune mine --out pairs.jsonl`): both finish and the file
    is one writer's text, whole (before, they shared one temporary name: the second truncated the first's, and one
    of them failed with FileNotFoundError). A write killed with SIGKILL before its rename leaves the old text and a
    temporary that the next write of that file removes."""
    target = tmp_path / "mined.jsonl"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}

    def writer(tag: str, times: int, kill: bool = False) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", FILE_WRITER, str(target), tag, str(times)],
                                env={**env, "RAGTUNE_KILL_AT": "atomic-write"} if kill else env,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip

    first, second = writer("A", 150), writer("B", 150)
    for process in (first, second):
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    assert set(target.read_text()) in ({"A", "\n"}, {"B", "\n"}) and len(target.read_text()) == 500_500
    before = target.read_text()
    killed = writer("K", 1, kill=True)
    killed.communicate(timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert target.read_text() == before
    assert [p.name.split("-")[0] for p in tmp_path.iterdir() if p != target] == ["mined.jsonl.tmp"]
    last = writer("C", 1)
    _, err = last.communicate(timeout=120)
    assert last.returncode == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mined.jsonl"]
    assert set(target.read_text()) == {"C", "\n"}


def test_a_write_removes_this_machines_dead_temporaries_and_leaves_another_machines(tmp_path: Path) -> None:
    """On shared storage a temporary may belong to a writer on another machine, whose process cannot be seen from
    here: only this machine's dead writers' temporaries (and the old shared `.tmp`) are removed."""
    import socket

    from ragtune.fsutil import atomic_write_text

    target = tmp_path / "mined.jsonl"
    elsewhere = tmp_path / "mined.jsonl.tmp-999999999-abcd@another-machine"
    for leftover in (elsewhere, tmp_path / f"mined.jsonl.tmp-999999999-abcd@{socket.gethostname()}",
                     tmp_path / "mined.jsonl.tmp"):  # fmt: skip
        leftover.write_text("half")
    atomic_write_text(target, "whole\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, elsewhere.name])
    assert target.read_text() == "whole\n"


def test_disk_full_gives_one_message_removes_the_partial_work_and_the_next_run_proceeds(
    tmp_path: Path, tiny_model_dir: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    monkeypatch.setenv("RAGTUNE_EMBEDDING_CACHE", str(small_disk / "cache" / "embeddings.sqlite"))  # full too
    docs = write_docs(tmp_path / "docs")
    store = small_disk / "store"
    index_sources(store, [docs], model=str(tiny_model_dir), show_progress=False)
    before = passage_ids(store)
    free_before = shutil.disk_usage(small_disk).free
    big = write_docs(tmp_path / "docs", {"big.txt": prose(600_000, 3)})  # ~4 MB of text: cannot fit
    result = runner.invoke(app, ["index", str(docs), "--store", str(store)])
    assert result.exit_code == 2, result.output
    assert "disk full" in result.stderr and "run the same command again" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not list(store.glob("*.partial")) and passage_ids(store) == before
    assert shutil.disk_usage(small_disk).free >= free_before - 256 * 1024  # the cache's growth was given back
    (big / "big.txt").write_text(prose(300, 4))  # the user trims the input: the next plain run succeeds
    report = index_sources(store, [docs], model=str(tiny_model_dir), show_progress=False)
    assert report.files_added == 1 and len(passage_ids(store)) > len(before)
    assert check_store(store).healthy


@pytest.mark.integration
def test_a_full_disk_while_converting_the_model_is_one_message_leaves_no_partial_copy_and_the_rerun_proceeds(
    tmp_path: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGTUNE_CACHE", str(small_disk / "cache"))  # 4 MB: MiniLM's OpenVINO copy needs ~90
    monkeypatch.setenv("RAGTUNE_ENCODER", "openvino")
    docs = write_docs(tmp_path / "docs")
    store = tmp_path / "store"
    full = ragtune_here("index", str(docs), "--store", str(store), "--model", "minilm")
    assert full.returncode == 2, full.stdout + full.stderr
    assert "cannot write the OpenVINO copy" in full.stderr and "MB free of" in full.stderr
    assert "RAGTUNE_ENCODER=torch" in full.stderr and "Traceback" not in full.stderr
    assert not [path for path in (small_disk / "cache").rglob("*") if path.is_file() and path.stat().st_size]
    subprocess.run(["mount", "-o", "remount,size=256m", str(small_disk)], check=True)  # the user frees space
    again = ragtune_here("index", str(docs), "--store", str(store), "--model", "minilm")
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(list((small_disk / "cache").rglob("model.bin"))) == 1
    assert not list((small_disk / "cache").rglob("partial-*"))
    assert check_store(store).healthy and passage_ids(store)


# --- damaged files ---------------------------------------------------------------------------------------------


@pytest.fixture()
def built(tmp_path: Path, tiny_model_dir: Path) -> Path:
    store = tmp_path / "store"
    index_sources(store, [many_docs(tmp_path / "docs", 300)], model=str(tiny_model_dir), show_progress=False)
    return store


def _generation(store: Path) -> Path:
    return store / json.loads((store / "manifest.json").read_text())["generation"]


def test_overwritten_pages_are_found_by_info_and_check_and_repaired(built: Path, tmp_path: Path) -> None:
    total = len(passage_ids(built))
    table = _generation(built) / "passages.sqlite"
    data = bytearray(table.read_bytes())
    page = 4096
    for offset in range(len(data) // 2, len(data) // 2 + 3 * page):  # three pages in the middle: garbage
        data[offset] = (offset * 31) % 251
    table.write_bytes(bytes(data))
    info = runner.invoke(app, ["info", "--store", str(built)])
    assert info.exit_code == 2 and "damaged" in info.stderr and "--repair" in info.stderr
    search = runner.invoke(app, ["search", "pump seal", "--store", str(built), "--mode", "bm25"])
    assert search.exit_code in (0, 2) and "Traceback" not in search.output
    checked = runner.invoke(app, ["check", "--store", str(built)])
    assert checked.exit_code == 1 and "problem:" in checked.stdout
    repaired = repair_store(built)
    assert repaired.healthy and any("rebuilt" in action for action in repaired.actions)
    kept = len(passage_ids(built))
    assert 0 < kept < total
    report = index_sources(built, [tmp_path / "docs"], show_progress=False)  # puts back the sources left out
    assert report.encoded == 0 and len(passage_ids(built)) == total and check_store(built).healthy


@pytest.mark.parametrize("damaged", ["dense.faiss", "keyword/meta.json"])
def test_an_index_file_that_does_not_match_is_rebuilt(built: Path, damaged: str) -> None:
    total = len(passage_ids(built))
    (_generation(built) / damaged).write_bytes(b"not an index")
    assert not check_store(built).healthy
    with pytest.raises(StoreError, match="check --store"):
        open_store(built)
    assert repair_store(built).healthy
    with open_store(built) as opened:
        assert len(opened.dense) == total


def test_a_damaged_dense_index_is_rebuilt_by_encoding_again_when_the_cache_is_gone(built: Path) -> None:
    import numpy as np

    with open_store(built) as opened:
        before = {p.id: opened.embedding(p.id) for p in opened.iter_passages()}
    (_generation(built) / "dense.faiss").write_bytes(b"not an index")  # the store's only copy of its vectors
    remove = Path(os.environ["RAGTUNE_EMBEDDING_CACHE"])
    for path in remove.parent.glob(remove.name + "*"):
        path.unlink()
    repaired = repair_store(built)
    assert repaired.healthy and any("rebuilt" in action for action in repaired.actions)
    with open_store(built) as opened:
        after = {p.id: opened.embedding(p.id) for p in opened.iter_passages()}
    assert after.keys() == before.keys()
    ids = sorted(before)
    cosines = np.sum(np.vstack([before[i] for i in ids]) * np.vstack([after[i] for i in ids]), axis=1)
    assert cosines.min() >= 0.999  # encoded again in other batches: bf16 may move the last digits


def test_a_dense_index_of_another_dimension_is_found_and_rebuilt(built: Path) -> None:
    import numpy as np

    from ragtune.store.dense import FaissDenseIndex

    path = _generation(built) / "dense.faiss"
    ids = np.concatenate([batch for batch, _ in FaissDenseIndex.load(path).iter_live()])
    other = FaissDenseIndex.create(8, len(ids))
    other.add(ids, np.eye(8, dtype=np.float32)[np.arange(len(ids)) % 8])
    other.save(path)  # as many entries as passages, but not the store's vectors
    assert any("8-dimensional" in problem for problem in check_store(built).problems)
    assert repair_store(built).healthy
    with open_store(built) as opened:
        assert opened.dense.dimension == opened.manifest.dimension and len(opened.dense) == len(ids)


@pytest.mark.parametrize(
    "damage", [
        lambda m: m.pop("model"),
        lambda m: m["model"].pop("revision"),
        lambda m: m.update(generation="../../etc"),
        lambda m: m.update(generation="/tmp"),
        lambda m: m["chunking"].pop("overlap_tokens"),
        lambda m: m.update(dimension="384"),
    ],
)  # fmt: skip
def test_a_damaged_manifest_is_one_clear_error_and_repair_restores_it(built: Path, damage) -> None:  # type: ignore[no-untyped-def]
    total = len(passage_ids(built))
    manifest = json.loads((built / "manifest.json").read_text())
    damage(manifest)
    (built / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="corrupt manifest.json"):
        open_store(built)
    result = runner.invoke(app, ["search", "pump", "--store", str(built)])
    assert result.exit_code == 2 and "ragtune check" in result.stderr
    assert repair_store(built).healthy
    assert len(passage_ids(built)) == total


def test_a_damaged_embedding_cache_is_one_error_and_repair_removes_it(
    built: Path, tmp_path: Path, _own_embedding_cache: Path
) -> None:
    cache = _own_embedding_cache
    runner.invoke(app, ["cache", "info"])  # (checkpoints the WAL into the file)
    data = bytearray(cache.read_bytes())
    data[100:4096 * 3] = bytes(len(data[100:4096 * 3]))  # the header's tail and the first pages: zeros
    cache.write_bytes(bytes(data))
    Path(f"{cache}-wal").unlink(missing_ok=True)
    (tmp_path / "docs" / "part0" / "new.txt").write_text("A new note about torque.")
    result = runner.invoke(app, ["index", str(tmp_path / "docs"), "--store", str(built)])
    assert result.exit_code == 2 and "embedding cache" in result.stderr and "damaged" in result.stderr
    assert "ragtune cache clear" in result.stderr and "Traceback" not in result.output
    info = runner.invoke(app, ["cache", "info"])
    assert info.exit_code == 1 and "problem" in info.output
    report = repair_store(built)
    assert report.healthy and any("embedding cache" in action for action in report.actions)
    assert runner.invoke(app, ["index", str(tmp_path / "docs"), "--store", str(built)]).exit_code == 0


def test_a_lost_manifest_is_restored_by_check_repair(built: Path) -> None:
    """`check --repair` holds the store's lock while it reads the store: its own lock made the missing manifest look
    like a first build by another process ("being built by another process; wait"), and nothing was repaired."""
    (built / "manifest.json").unlink()
    result = runner.invoke(app, ["check", "--store", str(built), "--repair"])
    assert result.exit_code == 0, result.output
    assert "restored manifest.json" in result.output and (built / "manifest.json").exists()
    assert runner.invoke(app, ["search", "pump", "--store", str(built)]).exit_code == 0


def test_truncated_manifest_and_leftovers(built: Path) -> None:
    (built / "manifest.json").write_text('{"format_version": 1, "gener')
    (built / "gen-000099.partial").mkdir()
    report = repair_store(built)
    assert report.healthy and "gen-000099.partial" not in [p.name for p in built.iterdir()]
    assert any("restored manifest.json" in action for action in report.actions)


# --- memory ----------------------------------------------------------------------------------------------------


def test_a_single_line_file_over_8_mb_is_chunked_in_bounded_memory(tmp_path: Path, minilm_tokenizer) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "one-line.txt"
    words = prose(20_000, 1).replace(".", "")
    with path.open("w") as handle:
        while handle.tell() < 8.5 * 1024 * 1024:  # past the 8 MB streaming threshold; BENCHMARKS.md measures 30 MB
            handle.write(words + " ")
    script = f"""
import sys
from pathlib import Path
from transformers import AutoTokenizer
def peak_mib():  # VmHWM, unlike ru_maxrss, starts afresh at exec (ru_maxrss keeps the forking parent's)
    status = open("/proc/self/status").read()
    return int(status.split("VmHWM:")[1].split()[0]) // 1024
from ragtune.corpus import Chunker, ChunkingConfig, SourceFile, read_documents
from ragtune.corpus.readers import discover_sources
tokenizer = AutoTokenizer.from_pretrained({str(minilm_tokenizer.name_or_path)!r})
files = discover_sources([{str(path)!r}]).files
chunker = Chunker(tokenizer, ChunkingConfig().resolve(256, 2))
passages = chars = 0
for document in read_documents(files[0]):
    for passage in chunker.chunk(document):
        passages += 1
        chars += len(passage.text)
print(passages, chars, peak_mib())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    passages, chars, peak_mib = map(int, done.stdout.split())
    assert passages > 5_500 and chars >= 8.5 * 1024 * 1024 * 0.95
    assert peak_mib < 700, f"peak RSS {peak_mib} MiB"


# --- a suspended training process -------------------------------------------------------------------------------

BUDGETED_TSDAE = """
import json, sys
from pathlib import Path
from sentence_transformers import SentenceTransformerTrainer  # imported here, so the pause falls in training
from ragtune.training.tsdae import TsdaeConfig, tsdae_adapt

sentences = [f"sentence number {i} about pumps valves and seals in the plant" for i in range(40)]
config = TsdaeConfig(base=sys.argv[1], epochs=100_000, batch_size=4, threads=int(sys.argv[3]),
                     time_budget_minutes=float(sys.argv[4]))
print("training", flush=True)
result = tsdae_adapt(sentences, Path(sys.argv[2]), config)
print(json.dumps({"steps": result.steps, "seconds": result.train_seconds}), flush=True)
"""


def test_typical_step_seconds_leaves_out_a_suspended_step_but_keeps_slow_ones() -> None:
    from ragtune.training.callbacks import typical_step_seconds

    assert typical_step_seconds([]) == 0.0
    assert typical_step_seconds([0.5, 40.0]) == 40.0  # too few steps to tell a pause from a slow start
    assert typical_step_seconds([0.5, 0.6, 600.0, 0.5, 0.7]) == 0.7
    assert typical_step_seconds([0.5, 1.2, 0.6, 1.4, 0.5]) == 1.4  # steps that vary: the cautious longest


def test_a_training_suspended_with_sigstop_still_trains_to_its_time_budget(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """A real training process is stopped with SIGSTOP for 10 s of its 24 s budget, then continued. The paused time
    counts against the budget, but training goes on to the deadline: before, the paused step became the estimate of
    every step, and training stopped about 10 s early (a laptop's sleep did the same)."""
    budget_seconds = 24.0
    process = subprocess.Popen(
        [sys.executable, "-c", BUDGETED_TSDAE, str(tiny_model_dir), str(tmp_path / "adapted"), str(TEST_THREADS),
         str(budget_seconds / 60)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None and process.stdout.readline() == "training\n"
    time.sleep(3.0)  # the tiny model loads in well under a second; training is under way
    process.send_signal(signal.SIGSTOP)
    time.sleep(10.0)
    process.send_signal(signal.SIGCONT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-2000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert 0.8 * budget_seconds <= result["seconds"] <= budget_seconds + 5.0, result
    assert result["steps"] > 10, result
