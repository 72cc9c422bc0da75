"""Giving freed memory back to the operating system between the long steps of one process."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable


def release_memory() -> bool:
    """Collect garbage, then ask glibc to return the free parts of its heaps to the OS (`malloc_trim(0)`).

    After encoding a corpus, freed buffers stay in the allocator's heaps and count as resident memory; the next step
    (fine-tuning) would add its own peak on top. Returns False where the C library has no `malloc_trim` (not glibc).
    """
    gc.collect()
    trim = libc_function("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True


def libc_function(name: str) -> Callable[..., int] | None:
    """A function of the C library by name (`malloc_trim`, `prctl`), or None where the library or the function is
    missing (not Linux/glibc)."""
    library = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(library), name, None) if library else None
