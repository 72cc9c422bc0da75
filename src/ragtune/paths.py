"""Where ragtune keeps what it can rebuild: one cache folder per user (evaluation stores, the embedding cache)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ragtune.errors import InputError

CACHE_ENV = "RAGTUNE_CACHE"
EMBEDDING_CACHE_ENV = "RAGTUNE_EMBEDDING_CACHE"
CACHE_LIMIT_ENV = "RAGTUNE_EMBEDDING_CACHE_GB"
DEFAULT_CACHE_LIMIT_GB = 4.0


def cache_root() -> Path:
    """`$RAGTUNE_CACHE`, else `~/.cache/ragtune`."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ragtune").expanduser()


def embedding_cache_path() -> Path:
    """The user's one embedding cache: `$RAGTUNE_EMBEDDING_CACHE`, else `<cache root>/embeddings.sqlite`."""
    return Path(os.environ.get(EMBEDDING_CACHE_ENV) or cache_root() / "embeddings.sqlite").expanduser()


def embedding_cache_limit_bytes() -> int:
    """The cache's size bound: `$RAGTUNE_EMBEDDING_CACHE_GB` gigabytes (default 4); least recently used vectors go
    first when an insert passes it."""
    return _gigabytes_from_env(CACHE_LIMIT_ENV, DEFAULT_CACHE_LIMIT_GB)


MODEL_COPIES_LIMIT_ENV = "RAGTUNE_MODEL_COPIES_GB"
DEFAULT_MODEL_COPIES_LIMIT_GB = 2.0


def model_copies_root() -> Path:
    """Where the OpenVINO copies of models live: `<cache root>/openvino/<OpenVINO release>/<model revision>/`."""
    return cache_root() / "openvino"


def model_copies_limit_bytes() -> int:
    """The bound on the OpenVINO model copies: `$RAGTUNE_MODEL_COPIES_GB` gigabytes (default 2, about 20 copies of
    all-MiniLM-L6-v2); the least recently used copies go first when a new one passes it."""
    return _gigabytes_from_env(MODEL_COPIES_LIMIT_ENV, DEFAULT_MODEL_COPIES_LIMIT_GB)


def _gigabytes_from_env(name: str, default: float) -> int:
    raw = os.environ.get(name)
    try:
        gigabytes = float(raw) if raw else default
    except ValueError:
        raise InputError(f"${name}='{raw}' is not a number of gigabytes (e.g. 2 or 0.5)") from None
    return int(gigabytes * 1e9)


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12,
          "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30}  # fmt: skip


def parse_size(text: str) -> int:
    """'500MB', '2GB', '1.5 GiB', '0' → bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS:
        raise InputError(f"size '{text}' is not understood: give a number with MB, GB (or KiB, MiB, GiB), e.g. 2GB")
    return int(float(match.group(1)) * _UNITS[unit])
