"""A whole door on simulated hardware, started the way a user would: ``intercom run --simulate`` as a process.

Used by the demo and the end-to-end tests. It writes a real config file (with a private password file) for a door
account on a local homeserver, starts the service, talks to it over its control socket, and stops it with SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from intercom.service.control import ControlError, send_command


def write_config(directory: Path, *, homeserver: str, user_id: str, password: str, room_id: str = "",
                 owner: str = "", residents: Sequence[Mapping[str, object]] = (), extra: str = "",
                 loopback: bool = True) -> Path:
    """A config for a simulated door; ``extra`` is appended TOML (e.g. ``[calls]`` overrides).

    The door serves ``owner`` in ``room_id``, or a household: ``residents``, each a mapping of ``[[residents]]``
    settings (``user_id``, and ``room_id``, ``quiet_hours``... as wanted).

    ``loopback`` keeps the door's ICE host candidates on 127.0.0.1 (``[network] ice_addresses``), for a homeserver
    and a phone on this machine; ``--simulate`` itself never restricts the network. Pass False (and write your own
    ``[network]`` in ``extra`` if needed) for a door on a test host in a network namespace.
    """
    who = f'room_id = "{room_id}"\nowner = "{owner}"\n' if not residents else ""
    household = "".join("\n[[residents]]\n" + "".join(f"{key} = {json.dumps(value)}\n"
                                                      for key, value in resident.items())
                        for resident in residents)
    network = '\n[network]\nice_addresses = ["127.0.0.1"]\n' if loopback else ""
    directory.mkdir(parents=True, exist_ok=True)
    secret = directory / "password"
    secret.touch(mode=0o600)
    secret.chmod(0o600)
    secret.write_text(password + "\n")
    config = directory / "intercom.toml"
    config.write_text(f"""\
[matrix]
homeserver = "{homeserver}"
user_id = "{user_id}"
password_file = "{secret}"
{who}state_dir = "{directory / 'state'}"
device_name = "simulated door"

[panel]
pin_factory = "mock"

[camera]
source = "synthetic"
width = 640
height = 480
{network}{household}{extra}
""")
    return config


class SimulatedDoor:
    """``intercom run --simulate`` in a subprocess, with its log in ``directory/door.log``."""

    def __init__(self, config: Path, directory: Path) -> None:
        self.config, self.directory = config, directory
        self.socket = directory / "control.sock"
        self.log_path = directory / "door.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0, env: dict[str, str] | None = None, wrapper: Sequence[str] = ()) -> None:
        """Start the door and wait until it is online and idle. ``wrapper`` goes before the command (e.g. ``nsenter
        --net=/run/netns/NAME`` to run the door on a test host)."""
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*wrapper, sys.executable, "-m", "intercom.cli", "run", "--simulate", "--config", str(self.config),
             "--socket", str(self.socket)], stdout=self._log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
        self.wait_for(lambda s: s["homeserver"] == "online" and s["led"] == "idle", timeout,
                      "the door to reach the homeserver and show idle")

    def command(self, command: str) -> dict[str, Any]:
        return send_command(command, self.socket)

    def status(self) -> dict[str, Any]:
        return self.command("status")

    def press(self) -> dict[str, Any]:
        return self.command("press")

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "a state") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | str = "no answer"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the door exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                last = self.status()
                if predicate(last):
                    return last
            except ControlError as exc:
                last = str(exc)
            time.sleep(0.05)
        raise TimeoutError(f"timed out waiting for {what}; last status: {last}\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    @property
    def speaker_file(self) -> Path:
        return self.directory / "state" / "simulated" / "speaker.raw"

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()
        code, self.process = self.process.returncode, None
        return code
