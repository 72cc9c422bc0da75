"""Giving freed memory back to the operating system between the long steps of one process."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc


def release_memory() -> bool:
    """Collect garbage, then ask glibc to return the free parts of its heaps to the OS (`malloc_trim(0)`).

    After encoding a corpus, freed buffers stay in the allocator's heaps and count as resident memory; the next step
    (fine-tuning) would add its own peak on top. Returns False where the C library has no `malloc_trim` (not glibc).
    """
    gc.collect()
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None)
    if trim is None:
        return False
    trim(0)
    return True
