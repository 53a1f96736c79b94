"""glibc's allocator, tuned for a door that makes hundreds of calls in one process.

Measured (``bench/soak.py``): Python's own objects stay flat from call to call, but with glibc's defaults the
process grew from 121 MB idle to 297 MB after 20 calls, and on. Each call's threads (ALSA, camera, codecs) get
malloc arenas of their own, and the large short-lived buffers of video frames and codecs land in them once glibc's
*dynamic* mmap threshold has grown past their size; freed, they stay as fragments the arenas cannot give back.
Two settings stop that, and cost nothing a door notices:

- at most :data:`ARENAS` arenas (``M_ARENA_MAX``), so the threads share them and reuse the freed space;
- a fixed mmap threshold of :data:`MMAP_THRESHOLD` bytes (``M_MMAP_THRESHOLD``, which also ends the dynamic
  threshold), so every frame-sized buffer is its own mapping and goes back to the system when freed.

With them the same soak ends 200 calls near its idle size (see the README's benchmarks). Applied by ``intercom
run`` before the door starts its threads; elsewhere (another C library) nothing happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("intercom")

#: mallopt(3) parameters (glibc's malloc.h).
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
ARENAS = 2
MMAP_THRESHOLD = 128 * 1024


def tune_malloc() -> bool:
    """Apply the settings above; True when the C library took them."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.debug("no glibc mallopt here: the allocator keeps its defaults")
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, ARENAS)) and bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
