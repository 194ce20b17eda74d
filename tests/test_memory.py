"""The allocator settings app.py applies at start-up."""

import sys

import pytest

from captioner.memory import tune_malloc


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt exists only on Linux")
def test_glibc_accepts_the_allocator_settings():
    assert tune_malloc() is True


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim exists only on Linux")
def test_freed_memory_in_the_middle_of_the_heap_goes_back_to_the_os():
    from captioner.memory import release_free_memory

    # 64 KB blocks with small survivors between them: free() alone cannot shrink such a heap.
    blocks, survivors = [], []
    for _ in range(2000):
        blocks.append(bytearray(64 * 1024))
        survivors.append(bytearray(1024))
    del blocks
    before = _rss_mb()
    assert release_free_memory() is True
    assert before - _rss_mb() > 60, "malloc_trim released less than half of the 128 MB freed"
    assert len(survivors) == 2000
