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
