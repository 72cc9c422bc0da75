"""Datasets shipped inside the package (BEIR layout), so the quickstart runs offline from an installed wheel.

`data/scifact` at the repository root is a link into this folder, so commands in the README run from a checkout as well.
"""

from pathlib import Path

SHIPPED = Path(__file__).resolve().parent


def shipped_dataset(name: str = "scifact") -> Path:
    """The folder of a shipped BEIR dataset (each has its own LICENSE.md)."""
    return SHIPPED / name
