"""What the door's process holds: memory, open files, threads and asyncio tasks, for ``intercom status``.

A door runs for months; these four numbers are what grows when something leaks, so status shows them and the soak
benchmark (``bench/soak.py``) reads them from a running door. Linux only (``/proc``); elsewhere they are None.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

_STARTED = time.monotonic()


def _status_field(name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def process_figures() -> dict[str, Any]:
    """``rss_mb``, ``open_fds``, ``threads`` (of the OS, native ones included), ``asyncio_tasks`` (of the running
    loop, when called from it) and ``uptime_s``."""
    rss_kb = _status_field("VmRSS")
    try:
        fds: int | None = len(os.listdir("/proc/self/fd"))
    except OSError:
        fds = None
    try:
        tasks: int | None = len(asyncio.all_tasks())
    except RuntimeError:  # no running loop
        tasks = None
    return {
        "rss_mb": None if rss_kb is None else round(rss_kb / 1024, 1),
        "open_fds": fds,
        "threads": _status_field("Threads"),
        "asyncio_tasks": tasks,
        "uptime_s": round(time.monotonic() - _STARTED),
    }
