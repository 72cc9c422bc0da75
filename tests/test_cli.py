"""The CLI contract other issues rely on, and one clear line (exit 2, no traceback) for each bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragtune.cli import app
from conftest import rel

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import write_docs

    root = tmp_path_factory.mktemp("cli")
    docs = write_docs(root / "docs")
    result = runner.invoke(app, ["index", str(docs), "--store", str(root / "store")])
    assert result.exit_code == 0, result.output
    assert "4 passages" in result.stdout and "4 added" in result.stdout
    return root / "store"


def _fails_with(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_search_json_contract(built: Path) -> None:
    result = runner.invoke(app, ["search", "impeller cavitation", "--store", str(built), "--k", "2", "--json"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert len(hits) == 2
    assert {"id", "score", "text", "title", "source"} <= set(hits[0])
    assert rel(hits[0]["id"]) == "docs/guide/pumps.md#0"


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_search_modes_and_filters(built: Path, mode: str) -> None:
    args = ["search", "water", "--store", str(built), "--mode", mode, "--filter", "source=docs/notes", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert all(rel(hit["source"]).startswith("docs/notes/") for hit in json.loads(result.stdout))


def test_search_table_output(built: Path) -> None:
    result = runner.invoke(app, ["search", "bread", "--store", str(built), "--k", "1"])
    assert result.exit_code == 0 and "cooking" in result.stdout


def test_info_json(built: Path) -> None:
    result = runner.invoke(app, ["info", "--store", str(built), "--json"])
    data = json.loads(result.stdout)
    assert data["counts"] == {"sources": 4, "documents": 4, "passages": 4}
    assert data["model"]["name"] == "minilm" and len(data["model"]["revision"]) == 16
    assert data["size_bytes"]["total"] > 0


def test_reindex_json_reports_nothing_to_do(built: Path) -> None:
    docs = built.parent / "docs"
    result = runner.invoke(app, ["index", str(docs), "--store", str(built), "--json"])
    report = json.loads(result.stdout)
    assert report["encoded"] == 0 and report["files_unchanged"] == 4


def test_files_of_types_not_read_are_counted_on_each_run(built: Path, tmp_path: Path) -> None:
    """A folder of 3 notes and 2 Word files indexed 3 files without a word about the other 2; now each run says what
    it passed over and what it reads, and a folder of only such files says what it holds."""
    docs = built.parent / "docs"
    for name in ("minutes.docx", "budget.docx", "Makefile"):
        (docs / name).write_bytes(b"PK\x03\x04")
    try:
        result = runner.invoke(app, ["index", str(docs), "--store", str(built)])
        assert result.exit_code == 0, result.output
        assert "not read: 2 .docx files, 1 file without an extension (ragtune reads .htm, .html" in " ".join(
            result.stderr.split()
        )
        report = json.loads(runner.invoke(app, ["index", str(docs), "--store", str(built), "--json"]).stdout)
        assert report["files_not_read"] == {".docx": 2, "": 1} and report["files_unchanged"] == 4
    finally:
        for name in ("minutes.docx", "budget.docx", "Makefile"):
            (docs / name).unlink()
    only_word = tmp_path / "word"
    only_word.mkdir()
    (only_word / "a.docx").write_bytes(b"PK")
    _fails_with(["index", str(only_word), "--store", str(tmp_path / "s")], "it holds 1 .docx file: nothing to index")


def test_bad_inputs_give_one_clear_line(built: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"_id": "1", "text": "ok"}\nnot json\n')
    store = str(built)
    _fails_with(["index", str(tmp_path / "missing"), "--store", str(tmp_path / "s")], "does not exist")
    _fails_with(["index", str(tmp_path / "empty"), "--store", str(tmp_path / "s")], "holds no supported files")
    _fails_with(["index", str(broken), "--store", str(tmp_path / "s2")], "broken.jsonl:2: invalid JSON")
    _fails_with(["search", "pump", "--store", store, "--k", "0"], "k must be at least 1")
    _fails_with(["search", "pump", "--store", store, "--k", "-2"], "k must be at least 1")
    _fails_with(["search", "   ", "--store", store], "empty or only whitespace")
    _fails_with(["search", "pump", "--store", store, "--filter", "nonsense"], "is not KEY=VALUE")
    _fails_with(["search", "pump", "--store", str(tmp_path / "nowhere")], "does not exist")
    _fails_with(["info", "--store", str(tmp_path / "empty")], "not a ragtune store")
    _fails_with(["index", str(built.parent / "docs"), "--store", str(tmp_path / "s3"), "--model", "nope"], "nope")


def test_paths_that_cannot_be_used_give_one_line_naming_them(built: Path, tmp_path: Path) -> None:
    """A folder given where a file is written, a file in the middle of a path, a file given as a store: each was a
    traceback (IsADirectoryError, FileExistsError, NotADirectoryError); a refused --out leaves nothing beside it."""
    (tmp_path / "outdir").mkdir()
    (tmp_path / "afile").write_text("not a folder")
    pairs = ["pairs", "--store", str(built), "--method", "ict", "--out"]
    _fails_with([*pairs, str(tmp_path / "outdir")], "is a folder: give a file's path")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "outdir"]
    _fails_with([*pairs, str(tmp_path / "afile" / "pairs.jsonl")], "is a file where a folder is needed")
    _fails_with(["mine", str(tmp_path / "afile" / "pairs.jsonl"), "--store", str(built), "--out",
                 str(tmp_path / "outdir")], "afile")  # fmt: skip
    _fails_with(["search", "pump", "--store", str(tmp_path / "afile")], "is a file, not a store folder")
    _fails_with(["info", "--store", str(tmp_path / "afile")], "is a file, not a store folder")
    _fails_with(["check", "--store", str(tmp_path / "nowhere"), "--repair"], "does not exist")
    assert not (tmp_path / "nowhere").exists()  # a repair of no store makes no folder


def test_broken_jsonl_loses_nothing_already_stored(built: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"_id": "x1", "text": "fine"}\n{"_id": "x2", "text": \n')
    _fails_with(["index", str(broken), "--store", str(built)], "broken.jsonl:2: invalid JSON")
    data = json.loads(runner.invoke(app, ["info", "--store", str(built), "--json"]).stdout)
    assert data["counts"]["passages"] == 4
