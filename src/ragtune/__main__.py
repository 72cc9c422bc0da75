"""`python -m ragtune …` is the `ragtune` command."""

from ragtune.cli import app

app(prog_name="ragtune")
