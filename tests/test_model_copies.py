"""The OpenVINO copies of models in the cache folder: bounded (least recently used first), shown and removed by
`ragtune cache`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import mounted_tmpfs
from ragtune.cli import app
from ragtune.embedding import Embedder
from ragtune.model_copies import model_copies, prune_model_copies
from ragtune.models import resolve_model

runner = CliRunner()
HOUR = 3600.0


def _fake_copy(root: Path, name: str, size: int, hours_ago: float) -> Path:
    folder = root / "2026.4.1" / name
    (folder / "int8-abc").mkdir(parents=True)
    (folder / "model.bin").write_bytes(b"\0" * size)
    (folder / "int8-abc" / "model.bin").write_bytes(b"\0" * 100)
    xml = folder / "model.xml"
    xml.write_text("<net/>")
    used = time.time() - hours_ago * HOUR
    os.utime(xml, (used, used))
    return folder


def test_pruning_removes_the_least_recently_used_copies_whole_and_spares_the_kept_and_the_recent(
    tmp_path: Path,
) -> None:
    root = tmp_path / "openvino"
    oldest, old, kept, recent = (_fake_copy(root, name, 1000, hours)
                                 for name, hours in (("a", 5), ("b", 4), ("c", 3), ("d", 0.1)))  # fmt: skip
    assert [c.folder.name for c in model_copies(root)] == ["a", "b", "c", "d"]
    assert model_copies(root)[0].size_bytes == 1000 + 100 + len("<net/>")
    removed = prune_model_copies(1500, keep=[kept], min_idle_seconds=HOUR, root=root)
    assert [c.folder.name for c in removed] == ["a", "b"]  # c is kept, d used minutes ago: the bound is not reached
    assert not oldest.exists() and not old.exists() and kept.exists() and recent.exists()
    assert [c.folder.name for c in prune_model_copies(0, root=root)] == ["c", "d"] and not list(root.rglob("*.bin"))


def test_a_removal_left_by_a_killed_process_is_finished_by_the_next_prune(tmp_path: Path) -> None:
    root = tmp_path / "openvino"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = _fake_copy(root, f".removing-{dead.stdout.strip()}-x", 1000, 2)
    mine = _fake_copy(root, f".removing-{os.getpid()}-y", 1000, 2)  # a removal in progress: not ours to finish
    assert model_copies(root) == []  # neither counts as a copy
    prune_model_copies(10**9, root=root)
    assert not leftover.exists() and mine.exists()


def _another_tiny_model(tiny_model_dir: Path, target: Path) -> Path:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    with torch.no_grad():
        next(model.parameters()).add_(0.01)  # other weights: another revision, another copy
    model.save(str(target))
    return target


def test_a_new_copy_past_the_bound_removes_the_idle_ones_and_the_cache_commands_show_and_remove_copies(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGTUNE_CACHE", str(tmp_path / "cache"))
    first, second = resolve_model(str(tiny_model_dir)), resolve_model(str(_another_tiny_model(tiny_model_dir,
                                                                                                 tmp_path / "m2")))  # fmt: skip
    Embedder(first, backend="openvino").encode(["a pump seal"])
    [copy] = model_copies()
    assert first.revision == copy.folder.name
    long_ago = time.time() - 2 * HOUR
    os.utime(copy.folder / "model.xml", (long_ago, long_ago))
    Embedder(first, backend="openvino")  # loading a copy counts as a use
    assert model_copies()[0].last_used > time.time() - 60
    os.utime(copy.folder / "model.xml", (long_ago, long_ago))
    monkeypatch.setenv("RAGTUNE_MODEL_COPIES_GB", str(copy.size_bytes * 1.5 / 1e9))  # room for one copy
    vectors = Embedder(second, backend="openvino").encode(["a pump seal"])
    assert [c.folder.name for c in model_copies()] == [second.revision] and vectors.shape[0] == 1

    info = runner.invoke(app, ["cache", "info", "--json"])
    assert info.exit_code == 0 and json.loads(info.stdout)["model_copies"]["copies"] == 1
    plain = " ".join(runner.invoke(app, ["cache", "info"]).stdout.split())
    assert "1 OpenVINO model copy, 4." in plain and "RAGTUNE_MODEL_COPIES_GB" in plain
    neither = runner.invoke(app, ["cache", "prune"])
    assert neither.exit_code == 2 and "--model-copies-max-size" in neither.stderr
    pruned = runner.invoke(app, ["cache", "prune", "--model-copies-max-size", "0"])
    assert pruned.exit_code == 0 and "removed 1 model copy" in " ".join(pruned.stdout.split()) and model_copies() == []
    Embedder(first, backend="openvino")
    cleared = runner.invoke(app, ["cache", "clear"])
    assert cleared.exit_code == 0 and "1 model copy" in " ".join(cleared.stdout.split()) and model_copies() == []


def test_a_copy_in_a_read_only_cache_is_loaded_without_recording_its_use(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with mounted_tmpfs(tmp_path / "cache", "64m") as mount:
        monkeypatch.setenv("RAGTUNE_CACHE", str(mount))
        model = resolve_model(str(tiny_model_dir))
        expected = Embedder(model, backend="openvino").encode(["a pump seal"])
        [copy] = model_copies()
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)  # e.g. a cache baked into an image
        vectors = Embedder(model, backend="openvino").encode(["a pump seal"])
        assert (vectors == expected).all() and model_copies()[0].last_used == copy.last_used


_LOAD_IN_A_LOOP = """
import sys, time
import numpy as np
from ragtune.embedding import Embedder
from ragtune.models import resolve_model
model, seconds = resolve_model(sys.argv[1]), float(sys.argv[2])
reference = Embedder(model, backend="torch").encode(["a pump seal"])
loads, end = 0, time.time() + seconds
while time.time() < end or loads < 3:
    vectors = Embedder(model, backend="openvino").encode(["a pump seal"])  # converts again if the copy was pruned
    assert float(np.dot(vectors[0], reference[0])) > 0.999
    loads += 1
print(loads)
"""

_PRUNE_IN_A_LOOP = """
import sys, time
from pathlib import Path
from ragtune.model_copies import prune_model_copies
removed, stop, end = 0, Path(sys.argv[1]), time.time() + 300
while not stop.exists() and time.time() < end:  # until the loader is done
    removed += len(prune_model_copies(0))  # `ragtune cache clear`, over and over
    time.sleep(0.01)
print(removed)
"""


def test_a_prune_in_another_process_never_breaks_a_conversion_or_a_load(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    env = {**os.environ, "RAGTUNE_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    stop = tmp_path / "loader-done"
    pruner = subprocess.Popen([sys.executable, "-c", _PRUNE_IN_A_LOOP, str(stop)], env=env, stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        loader = subprocess.run([sys.executable, "-c", _LOAD_IN_A_LOOP, str(tiny_model_dir), "10"], env=env,
                                capture_output=True, text=True, timeout=300)  # fmt: skip
    finally:
        stop.touch()
    removed, _ = pruner.communicate(timeout=120)
    assert loader.returncode == 0, loader.stderr[-2000:]  # before the lock: "cannot write the OpenVINO copy"
    assert pruner.returncode == 0 and int(removed) >= 1  # the two really raced: a copy was removed under the loader
    assert int(loader.stdout) >= 3
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.name.startswith((".removing-", "partial-"))]
