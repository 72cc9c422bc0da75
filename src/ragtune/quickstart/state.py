"""Which quickstart steps are finished, with their results: a JSON file rewritten atomically after each step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ragtune.fsutil import atomic_write_text


class StepState:
    """`out/state.json`: step name → {"seconds", "summary", "data"}. A step listed here is not run again."""

    def __init__(self, path: Path, command: str) -> None:
        self.path = path
        self.steps: dict[str, dict[str, Any]] = {}
        if path.exists():
            try:
                saved = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                saved = {}
            if saved.get("command") == command:  # a different command starts over (its results would not match)
                self.steps = saved.get("steps", {})
        self.command = command

    def done(self, name: str) -> bool:
        return name in self.steps

    def get(self, name: str) -> dict[str, Any]:
        return self.steps[name]

    def record(self, name: str, seconds: float, summary: str, data: dict[str, Any] | None = None) -> None:
        self.steps[name] = {"seconds": seconds, "summary": summary, "data": data or {}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps({"command": self.command, "steps": self.steps}, indent=2) + "\n")
