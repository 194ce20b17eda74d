"""Keep a long-running server's memory flat under glibc.

With many request threads, glibc gives each its own malloc arena, and its dynamic mmap threshold
rises after PyTorch frees large tensors, so later tensors come from arenas that are never returned.
Resident memory then climbs for hundreds of requests before it levels off (measured with
bench/load.py: +18% from request 100 to 1000 by default, +4.6% with these settings). The same knobs
as MALLOC_ARENA_MAX / MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_, set from Python because
Spaces starts `python app.py` with an environment we do not control.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tune_malloc(arena_max: int = 2, mmap_threshold: int | None = 128 * 1024, trim_threshold: int | None = 128 * 1024) -> bool:
    """Apply the settings; returns False where the C library is not glibc (nothing changed).

    Call it before threads start allocating (first thing in app.py): arenas already made stay.
    Cost: with a fixed 128 KB mmap threshold every larger tensor is a fresh mapping, and on the
    full-size model the app's in-handler time for one caption rose from about 1.2-1.6 s to
    1.5-2.0 s (4 requests each, noisy); see the README's speed section.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # musl and other C libraries have no mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    settings = [(_M_ARENA_MAX, arena_max), (_M_MMAP_THRESHOLD, mmap_threshold), (_M_TRIM_THRESHOLD, trim_threshold)]
    return all(mallopt(option, value) == 1 for option, value in settings if value is not None)
