"""C heap settings for a server that builds large answers (a 500-row list page is ~775 KB of JSON).

glibc gives a block of more than 128 KiB its own mapping, or, once such blocks were freed, raises that
limit and hands the freed top of the heap back to the OS whenever it passes twice the limit. Either way
each large answer touched fresh pages: 350-730 page faults per 500-row page, ~1-1.5 ms of kernel time of
its ~5-7 ms (docs/performance.md#the-500-row-page). With fixed limits the blocks come from the heap and are reused.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger("commhub.memory")

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
# Blocks up to this size come from the heap (an answer of a few MB), not a mapping of their own.
MMAP_THRESHOLD_BYTES = 16 * 1024 * 1024
# Freed memory at the top of the heap is kept up to this size before it is given back to the OS.
TRIM_THRESHOLD_BYTES = 32 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds (see the module); False where the C library has no mallopt."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt, macOS neither)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    if not ok:
        log.warning("mallopt refused the heap thresholds; large answers will cost page faults")
    return ok
