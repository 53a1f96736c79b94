"""A real LiveKit server for the MatrixRTC tests: built from its Go module at a pinned version, cached, run on
127.0.0.1 in dev mode.

LiveKit's server exists only as a Go module, so the tests build it with the machine's Go toolchain (``go install``
of ``github.com/livekit/livekit-server/cmd/server`` at :data:`LIVEKIT_VERSION`) into ``<cache>/livekit-<version>``,
once, as the Synapse virtualenv is installed once. Go is used for nothing else, and never for the product.

The version is pinned to one whose ``go.mod`` has no ``replace`` directives: ``go install mod@version`` refuses
those, and the later 1.13.x releases replace pion's WebRTC, DTLS and ICE with LiveKit forks that the Go module
proxy does not serve. v1.13.5 needs Go 1.26; on a machine with an older (or no) Go, :func:`ensure_livekit` raises
:class:`LiveKitUnavailable` saying why, and the tests that need the server skip with that reason.

:class:`LiveKitServer` starts the binary with a config of its own (free ports on 127.0.0.1, an API key and secret,
no external IP discovery) and waits until it answers HTTP.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .synapse import cache_dir

LIVEKIT_MODULE = "github.com/livekit/livekit-server"
LIVEKIT_VERSION = "v1.13.5"
#: The Go the pinned module's go.mod asks for.
GO_NEEDED = (1, 26)
#: Building downloads the module and its dependencies (about 2.5 min on two cores the first time).
BUILD_TIMEOUT = 1500


class LiveKitUnavailable(RuntimeError):
    """The LiveKit server cannot be built here (no Go, an older Go, no module proxy): the message says which."""


def go_version(go: str | None = None) -> tuple[int, int] | None:
    """The (major, minor) of the ``go`` command, or None when there is none."""
    go = go or shutil.which("go")
    if go is None:
        return None
    try:
        out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.match(r"go(\d+)\.(\d+)", out.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def _binary(directory: Path) -> Path:
    return directory / "livekit-server"


def ensure_livekit(cache: Path | None = None) -> Path:
    """Build the pinned LiveKit server into ``<cache>/livekit-<version>`` unless it is there; return the binary.

    Several processes may call this at once: a lock file serialises the build, the others wait and reuse it. The
    binary is moved into place only once it is complete, so an interrupted build is redone."""
    directory = (cache or cache_dir()) / f"livekit-{LIVEKIT_VERSION}"
    binary = _binary(directory)
    if binary.exists():
        return binary
    found = go_version()
    if found is None:
        raise LiveKitUnavailable("no Go toolchain (go) on this machine: the LiveKit server is built from its Go "
                                 "module and needs Go 1.26 or newer (Debian 12 and 13 ship older ones)")
    if found < GO_NEEDED:
        raise LiveKitUnavailable(f"Go {found[0]}.{found[1]} is too old to build LiveKit server {LIVEKIT_VERSION} "
                                 f"(it needs Go {GO_NEEDED[0]}.{GO_NEEDED[1]} or newer)")
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f"livekit-{LIVEKIT_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        if not binary.exists():
            _build(directory)
    return binary


def _build(directory: Path) -> None:
    building = directory / "build"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir()
    print(f"intercom: building LiveKit server {LIVEKIT_VERSION} with Go into {directory} (first use only, a few "
          "minutes)...", file=sys.stderr, flush=True)
    started = time.monotonic()
    env = dict(os.environ, GOBIN=str(building), CGO_ENABLED="0")
    try:
        result = subprocess.run(["go", "install", "-trimpath", f"{LIVEKIT_MODULE}/cmd/server@{LIVEKIT_VERSION}"],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                                timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        raise LiveKitUnavailable(f"building LiveKit server {LIVEKIT_VERSION} took over {BUILD_TIMEOUT} s") from exc
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise LiveKitUnavailable(f"could not build LiveKit server {LIVEKIT_VERSION} (it needs the Go module "
                                 f"proxy):\n{tail}")
    (building / "server").rename(_binary(directory))
    shutil.rmtree(building, ignore_errors=True)
    print(f"intercom: built LiveKit server {LIVEKIT_VERSION} in {time.monotonic() - started:.0f} s",
          file=sys.stderr, flush=True)


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveKitServer:
    """One LiveKit server on 127.0.0.1 with its own ports and key; ``url`` is its ``ws://`` address.

    Use as a context manager (``with LiveKitServer(workdir) as lk: ...``); its log is ``workdir/livekit.log``."""

    def __init__(self, workdir: Path, binary: Path | None = None) -> None:
        self.workdir = Path(workdir)
        self.binary = binary
        self.port = _free_port()
        self.rtc_tcp_port = _free_port()
        self.rtc_udp_port = _free_port(socket.SOCK_DGRAM)
        self.api_key = "intercom-test"
        self.api_secret = secrets.token_urlsafe(32)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        """The server's YAML config: loopback only, one UDP port for media, no STUN lookup of a public IP."""
        return (f"port: {self.port}\n"
                "bind_addresses: [127.0.0.1]\n"
                "rtc:\n"
                f"  tcp_port: {self.rtc_tcp_port}\n"
                f"  udp_port: {self.rtc_udp_port}\n"
                "  use_external_ip: false\n"
                "  node_ip: 127.0.0.1\n"
                "keys:\n"
                f"  {self.api_key}: {self.api_secret}\n"
                "logging:\n"
                "  level: info\n")

    def start(self, timeout: float = 30.0) -> LiveKitServer:
        binary = self.binary or ensure_livekit()
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "livekit.log", "wb")
        self.process = subprocess.Popen([str(binary), "--config-body", self.config()], stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"LiveKit server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.http_url, timeout=2) as reply:
                    if reply.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"LiveKit server did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join((self.workdir / "livekit.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> LiveKitServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
