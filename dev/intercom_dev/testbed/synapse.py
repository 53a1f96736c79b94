"""A local Synapse homeserver that the project installs and starts itself, for integration tests and the demo.

Why a real Synapse and not a mock: the door's trouble spots (sync timeline limits, the sync response cache,
rate limits, what the server refuses, TURN credentials) are server behaviour. A mock would only repeat what we
already believe about it.

Design choices, each for a reason:

- Synapse is installed from the package index into its *own* cached virtualenv (see :func:`ensure_synapse`), not
  into the project's: it pins many libraries of its own, takes about 30 s to install and about 240 MB, so it is
  installed once per machine and reused.
- The server binds one client listener to 127.0.0.1 only, has no federation listener and trusts no key server, so a
  test run makes no outbound connection.
- The configuration is written as JSON, which is also valid YAML: no YAML library is needed here.
- HTTP goes through :mod:`urllib` only, so this module adds no dependency to the package.
- The server runs in its own process group and is stopped by PID, so a Ctrl-C in the terminal does not kill it
  behind the owner's back and a server started by the command line can be stopped by a later command.

MatrixRTC (what Element Call and Element X need of a homeserver; checked against Synapse 1.163):

- Delayed events (MSC4140) are on in every test server: Synapse enables them when ``max_event_delay_duration`` is
  set (here 24 h; ``max_delayed_events_per_user`` stays at its default 100), and then lists ``org.matrix.msc4140``
  in ``/versions``' ``unstable_features`` (matrix-js-sdk checks that) and
  ``capabilities["org.matrix.msc4140.delayed_events"] = {"max_delay_ms", "max_scheduled"}``. Schedule one with the
  ordinary ``PUT /_matrix/client/v3/rooms/{roomId}/state/{type}/{stateKey}?org.matrix.msc4140.delay=MS`` (the
  ``unstable`` prefix works too; ``PUT .../send/{type}/{txnId}?org.matrix.msc4140.delay=MS`` for a room event): the
  answer is ``{"delay_id": ...}`` instead of an event id. Manage it with
  ``POST /_matrix/client/unstable/org.matrix.msc4140/delayed_events/{delay_id}`` and ``{"action": "restart" |
  "send" | "cancel"}`` (also ``.../{delay_id}/restart``, ``/send``, ``/cancel`` with an empty body);
  ``GET .../org.matrix.msc4140/delayed_events`` lists the user's pending ones. These live only under
  ``unstable/org.matrix.msc4140``, not under ``v3``. A delay beyond the maximum is 400
  ``ORG.MATRIX.MSC4140_DELAY_TOO_LARGE``.
- ``rtc_foci`` on :class:`Homeserver` turns on the rest: ``GET
  /_matrix/client/unstable/org.matrix.msc4143/rtc/transports`` (authenticated; it needs
  ``experimental_features.msc4143_enabled`` and reads ``matrix_rtc.transports``) answers ``{"rtc_transports":
  [...]}``; ``/.well-known/matrix/client`` carries ``org.matrix.msc4143.rtc_foci`` (``serve_client_wellknown`` and
  ``extra_well_known_client_content``); and the listener also serves the ``openid`` resource, i.e. only
  ``GET /_matrix/federation/v1/openid/userinfo?access_token=...`` → ``{"sub": user_id}`` of the federation API, so
  a focus (:mod:`intercom_dev.testbed.rtcfocus`) can check the tokens of ``POST
  /_matrix/client/v3/user/{userId}/openid/request_token``.

Command line (for scripts and humans)::

    python -m intercom_dev.testbed.synapse start    [--data-dir DIR] [--port N] [--turn-uri URI ...] [--turn-secret S]
    python -m intercom_dev.testbed.synapse register [--data-dir DIR] LOCALPART PASSWORD [--admin]
    python -m intercom_dev.testbed.synapse status   [--data-dir DIR]
    python -m intercom_dev.testbed.synapse stop     [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from intercom.errors import IntercomError

#: The Synapse release line the testbed is written against (config keys, admin API). ``~=`` keeps bug-fix
#: and later 1.x releases, which Synapse keeps backwards compatible for configs like ours.
SYNAPSE_REQUIREMENT = "matrix-synapse~=1.163"

SERVER_NAME = "localhost"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0

# File names inside a homeserver's data directory.
CONFIG_FILE = "homeserver.yaml"
LOG_CONFIG_FILE = "log.config"
LOG_FILE = "homeserver.log"
OUTPUT_FILE = "synapse.out"  # Synapse's own stdout/stderr: start-up errors land here, not in the log.
PID_FILE = "synapse.pid"
URL_FILE = "synapse.url"

#: The longest delay a delayed event may ask for (``max_event_delay_duration``; setting it is what turns MSC4140 on).
MAX_EVENT_DELAY = "24h"
#: The ``.well-known/matrix/client`` key under which MatrixRTC clients (Element Call, Element X) look for foci.
RTC_FOCI_WELL_KNOWN_KEY = "org.matrix.msc4143.rtc_foci"
#: The MSC4143 endpoint that lists the server's MatrixRTC transports (needs ``experimental_features.msc4143_enabled``).
RTC_TRANSPORTS_PATH = "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports"
#: MSC4140: the delay parameter of ``PUT /_matrix/client/v3/rooms/{roomId}/state/{type}/{key}`` (and of ``send``).
DELAY_PARAMETER = "org.matrix.msc4140.delay"
#: MSC4140: ``POST`` here plus ``/{delay_id}`` with ``{"action": "restart" | "send" | "cancel"}``; ``GET`` lists them.
DELAYED_EVENTS_PATH = "/_matrix/client/unstable/org.matrix.msc4140/delayed_events"

# Rate limits high enough that no test ever waits on one. Synapse ignores keys it does not know, so listing
# more than the current release reads is harmless and keeps us covered when a release adds one.
_UNLIMITED = {"per_second": 10_000, "burst_count": 10_000}
_RATE_LIMITS: dict[str, Any] = {
    **{
        key: _UNLIMITED
        for key in (
            "rc_message",
            "rc_registration",
            "rc_registration_token_validity",
            "rc_3pid_validation",
            "rc_key_requests",
            "rc_admin_redaction",
            "rc_joins_per_room",
            "rc_third_party_invite",
            "rc_media_create",
            "rc_room_creation",
            "rc_reports",
            "rc_delayed_event_mgmt",
            "rc_user_directory",
            "rc_profile",
        )
    },
    "rc_login": {"address": _UNLIMITED, "account": _UNLIMITED, "failed_attempts": _UNLIMITED},
    "rc_joins": {"local": _UNLIMITED, "remote": _UNLIMITED},
    "rc_invites": {"per_room": _UNLIMITED, "per_user": _UNLIMITED, "per_issuer": _UNLIMITED},
    "rc_presence": {"per_user": _UNLIMITED},
}


class HomeserverError(IntercomError):
    """The test homeserver could not be installed, started, stopped or asked something."""


class SynapseInstallError(HomeserverError):
    """Synapse could not be installed (most often: no access to the Python package index)."""


class MatrixAPIError(HomeserverError):
    """The homeserver answered an HTTP request with an error status."""

    def __init__(self, method: str, path: str, status: int, body: dict[str, Any] | str):
        self.status = status
        self.errcode = body.get("errcode") if isinstance(body, dict) else None
        self.body = body
        super().__init__(f"{method} {path} -> HTTP {status}: {body}")


class RegisteredUser(NamedTuple):
    """What shared-secret registration returns; unpacks as ``user_id, access_token, device_id``."""

    user_id: str
    access_token: str
    device_id: str


# --------------------------------------------------------------------------------------------------------------
# Installing Synapse


def cache_dir() -> Path:
    """The project's cache directory: ``$INTERCOM_CACHE``, else ``$XDG_CACHE_HOME/intercom``, else ``~/.cache/intercom``.

    Resolved at call time (not import time) so a test or a CI job can point it elsewhere with the environment.
    """
    if os.environ.get("INTERCOM_CACHE"):
        return Path(os.environ["INTERCOM_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "intercom"


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _stamp_text() -> str:
    """What the stamp file must hold for a cached virtualenv to be reused.

    The interpreter version is part of it: a venv made by another Python (after an upgrade, or by a different
    interpreter running this code) has compiled extensions that would not load.
    """
    return f"{SYNAPSE_REQUIREMENT}\npython {sys.version_info.major}.{sys.version_info.minor}\n"


def _is_installed(venv: Path) -> bool:
    stamp = venv / ".intercom-synapse"
    try:
        return stamp.read_text().startswith(_stamp_text()) and _venv_python(venv).exists()
    except FileNotFoundError:
        return False


def ensure_synapse(cache: Path | None = None) -> Path:
    """Install Synapse into ``<cache>/synapse-venv`` unless it is already there; return that venv's python.

    Safe to call from several processes at once (a lock file serialises the install; the others wait and then
    reuse it). The stamp file is written last, so an install that was interrupted is redone from scratch.
    The venv is made by ``sys.executable``, the interpreter running this code, so it matches what the project
    was tested with.
    """
    venv = (cache or cache_dir()) / "synapse-venv"
    if _is_installed(venv):
        return _venv_python(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / "synapse-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # Released when the file is closed.
        if not _is_installed(venv):  # Someone else may have finished while we waited.
            _install(venv)
    return _venv_python(venv)


def _install(venv: Path) -> None:
    print(f"intercom: installing {SYNAPSE_REQUIREMENT} into {venv} (first use only, about 30 s)...", file=sys.stderr, flush=True)
    started = time.monotonic()
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(_venv_python(venv)), "-m", "pip", "install", "--quiet", SYNAPSE_REQUIREMENT],
    ]
    for step in steps:
        result = subprocess.run(step, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            raise SynapseInstallError(
                f"could not install {SYNAPSE_REQUIREMENT} into {venv} (it needs access to the Python package index):\n"
                f"$ {' '.join(step)}\nexited with {result.returncode}:\n{tail}"
            )
    version = subprocess.run(
        [str(_venv_python(venv)), "-c", "import synapse; print(synapse.__version__)"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    (venv / ".intercom-synapse").write_text(_stamp_text() + f"installed {version}\n")
    print(f"intercom: installed matrix-synapse {version} in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------------
# HTTP (stdlib only)


def _request(method: str, url: str, body: dict[str, Any] | None = None, token: str | None = None, timeout: float = 30.0,
             context: ssl.SSLContext | None = None) -> dict[str, Any]:
    """One JSON request; raises :class:`MatrixAPIError` for an HTTP error status."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        raw = err.read().decode(errors="replace")
        try:
            parsed: dict[str, Any] | str = json.loads(raw)
        except ValueError:
            parsed = raw
        raise MatrixAPIError(method, urllib.parse.urlsplit(url).path, err.code, parsed) from None
    except OSError as err:  # Refused, reset, timed out: the server is not (yet, or any more) there.
        raise HomeserverError(f"{method} {url}: {getattr(err, 'reason', err)}") from err


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host``:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no file)"


# --------------------------------------------------------------------------------------------------------------
# Processes (by PID, so a server started by another process can be stopped too)


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (a zombie no longer holds its port or memory)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # No /proc: trust kill(0).
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _is_our_synapse(pid: int, config: Path) -> bool:
    """Whether ``pid`` is the Synapse for ``config``: guards against a stale pid file naming a reused PID."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError:
        return pid_alive(pid)  # No /proc: trust the pid file.
    return str(config).encode() in cmdline


# --------------------------------------------------------------------------------------------------------------
# The homeserver


class Homeserver:
    """One Synapse on 127.0.0.1 with its state in ``data_dir``; use as a context manager or call start()/stop().

    Constructing it on a data directory that already holds a config from an earlier run reuses that run's port
    and secrets, so a server stopped by ``stop`` (or by the command line) comes back with its users able to log in
    at the same URL. ``port=None`` picks a free port on first start and keeps it for restarts.

    ``tls`` = (certificate, key, CA file) serves https (a door refuses plain http to anything but localhost).
    ``host`` is the address the listener binds: 127.0.0.1 unless a test puts the server on a test host's address.

    TURN: pass ``turn_uris`` and ``turn_shared_secret`` (the coturn ``static-auth-secret``) and Synapse hands out
    time-limited credentials at ``/_matrix/client/v3/voip/turnServer``; without them it answers ``{}``.

    MatrixRTC: ``rtc_foci`` (e.g. ``[{"type": "livekit", "livekit_service_url": focus.url}]``) are named both by the
    MSC4143 transports endpoint and by ``.well-known/matrix/client`` (``org.matrix.msc4143.rtc_foci``), and the
    client listener also answers ``/_matrix/federation/v1/openid/userinfo`` so the focus can check OpenID tokens.
    Delayed events (MSC4140) are always on, up to 24 h. See "MatrixRTC" in the module docstring for the paths.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int | None = None,
        turn_uris: Sequence[str] = (),
        turn_shared_secret: str | None = None,
        turn_user_lifetime: str = "1h",
        synapse_python: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        tls: tuple[str | os.PathLike[str], str | os.PathLike[str], str | os.PathLike[str]] | None = None,
        rtc_foci: Sequence[Mapping[str, Any]] = (),
    ):
        if turn_uris and not turn_shared_secret:
            raise ValueError("turn_uris need a turn_shared_secret: without one Synapse hands out no credentials")
        self.data_dir = Path(data_dir).resolve()
        self.server_name = SERVER_NAME
        #: The one address the client listener binds (a test host's address in network-namespace tests).
        self.host = host
        #: (certificate, private key, CA file): serve https with that certificate, trusting the CA for requests.
        self.tls = tuple(str(p) for p in tls) if tls else None
        self._ssl_context = ssl.create_default_context(cafile=self.tls[2]) if self.tls else None
        self.turn_uris = list(turn_uris)
        self.turn_shared_secret = turn_shared_secret
        self.turn_user_lifetime = turn_user_lifetime
        #: The MatrixRTC foci (transports) this server names; empty: no MatrixRTC discovery, no OpenID listener.
        self.rtc_foci: list[dict[str, Any]] = [dict(focus) for focus in rtc_foci]
        self._synapse_python = Path(synapse_python) if synapse_python else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        previous = self._previous_config()
        self.port: int = port or previous.get("listeners", [{}])[0].get("port") or _free_port()
        self.registration_shared_secret: str = previous.get("registration_shared_secret") or secrets.token_hex(16)
        self._macaroon_secret_key: str = previous.get("macaroon_secret_key") or secrets.token_hex(16)
        self._form_secret: str = previous.get("form_secret") or secrets.token_hex(16)

    # -- properties ------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The client-server API base URL, e.g. ``http://127.0.0.1:8448`` (no trailing slash)."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The running server's PID (from this object, else from the pid file), or None when it is not running."""
        pid = self._pid or self._read_pid_file()
        if pid is not None and pid_alive(pid) and _is_our_synapse(pid, self.config_path):
            return pid
        return None

    @property
    def config_path(self) -> Path:
        return self.data_dir / CONFIG_FILE

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE

    def is_running(self) -> bool:
        return self.pid is not None

    # -- config ------------------------------------------------------------------------------------------------

    def _previous_config(self) -> dict[str, Any]:
        try:
            return json.loads((self.data_dir / CONFIG_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def config(self) -> dict[str, Any]:
        """The Synapse configuration this server runs with (a dict; written as JSON, which YAML accepts)."""
        d = self.data_dir
        config: dict[str, Any] = {
            "server_name": self.server_name,
            "public_baseurl": self.url + "/",
            "listeners": [
                {
                    "port": self.port,
                    "bind_addresses": [self.host],
                    "type": "http",
                    "tls": bool(self.tls),
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "database": {"name": "sqlite3", "args": {"database": str(d / "homeserver.db")}},
            "log_config": str(d / LOG_CONFIG_FILE),
            "media_store_path": str(d / "media_store"),
            "max_upload_size": "50M",
            "signing_key_path": str(d / f"{self.server_name}.signing.key"),
            "report_stats": False,
            "enable_registration": False,
            "registration_shared_secret": self.registration_shared_secret,
            "macaroon_secret_key": self._macaroon_secret_key,
            "form_secret": self._form_secret,
            # No federation, no key servers: nothing leaves 127.0.0.1.
            "federation_domain_whitelist": [],
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "url_preview_enabled": False,
            "enable_metrics": False,
            # MSC4140 delayed events (a MatrixRTC membership's delayed "leave"): Synapse enables them when a maximum
            # delay is set; harmless for everything else.
            "max_event_delay_duration": MAX_EVENT_DELAY,
            **_RATE_LIMITS,
        }
        if self.tls:
            config.update(tls_certificate_path=self.tls[0], tls_private_key_path=self.tls[1])
        if self.turn_uris:
            config.update(
                turn_uris=self.turn_uris,
                turn_shared_secret=self.turn_shared_secret,
                turn_user_lifetime=self.turn_user_lifetime,
            )
        if self.rtc_foci:
            foci = [dict(focus) for focus in self.rtc_foci]
            # The focus checks OpenID tokens at /_matrix/federation/v1/openid/userinfo: the "openid" resource serves
            # only that federation path, so the server still federates with nobody.
            config["listeners"][0]["resources"] = [{"names": ["client", "openid"], "compress": False}]
            # GET .../org.matrix.msc4143/rtc/transports exists only with the experimental flag.
            config.setdefault("experimental_features", {})["msc4143_enabled"] = True
            config.update(
                matrix_rtc={"transports": foci},
                serve_client_wellknown=True,
                extra_well_known_client_content={RTC_FOCI_WELL_KNOWN_KEY: foci},
            )
        return config

    def _log_config(self) -> dict[str, Any]:
        """Python logging config for Synapse: WARNING and above, to a file in the data dir."""
        return {
            "version": 1,
            "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
            "handlers": {
                "file": {
                    "class": "logging.FileHandler",
                    "formatter": "plain",
                    "filename": str(self.log_path),
                    "encoding": "utf8",
                }
            },
            "root": {"level": "WARNING", "handlers": ["file"]},
            "disable_existing_loggers": False,
        }

    def _write_files(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "media_store").mkdir(exist_ok=True)
        self.config_path.write_text(json.dumps(self.config(), indent=2) + "\n")
        (self.data_dir / LOG_CONFIG_FILE).write_text(json.dumps(self._log_config(), indent=2) + "\n")
        key = self.data_dir / f"{self.server_name}.signing.key"
        if not key.exists():
            key.write_text(_new_signing_key())
            key.chmod(0o600)

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT, *, detach: bool = False) -> Homeserver:
        """Write the config, start Synapse, and return once ``/_matrix/client/versions`` answers.

        ``detach=True`` leaves the server running after this Python process exits (the command line's ``start``);
        otherwise it is stopped at interpreter exit if nobody stopped it before.
        Raises :class:`HomeserverError` with the end of Synapse's output if it exits or does not answer in time.
        """
        if self.is_running():
            raise HomeserverError(f"a homeserver is already running for {self.data_dir} (pid {self.pid}, {self.url})")
        python = self._synapse_python or ensure_synapse()
        self._write_files()
        output = self.data_dir / OUTPUT_FILE
        with open(output, "ab") as out:
            self._proc = subprocess.Popen(
                [str(python), "-m", "synapse.app.homeserver", "--config-path", str(self.config_path)],
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Own process group: a terminal's Ctrl-C is for the owner, not Synapse.
            )
        self._pid = self._proc.pid
        (self.data_dir / PID_FILE).write_text(f"{self._pid}\n")
        (self.data_dir / URL_FILE).write_text(f"{self.url}\n")
        if not detach:
            atexit.register(self._stop_at_exit)
        try:
            self._wait_until_answering(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_answering(self, timeout: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise HomeserverError(
                    f"Synapse exited with {self._proc.returncode} while starting ({self.data_dir}):\n"
                    f"{_tail(self.data_dir / OUTPUT_FILE)}\n--- {LOG_FILE} ---\n{_tail(self.log_path)}"
                )
            try:
                _request("GET", self.url + "/_matrix/client/versions", timeout=2.0, context=self._ssl_context)
                return
            except HomeserverError:
                pass  # Not listening yet.
            if time.monotonic() > deadline:
                raise HomeserverError(
                    f"Synapse did not answer on {self.url} within {timeout:.0f} s ({self.data_dir}):\n"
                    f"{_tail(self.data_dir / OUTPUT_FILE)}\n--- {LOG_FILE} ---\n{_tail(self.log_path)}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` s) and wait until it is gone. Idempotent."""
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            if not self._wait_gone(pid, timeout):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                self._wait_gone(pid, timeout)
        if self._proc is not None:
            self._proc.wait()  # Reap our child so no zombie is left.
            self._proc = None
        self._pid = None
        (self.data_dir / PID_FILE).unlink(missing_ok=True)
        atexit.unregister(self._stop_at_exit)

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.pid == pid:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=0.05)
                if self._proc.returncode is not None:
                    return True
            elif not pid_alive(pid):
                return True
            else:
                time.sleep(0.05)
        return False

    def _stop_at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()

    def restart(self, timeout: float = START_TIMEOUT) -> Homeserver:
        """Stop and start again on the same data directory and the same port (clients keep their URL)."""
        detached = self._proc is None and self.is_running()
        self.stop()
        return self.start(timeout, detach=detached)

    def _read_pid_file(self) -> int | None:
        try:
            return int((self.data_dir / PID_FILE).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def __enter__(self) -> Homeserver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Homeserver({str(self.data_dir)!r}, url={self.url!r}, pid={self.pid})"

    # -- client-server API helpers ---------------------------------------------------------------------------

    def api(self, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None) -> dict[str, Any]:
        """Call the homeserver: ``hs.api("GET", "/_matrix/client/v3/account/whoami", token=t)``."""
        return _request(method, self.url + path, body, token, context=self._ssl_context)

    def register_user(self, localpart: str, password: str, admin: bool = False) -> RegisteredUser:
        """Create a user through the shared-secret admin API (public registration stays off) and log it in.

        The MAC is HMAC-SHA1, keyed with ``registration_shared_secret``, over
        ``nonce NUL user NUL password NUL admin|notadmin``; the nonce is single-use and comes from a GET first.
        """
        path = "/_synapse/admin/v1/register"
        nonce = self.api("GET", path)["nonce"]
        mac = hmac.new(self.registration_shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(b"\0".join([nonce.encode(), localpart.encode(), password.encode(), b"admin" if admin else b"notadmin"]))
        body = {"nonce": nonce, "username": localpart, "password": password, "admin": admin, "mac": mac.hexdigest()}
        result = self.api("POST", path, body)
        return RegisteredUser(result["user_id"], result["access_token"], result["device_id"])

    def create_dm_room(self, owner_token: str, door_user_id: str, encrypted: bool = False, *,
                       preset: str = "private_chat") -> str:
        """Create a private direct room owned by ``owner_token``'s user with the door invited; return its ID.

        ``encrypted`` turns on Megolm from the first event (``initial_state``), as Element does for a new DM.
        ``preset="trusted_private_chat"`` makes it as Element's apps make a DM (both members get the creator's
        power, so either may send call memberships). The door still has to :meth:`join_room`.
        """
        body: dict[str, Any] = {"preset": preset, "is_direct": True, "invite": [door_user_id]}
        if encrypted:
            body["initial_state"] = [
                {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
            ]
        return self.api("POST", "/_matrix/client/v3/createRoom", body, owner_token)["room_id"]

    def join_room(self, token: str, room_id: str) -> None:
        """Join (or accept the invite to) ``room_id`` as ``token``'s user."""
        self.api("POST", f"/_matrix/client/v3/join/{urllib.parse.quote(room_id, safe='')}", {}, token)


def _new_signing_key() -> str:
    """A Synapse signing key file: ``ed25519 <key id> <unpadded base64 of a 32-byte seed>``.

    Any 32 random bytes are a valid ed25519 seed, so writing the file ourselves is equivalent to Synapse's
    ``--generate-keys`` and saves starting a second Synapse process (about 1.7 s) for every fresh data directory.
    """
    seed = base64.b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    return f"ed25519 a_{secrets.token_hex(2)} {seed}\n"


# --------------------------------------------------------------------------------------------------------------
# Command line


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m intercom_dev.testbed.synapse",
        description="A local Synapse homeserver on 127.0.0.1 for tests and the demo (installed on first use).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir", type=Path, default=None,
        help="where the server keeps its config, database and logs (default: <cache>/homeserver)",
    )
    start = sub.add_parser("start", parents=[common], help="start a server in the background; prints its URL and PID as JSON")
    start.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one, kept across restarts)")
    start.add_argument("--turn-uri", action="append", default=[], help="a TURN URI to hand out (repeatable)")
    start.add_argument("--turn-secret", default=None, help="TURN shared secret (coturn's static-auth-secret)")
    register = sub.add_parser("register", parents=[common], help="create a user; prints user_id, access_token, device_id as JSON")
    register.add_argument("localpart")
    register.add_argument("password")
    register.add_argument("--admin", action="store_true")
    sub.add_parser("status", parents=[common], help="print whether the server runs (exit status 1 if not)")
    sub.add_parser("stop", parents=[common], help="stop the server")
    args = parser.parse_args(argv)
    if args.data_dir is None:
        args.data_dir = cache_dir() / "homeserver"
    if args.command == "start" and args.turn_uri and not args.turn_secret:
        parser.error("--turn-uri needs --turn-secret")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        return _run(args)
    except HomeserverError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.command == "start":
        hs = Homeserver(args.data_dir, port=args.port, turn_uris=args.turn_uri, turn_shared_secret=args.turn_secret)
        hs.start(detach=True)
        _print_json(url=hs.url, pid=hs.pid, server_name=hs.server_name, data_dir=str(hs.data_dir))
        return 0
    if not (args.data_dir / CONFIG_FILE).exists():
        raise HomeserverError(f"no homeserver in {args.data_dir}: create one with the start command")
    hs = Homeserver(args.data_dir)
    if args.command == "register":
        if not hs.is_running():
            raise HomeserverError(f"the homeserver in {hs.data_dir} is not running: start it first")
        _print_json(**hs.register_user(args.localpart, args.password, args.admin)._asdict())
        return 0
    if args.command == "status":
        running = hs.is_running()
        _print_json(running=running, url=hs.url if running else None, pid=hs.pid, data_dir=str(hs.data_dir))
        return 0 if running else 1
    if args.command == "stop":
        pid = hs.pid
        hs.stop()
        _print_json(stopped=pid)
        return 0
    raise AssertionError(args.command)


def _print_json(**fields: Any) -> None:
    print(json.dumps(fields))


if __name__ == "__main__":
    sys.exit(main())
