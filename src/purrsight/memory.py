"""Give freed heap memory back to the operating system between the stages of a job.

A training step allocates and frees gigabytes of activations; glibc's allocator keeps
the freed blocks for reuse, so a process's resident size stays at its training peak
after training is over, and the next stage (generation, evaluation) adds to it.
``malloc_trim`` returns those free blocks; later stages then start from what is live.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc


@functools.cache
def _libc_malloc_trim():
    """glibc's ``malloc_trim``, or None (musl, macOS, Windows: nothing to call)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_memory(collect: bool = True) -> bool:
    """Collect garbage (unless ``collect`` is False: a full collection takes ~0.1 s with a
    model loaded), then hand free heap pages back to the OS. Returns whether the
    allocator was trimmed (False where there is no ``malloc_trim``)."""
    if collect:
        gc.collect()
    trim = _libc_malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
