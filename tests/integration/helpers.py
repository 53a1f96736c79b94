"""Shared by the end-to-end tests: a door account, owner and room on the test Synapse; the door run in-process."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from intercom.app import Service
from intercom.service.config import load_config
from intercom_dev.testbed.door import write_config
from intercom_dev.testbed.phone import Phone

from ..support import wait_until  # noqa: F401 (the tests take it from here)


class Setup:
    def __init__(self, homeserver, matrix_users, tmp_path: Path, *, extra: str = "", encrypted: bool = False,
                 preset: str = "private_chat") -> None:
        self.server = homeserver
        self.door = matrix_users("door")
        self.owner = matrix_users("owner")
        self.room_id = homeserver.create_dm_room(self.owner.access_token, self.door.user_id, encrypted=encrypted,
                                                 preset=preset)
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

    def phone(self, user=None, room_id=None, name="phone") -> Phone:
        user = user or self.owner
        return Phone(self.server.url, user.user_id, user.password, room_id or self.room_id,
                     store_dir=self.tmp / name)


@contextlib.asynccontextmanager
async def running_door(setup: Setup):
    service = Service(load_config(setup.config_path), simulate=True, control_socket=setup.tmp / "control.sock")
    task = asyncio.ensure_future(service.run())
    try:
        await asyncio.wait_for(service.ready.wait(), 60)
        await wait_until(lambda: service.core.led.value == "idle", "the door to show idle")
        yield service
    finally:
        service.stop()
        await asyncio.wait_for(task, 30)


def send_text(server, user, room_id: str, body: str) -> None:
    txn = f"t{time.monotonic_ns()}"
    server.api("PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn}",
               {"msgtype": "m.text", "body": body}, token=user.access_token)


def lit_time(mock_pin, window: float) -> tuple[float, int]:
    """Seconds the pin was high in the ``window`` seconds since its states were cleared, and how often it lit."""
    changes = [(s.timestamp, bool(s.state)) for s in mock_pin.states]  # timestamps: seconds since clear_states()
    ends = [t for t, _ in changes[1:]] + [window]
    lit = sum(end - start for (start, on), end in zip(changes, ends) if on)
    rises = sum(1 for (_, before), (_, after) in zip(changes, changes[1:]) if after and not before)
    return lit, rises


def pin(service: Service, number: int):
    return service.pin_factory.pin(number)


async def media_flows(phone: Phone, service: Service, seconds: float = 2.0) -> None:
    await wait_until(lambda: phone.received.video_frames > 10 and phone.received.audio_frames > 10,
                     "video and audio at the phone")
    size_before = service_speaker_bytes(service)
    await asyncio.sleep(seconds)
    assert phone.received.video_size[0] > 0 and phone.received.audio_rms > 0.01
    assert service_speaker_bytes(service) > size_before, "the door's speaker got no audio from the phone"


def service_speaker_bytes(service: Service) -> int:
    path = Path(service.config.matrix.state_dir) / "simulated" / "speaker.raw"
    return path.stat().st_size if path.exists() else 0
