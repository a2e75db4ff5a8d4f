"""Keep glibc's malloc from turning large activations into page faults while timing.

glibc serves allocations above its mmap threshold (128 KiB at start, then adapted to
what the program frees) with fresh ``mmap`` pages and returns freed heap memory above the
trim threshold to the OS. A forward pass at batch 256 allocates megabyte-sized
activations, so until the threshold happens to adapt, every forward pays for zeroing new
pages, and whether it has adapted depends on what the process did before. Measured here
(SmallResNet, batch 256, 2 threads): 23 ms in a fresh process, 14 ms after a Lightning fit,
11.5 ms in every case with the thresholds below. Fixing them puts every model of a
benchmark in the same allocator regime, whatever ran before it.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "steady_allocator"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Largest value glibc accepts on 64-bit (``DEFAULT_MMAP_THRESHOLD_MAX``).
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 1024 * 1024 * 1024


def steady_allocator() -> str:
    """Set glibc's mmap and trim thresholds for this process; say what was done.

    Returns a description for the report, or why nothing was changed (not glibc). The
    setting lasts for the rest of the process: glibc cannot return to its adaptive mode.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "default (not glibc: mallopt unavailable)"
    if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return "default (mallopt refused the thresholds)"
    return f"glibc mallopt: mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold {TRIM_THRESHOLD >> 20} MiB"
