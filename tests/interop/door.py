"""The door side of the interop tests: a real door (``intercom.app.Service`` on simulated hardware) in this
process, with its own account, the owner's account and their two-person room on the test Synapse.

The door runs in the test's event loop (as in ``tests/integration/test_doorbell.py``) so that its core (call state,
LEDs, the last call's outcome) can be read directly, and a hangup can be asked of it as the service would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import numpy as np

from intercom.app import Service
from intercom.core import HangupRequested
from intercom.service.config import load_config
from intercom.testbed.door import write_config


class Rig:
    """A door account, an owner account, their room (``encrypted`` or not), and the door's config file."""

    def __init__(self, homeserver, matrix_users, tmp_path: Path, *, encrypted: bool = False, extra: str = "") -> None:
        self.server = homeserver
        self.door = matrix_users("door")
        self.owner = matrix_users("owner")
        self.room_id = homeserver.create_dm_room(self.owner.access_token, self.door.user_id, encrypted=encrypted)
        homeserver.join_room(self.door.access_token, self.room_id)
        self.tmp = tmp_path
        self.config_path = write_config(tmp_path / "door", homeserver=homeserver.url, user_id=self.door.user_id,
                                        password=self.door.password, room_id=self.room_id, owner=self.owner.user_id,
                                        extra=extra)

    def room_with(self, user) -> str:
        """A two-person room of ``user`` (e.g. a stranger) with the door, which the door has joined."""
        room_id = self.server.create_dm_room(user.access_token, self.door.user_id)
        self.server.join_room(self.door.access_token, room_id)
        return room_id


@contextlib.asynccontextmanager
async def running_door(rig: Rig):
    # The simulated door points libasound at its file devices through ALSA_CONFIG_PATH, for the whole process:
    # put it back afterwards, or tests that run later in this process (tests/media) lose their own ALSA devices.
    alsa_config = os.environ.get("ALSA_CONFIG_PATH")
    service = Service(load_config(rig.config_path), simulate=True, control_socket=rig.tmp / "control.sock")
    task = asyncio.ensure_future(service.run())
    try:
        await asyncio.wait_for(service.ready.wait(), 60)
        await wait_until(lambda: service.core.led.value == "idle", "the door to show idle")
        yield service
    finally:
        service.stop()
        try:
            await asyncio.wait_for(task, 30)
        finally:
            if alsa_config is None:
                os.environ.pop("ALSA_CONFIG_PATH", None)
            else:
                os.environ["ALSA_CONFIG_PATH"] = alsa_config


async def wait_until(predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def hang_up_at_the_door(service: Service) -> None:
    """What the service does when it stops, or a panel hangup would do: the core's own hangup."""
    service.orchestrator.feed(HangupRequested())


def speaker_path(service: Service) -> Path:
    return Path(service.config.matrix.state_dir) / "simulated" / "speaker.raw"


def speaker_level(service: Service, seconds: float = 2.0) -> tuple[float, float]:
    """(peak, rms) of the last ``seconds`` the door's speaker played, as fractions of full scale (s16le mono 48 kHz)."""
    path = speaker_path(service)
    if not path.exists():
        return 0.0, 0.0
    data = path.read_bytes()
    take = int(seconds * 48000) * 2
    samples = np.frombuffer(data[-take:][: len(data[-take:]) // 2 * 2], dtype="<i2").astype(np.float64) / 32768
    if samples.size == 0:
        return 0.0, 0.0
    return float(np.abs(samples).max()), float(np.sqrt(np.mean(samples**2)))


async def door_hears(service: Service, *, timeout: float = 15.0, threshold: float = 0.05) -> tuple[float, float]:
    """Wait until the door's speaker played something louder than ``threshold`` in the last second: (peak, rms)."""
    deadline = time.monotonic() + timeout
    level = (0.0, 0.0)
    while time.monotonic() < deadline:
        level = speaker_level(service, seconds=1.0)
        if level[0] > threshold:
            return level
        await asyncio.sleep(0.1)
    raise AssertionError(f"the door's speaker played nothing louder than {threshold} (last second: peak "
                         f"{level[0]:.4f}, rms {level[1]:.4f}); {speaker_path(service)}")


def door_remote_candidates(service: Service, call_id: str) -> set[str]:
    """``ip:port`` of the remote candidates the door's ICE agent holds for a call (read through aiortc's API)."""
    call = service.media._calls.get(call_id)  # read-only look into the running engine
    if call is None:
        return set()
    found: set[str] = set()
    for transceiver in call.pc.getTransceivers():
        ice = transceiver.receiver.transport.transport
        found.update(f"{c.ip}:{c.port}" for c in ice.getRemoteCandidates())
    return found
