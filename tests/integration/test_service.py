"""`intercom run` as systemd runs it: a real notify socket, readiness, watchdog pings, SIGTERM; the control CLI."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from intercom_dev.testbed.door import SimulatedDoor, write_config

pytestmark = pytest.mark.integration


def test_service_notifies_ready_pings_the_watchdog_and_stops_cleanly(homeserver, matrix_users, tmp_path):
    door_user, owner = matrix_users("door"), matrix_users("owner")
    room = homeserver.create_dm_room(owner.access_token, door_user.user_id)
    homeserver.join_room(door_user.access_token, room)
    config = write_config(tmp_path, homeserver=homeserver.url, user_id=door_user.user_id,
                          password=door_user.password, room_id=room, owner=owner.user_id)
    notify_path = tmp_path / "notify"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(1.0)
    door = SimulatedDoor(config, tmp_path)
    messages: list[str] = []

    def collect(until: float) -> None:
        while time.monotonic() < until:
            try:
                messages.append(notify.recv(4096).decode())
            except TimeoutError:
                pass

    try:
        door.start(env={"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "1000000"})
        collect(time.monotonic() + 3.0)
        ready = [m for m in messages if m.startswith("READY=1")]
        assert ready and "homeserver" in ready[0]
        assert sum(m == "WATCHDOG=1" for m in messages) >= 3  # every 0.5 s, fed by the main loop

        # The installer's commands over the control socket, as a user types them.
        cli = [sys.executable, "-m", "intercom.cli"]
        status = subprocess.run([*cli, "status", "--socket", str(door.socket)], capture_output=True, text=True,
                                timeout=30)
        assert status.returncode == 0 and "homeserver: online" in status.stdout and "LEDs:       idle" in status.stdout
        press = subprocess.run([*cli, "press", "--socket", str(door.socket)], capture_output=True, text=True,
                               timeout=30)
        assert press.returncode == 0 and "pressed" in press.stdout
        door.wait_for(lambda s: s["call_state"] == "ringing", 20, "the door to ring the owner")
    finally:
        code = door.stop()
        collect(time.monotonic() + 0.5)
        notify.close()
    assert code == 0, door.log_tail()
    assert "STOPPING=1" in messages
    log = door.log_path.read_text()
    assert "call outgoing to" in log and "stopped" in log  # the ringing call was hung up before exiting
