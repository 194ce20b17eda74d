"""The allocator settings app.py applies at start-up."""

import sys

import pytest

from captioner.engine.memory import tune_malloc


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt exists only on Linux")
def test_glibc_accepts_the_allocator_settings():
    assert tune_malloc() is True


HOLES = """
import os
from captioner.engine.memory import release_free_memory

def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

# 64 KB blocks (every page written) with small survivors between them: free() alone cannot
# shrink such a heap, because only its top can be given back.
blocks, survivors = [], []
for _ in range(2000):
    block = bytearray(64 * 1024)
    block[::4096] = b"x" * len(block[::4096])
    blocks.append(block)
    survivors.append(bytearray(1024))
allocated = rss_mb()
del blocks
freed = rss_mb()
released = release_free_memory()
print(allocated, freed, rss_mb(), released, len(survivors))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim exists only on Linux")
def test_freed_memory_in_the_middle_of_the_heap_goes_back_to_the_os():
    # A fresh process: in the suite's own, earlier tests leave the heap in an unknown state.
    import os
    import subprocess

    from helpers import SRC

    result = subprocess.run([sys.executable, "-c", HOLES], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": SRC})
    assert result.returncode == 0, result.stderr
    allocated, freed, trimmed, released, _ = result.stdout.split()
    allocated, freed, trimmed = float(allocated), float(freed), float(trimmed)
    assert allocated - freed < 20, "free() alone gave the holes back: nothing left to show"
    assert released == "True" and freed - trimmed > 100, (allocated, freed, trimmed)
