"""Metadata filters given as KEY=VALUE strings."""

from __future__ import annotations

import re
from collections.abc import Iterable

from ragtune.errors import InputError

_KEY = re.compile(r"^[A-Za-z_][\w.-]*$")


def parse_filters(items: Iterable[str]) -> list[tuple[str, str]]:
    """`source=docs/guide` (path prefix), `doc_id=…`/`title=…` (exact), anything else: a metadata field (exact)."""
    filters: list[tuple[str, str]] = []
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not _KEY.match(key):
            raise InputError(f"filter '{item}' is not KEY=VALUE (e.g. --filter source=docs/guide --filter format=md)")
        filters.append((key, value.strip()))
    return filters
