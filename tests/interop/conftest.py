"""Fixtures for the interop tests: matrix-js-sdk in headless Chromium against the door, on a real Synapse.

- ``interop``: runs ``tests/interop/setup`` once per session (installs Chromium and the npm packages, builds the
  page; fast when already done) and serves ``js/dist`` on 127.0.0.1. If the setup fails, every interop test
  fails with its output: a harness that silently skips would hide that the door never talked to js-sdk.
- ``homeserver`` / ``matrix_users``: the session's Synapse and fresh users on it (``tests/conftest.py``).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest


from .harness import DIST_DIR, HERE, Installation

SETUP = HERE / "setup"
SETUP_TIMEOUT = 600
DEBIAN_CHROMIUM = "/usr/lib/chromium/chromium"


class _PageHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".js": "text/javascript", ".mjs": "text/javascript",
                      ".map": "application/json"}

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


@pytest.fixture(scope="session")
def interop(pytestconfig: pytest.Config) -> Iterator[Installation]:
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        try:
            done = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=SETUP_TIMEOUT,
                                  env=dict(os.environ, INTERCOM_TEST_PYTHON=sys.executable))
            problem = None if done.returncode == 0 else (
                f"exit status {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            problem = f"{type(exc).__name__}: {exc}"
    if problem is not None:
        pytest.fail(f"the interop harness could not be set up ({SETUP.relative_to(HERE.parent.parent)}):\n"
                    f"{problem}", pytrace=False)
    # Debian's binary itself rather than its /usr/bin/chromium launcher script, which only adds flags we do not want
    # (remote extensions) and Google API keys to the environment.
    chromium = next((c for c in (DEBIAN_CHROMIUM, shutil.which("chromium")) if c and Path(c).exists()), None)
    if chromium is None:
        pytest.fail("the interop setup finished but Chromium is not installed", pytrace=False)
    if not (DIST_DIR / "harness.js").exists():
        pytest.fail("the interop setup finished but left no page bundle", pytrace=False)

    with serve_pages("127.0.0.1") as origin:
        yield Installation(chromium=chromium, page_url=f"{origin}/index.html")


@contextlib.contextmanager
def serve_pages(address: str) -> Iterator[str]:
    """The built page (``js/dist``) over http on ``address``; yields the origin, e.g. ``http://127.0.0.1:PORT``."""
    server = http.server.ThreadingHTTPServer((address, 0), functools.partial(_PageHandler, directory=str(DIST_DIR)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="interop-pages", daemon=True)
    thread.start()
    try:
        yield f"http://{address}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


#: Numbers the tests measured (test name -> {what: value}), printed at the end of the run.
MEASURED: dict[str, dict[str, object]] = {}


@pytest.fixture
def measured(request: pytest.FixtureRequest) -> dict[str, object]:
    """A dict the test fills with what it measured; shown in the terminal summary ("interop measurements")."""
    numbers: dict[str, object] = {}
    MEASURED[request.node.name] = numbers
    return numbers


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    rows = {name: numbers for name, numbers in MEASURED.items() if numbers}
    if not rows:
        return
    terminalreporter.section("interop measurements")
    for name, numbers in rows.items():
        terminalreporter.write_line(f"{name}: " + ", ".join(f"{k}={v}" for k, v in numbers.items()))
