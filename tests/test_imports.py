"""Every ragtune module imports on its own, whichever is imported first (a cycle shows only in some orders)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ragtune

_IMPORT_EACH_ALONE = """
import importlib, sys, traceback
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "ragtune" or m.startswith("ragtune.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc().strip().splitlines()[-1])
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def ragtune_modules() -> list[str]:
    package = Path(ragtune.__file__).parent
    names = []
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


def test_every_module_imports_first() -> None:
    modules = ragtune_modules()
    assert "ragtune.embedding_cache" in modules and "ragtune.store.store" in modules
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH_ALONE, *modules], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
