"""Reading JSON Lines files with errors that name the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ragtune.errors import InputError
from ragtune.fsutil import printable_path


def iter_json_objects(path: Path, expected: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; `expected` describes the object in the error message."""
    name = printable_path(str(path))
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # Windows tools may start with a BOM
            except UnicodeDecodeError as exc:
                raise InputError(f"{name}:{number}: not UTF-8 text; re-save the file as UTF-8") from exc
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{name}:{number}: invalid JSON ({exc.msg}); fix or remove this line") from exc
            if not isinstance(record, dict):
                raise InputError(f"{name}:{number}: expected a JSON object with {expected}")
            yield number, record
