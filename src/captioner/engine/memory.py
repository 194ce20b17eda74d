"""Keep a long-running server's memory flat under glibc.

With many request threads, glibc gives each its own malloc arena, and freed tensor memory stays in
those arenas: resident memory then climbs for hundreds of requests before it levels off. Two arenas
(the MALLOC_ARENA_MAX knob, set from Python because Spaces starts `python app.py` with an
environment we do not control) and a `malloc_trim` keep it flat under `python bench/load.py`;
two arenas alone do not (docs/performance.md).

The trim waits until the model is idle (`model_thread.when_model_idle`): trimmed pages come back
as page faults in the next batch, so trimming after every batch would slow a busy server.

A fixed 128 KB mmap threshold also keeps memory flat, but makes every larger tensor a fresh
mapping, which slowed full-size batches by half.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def _load_libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _load_libc()


def tune_malloc(arena_max: int = 2, mmap_threshold: int | None = None, trim_threshold: int | None = None) -> bool:
    """Apply the settings (None leaves glibc's own, dynamic, threshold); returns False where the
    C library is not glibc (nothing changed).

    Call it before threads start allocating (first thing in app.py): arenas already made stay.
    """
    mallopt = getattr(_LIBC, "mallopt", None)  # musl and other C libraries have none
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    settings = [(_M_ARENA_MAX, arena_max), (_M_MMAP_THRESHOLD, mmap_threshold), (_M_TRIM_THRESHOLD, trim_threshold)]
    return all(mallopt(option, value) == 1 for option, value in settings if value is not None)


def release_free_memory() -> bool:
    """glibc malloc_trim(0): give the pages of freed chunks back to the OS, from every arena.
    Returns whether any memory was released (False where the C library has no malloc_trim)."""
    trim = getattr(_LIBC, "malloc_trim", None)
    return bool(trim(0)) if trim else False
