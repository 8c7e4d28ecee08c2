"""release_freed_memory gives a freed heap back: resident size drops after a big free."""

from __future__ import annotations

import gc
import sys

import pytest

from purrsight.memory import release_freed_memory


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc")
def test_freed_small_blocks_go_back_to_the_os() -> None:
    # 200k small blocks (below glibc's mmap threshold) on the heap, every thousandth kept
    # alive, as a training step leaves it: free() alone cannot shrink such a heap.
    blocks, kept = [], []
    for i in range(200_000):
        blocks.append(bytearray(1000))
        if i % 1000 == 0:
            kept.append(bytearray(1000))
    grown = _rss_mb()
    del blocks
    gc.collect()
    assert _rss_mb() > grown - 50  # freed, but still resident
    assert release_freed_memory()
    assert _rss_mb() < grown - 100
    assert len(kept) == 200
