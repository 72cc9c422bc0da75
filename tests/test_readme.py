"""The README cannot drift from the CLI: every `ragtune …` line of its shell blocks parses against the real command
(each option exists, each value converts), without running it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
from typer.core import TyperGroup

README = Path(__file__).resolve().parent.parent / "README.md"
UsageError = typer.BadParameter.__base__  # typer ships its own click; its UsageError (wrong option, bad value)


def readme_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("ragtune "):
                lines.append(line.strip())
    return lines


def test_the_readme_shows_commands() -> None:
    assert len(readme_commands()) >= 20


@pytest.mark.parametrize("line", readme_commands())
def test_readme_command_parses(line: str) -> None:
    from ragtune.cli import app

    words = shlex.split(line, comments=True)[1:]
    command = typer.main.get_command(app)
    path = ["ragtune"]
    while isinstance(command, TyperGroup):
        name, words = words[0], words[1:]
        found = command.get_command(typer.Context(command), name)
        assert found is not None, f"README: `ragtune {' '.join(path[1:] + [name])}` is no command"
        command, path = found, [*path, name]
    try:
        command.make_context(" ".join(path), list(words))
    except UsageError as exc:  # a wrong option or value: the message says which
        pytest.fail(f"README line `{line}`: {exc.format_message()}")


def test_a_drifted_line_is_caught() -> None:
    from ragtune.cli import app

    group = typer.main.get_command(app)
    command = group.get_command(typer.Context(group), "finetune")
    with pytest.raises(UsageError, match="No such option"):
        command.make_context("ragtune finetune", ["train.jsonl", "--out", "m", "--no-such-option"])


def readme_python_api_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python API") : text.index("\n## ", text.index("## Python API") + 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the Python API section shows one example"
    return blocks[0]


def small_beir_copy(source: Path, target: Path, train_queries: int = 16, test_queries: int = 6) -> Path:
    """A few SciFact queries with their judged abstracts and 20 others: the example's data, small enough for a test."""
    import json

    def qrels(split: str, count: int) -> list[list[str]]:
        rows = [line.split("\t") for line in (source / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]]
        chosen = list(dict.fromkeys(row[0] for row in rows))[:count]
        return [row for row in rows if row[0] in chosen]

    chosen = {"train": qrels("train", train_queries), "test": qrels("test", test_queries)}
    (target / "qrels").mkdir(parents=True)
    for split, rows in chosen.items():
        (target / "qrels" / f"{split}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join("\t".join(row) + "\n" for row in rows)
        )
    query_ids = {row[0] for rows in chosen.values() for row in rows}
    judged = {row[1] for rows in chosen.values() for row in rows}
    with (source / "queries.jsonl").open() as lines, (target / "queries.jsonl").open("w") as out:
        out.writelines(line for line in lines if json.loads(line)["_id"] in query_ids)
    with (source / "corpus.jsonl").open() as lines, (target / "corpus.jsonl").open("w") as out:
        others = 20
        for line in lines:
            if json.loads(line)["_id"] in judged:
                out.write(line)
            elif others > 0:
                out.write(line)
                others -= 1
    return target


@pytest.mark.integration
def test_the_python_api_example_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import ragtune
    from ragtune.datasets import shipped_dataset

    from conftest import write_docs

    example = readme_python_api_example()
    imported = re.search(r"from ragtune import \((.*?)\)", example, re.S)
    assert imported is not None
    assert sorted(name.strip() for name in imported.group(1).split(",") if name.strip()) == sorted(ragtune.__all__)
    write_docs(tmp_path / "docs")
    small_beir_copy(shipped_dataset("scifact"), tmp_path / "data" / "scifact")
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md (Python API)", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert "docs/guide/pumps.md" in printed[0]  # the impeller-seal passage first
    assert re.fullmatch(r"dev nDCG@10 \d\.\d{3} -> \d\.\d{3}", next(line for line in printed if "dev" in line))
    assert [line.split()[0] for line in printed if "nDCG@10 " in line and "dev" not in line] == [
        "minilm:dense", "scifact:dense",
    ]  # fmt: skip
    assert any(line.startswith("scifact:dense vs minilm:dense ['ndcg@10") for line in printed)
    assert (tmp_path / "models" / "scifact" / "model.safetensors").exists()


def cheap_readme_commands() -> list[str]:
    """README lines that only read a store at `stores/mine`: cheap enough to run for real on a small one."""
    return [line for line in readme_commands()
            if line.split()[1] in ("search", "info", "check") and "--store stores/mine" in line and "--rerank" not in line]  # fmt: skip


def test_the_readme_shows_cheap_commands_to_run() -> None:
    assert len(cheap_readme_commands()) >= 3


@pytest.mark.integration
@pytest.mark.parametrize("line", cheap_readme_commands())
def test_cheap_readme_command_runs(line: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run as written, from a folder holding `stores/mine` indexed from a `manuals/` folder like the README's."""
    from typer.testing import CliRunner

    from conftest import write_docs
    from ragtune.cli import app
    from ragtune.store import index_sources

    docs = write_docs(tmp_path / "manuals", {"pumps/seal.md": "# Seals\n\nReplace the impeller seal every two years."})
    monkeypatch.chdir(tmp_path)
    index_sources("stores/mine", [docs], show_progress=False)
    result = CliRunner().invoke(app, shlex.split(line, comments=True)[1:])
    assert result.exit_code == 0, f"README line `{line}`: {result.output}"
    if line.split()[1] == "search":  # the README's query finds the seal passage, filters included
        assert "Seals" in result.output, result.output  # its title: a path may wrap in the table, a word does not
    else:
        assert "stores/mine" in result.output and "passages" in result.output, result.output
