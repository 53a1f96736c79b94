"""A hung main loop ends the process, so that systemd starts a fresh door.

Everything the door does runs on one asyncio loop: a blocking call or a deadlock there stops the button, the LEDs'
patterns, the sync loop and the calls at once, while the process looks alive. systemd's watchdog (``WatchdogSec``)
catches that, because the pings come from the loop; but it kills without a word. This thread catches it first
(at :data:`SHARE_OF_SYSTEMD` of systemd's limit, or after :data:`DEFAULT_LIMIT` seconds without systemd), writes
where the loop is stuck (every thread's stack) to the journal, and ends the process with :data:`EXIT_HUNG`;
``Restart=always`` does the rest.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import sys
import threading
import time
from collections.abc import Callable

log = logging.getLogger("intercom")

#: Without systemd's watchdog: the loop must run at least this often (seconds).
DEFAULT_LIMIT = 60.0
#: Under systemd's watchdog: end the process after this share of ``WatchdogSec``, before systemd kills it.
SHARE_OF_SYSTEMD = 0.8
#: The exit status of a door that ended itself because its loop hung (EX_SOFTWARE).
EXIT_HUNG = 70


def limit_for(watchdog_interval: float | None) -> float:
    """The hang limit for a systemd ping interval (half of ``WatchdogSec``), or the default without one."""
    return DEFAULT_LIMIT if watchdog_interval is None else 2 * watchdog_interval * SHARE_OF_SYSTEMD


def _end_process(stalled: float) -> None:
    log.critical("the main loop has not run for %.1f s: the door ends itself so that systemd restarts it; where "
                 "every thread was:", stalled)
    for handler in logging.getLogger().handlers:
        handler.flush()
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    sys.stderr.flush()
    os._exit(EXIT_HUNG)


class LoopWatchdog:
    """Run :meth:`heartbeat` on the loop and :meth:`start` the watching thread; ``on_hang(stalled_seconds)`` is
    called (from the thread, once) when the heartbeat is older than ``limit``. By default it ends the process."""

    def __init__(self, limit: float, on_hang: Callable[[float], None] = _end_process) -> None:
        self.limit = limit
        self._on_hang = on_hang
        self._beat = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    async def heartbeat(self) -> None:
        """Beat while the loop runs (a task of the loop)."""
        while True:
            self._beat = time.monotonic()
            await asyncio.sleep(self.limit / 8)

    def start(self) -> None:
        self._beat = time.monotonic()
        self._thread = threading.Thread(target=self._watch, name="intercom-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _watch(self) -> None:
        while not self._stop.wait(self.limit / 8):
            stalled = time.monotonic() - self._beat
            if stalled > self.limit:
                self._on_hang(stalled)
                return
