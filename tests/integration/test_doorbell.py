"""The doorbell end to end: the real service on simulated hardware, a real Synapse, a scripted owner's phone.

The door runs in this process (``intercom.app.Service`` with ``simulate=True``) so that its mock GPIO pins can be
read; the phone is matrix-nio plus a plain aiortc peer (``intercom.testbed.phone``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from intercom.app import Service
from intercom.service.config import load_config
from intercom.testbed.door import write_config
from intercom.testbed.phone import Phone

pytestmark = pytest.mark.integration


class Setup:
    def __init__(self, homeserver, matrix_users, tmp_path: Path, extra: str = "") -> None:
        self.server = homeserver
        self.door = matrix_users("door")
        self.owner = matrix_users("owner")
        self.room_id = homeserver.create_dm_room(self.owner.access_token, self.door.user_id)
        homeserver.join_room(self.door.access_token, self.room_id)
        self.tmp = tmp_path
        self.config_path = write_config(tmp_path / "door", homeserver=homeserver.url, user_id=self.door.user_id,
                                        password=self.door.password, room_id=self.room_id, owner=self.owner.user_id,
                                        extra=extra)

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


async def wait_until(predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


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


@pytest.fixture
def setup(homeserver, matrix_users, tmp_path):
    return Setup(homeserver, matrix_users, tmp_path)


def test_press_rings_the_owner_media_flows_both_ways_and_hangup_ends_it(setup):
    async def main():
        phone = setup.phone()
        await phone.start()
        async with running_door(setup) as door:
            status_led = pin(door, 23)
            await door.press()
            assert door.core.led.value == "calling"
            invite = await phone.wait_for("m.call.invite", sender=setup.door.user_id)
            assert invite["invitee"] == setup.owner.user_id and invite["version"] == "1"
            await phone.answer(invite)
            await phone.wait_for("m.call.select_answer", lambda c: c["selected_party_id"] == phone.party_id)
            await media_flows(phone, door)
            assert door.core.state.value == "connected"
            assert pin(door, 22).state == 1 and status_led.state == 1  # in call: call LED steady on
            await phone.hangup()
            await wait_until(lambda: door.core.state.value == "idle", "the door to end the call")
            summary = door.orchestrator.last_call
            assert summary.outcome.value == "completed" and summary.duration > 1.5
        await phone.close()

    asyncio.run(main())


def test_owner_calls_and_the_door_answers_with_media(setup):
    async def main():
        phone = setup.phone()
        await phone.start()
        async with running_door(setup) as door:
            call_id = await phone.call(setup.door.user_id)
            answer = await phone.wait_for("m.call.answer", lambda c: c["call_id"] == call_id)
            await phone.accept_answer(answer)
            await media_flows(phone, door)
            assert door.core.call_id == call_id and door.core.led.value == "in_call"
            await phone.hangup()
            await wait_until(lambda: door.core.state.value == "idle", "the door to end the call")
        await phone.close()

    asyncio.run(main())


def test_a_strangers_call_is_refused_and_never_answered(setup, matrix_users):
    stranger = matrix_users("stranger")
    their_room = setup.server.create_dm_room(stranger.access_token, setup.door.user_id)
    setup.server.join_room(setup.door.access_token, their_room)

    async def main():
        phone = setup.phone(stranger, their_room, name="stranger")
        await phone.start()
        async with running_door(setup) as door:
            call_id = await phone.call(setup.door.user_id)
            await phone.wait_for("m.call.reject", lambda c: c["call_id"] == call_id, sender=setup.door.user_id)
            await asyncio.sleep(1.0)
            assert not [e for e in phone.events if e[0] == "m.call.answer"]
            assert door.core.state.value == "idle" and door.core.led.value == "idle"
        await phone.close()

    asyncio.run(main())


def test_no_answer_hangs_up_at_the_ring_timeout_and_shows_missed(homeserver, matrix_users, tmp_path):
    setup = Setup(homeserver, matrix_users, tmp_path, extra="[calls]\nring_timeout = 10\n")

    async def main():
        phone = setup.phone()
        await phone.start()
        async with running_door(setup) as door:
            await door.press()
            invite = await phone.wait_for("m.call.invite", sender=setup.door.user_id)
            started = time.monotonic()
            hangup = await phone.wait_for("m.call.hangup", lambda c: c["call_id"] == invite["call_id"], timeout=30)
            assert hangup["reason"] == "invite_timeout"
            assert 8 <= time.monotonic() - started <= 15
            await wait_until(lambda: door.core.led.value == "missed", "the missed pattern")
            call_led = pin(door, 22)
            call_led.clear_states()
            await asyncio.sleep(4.2)  # MISSED: a 0.1 s blip every 2 s on the call LED
            lit, blips = lit_time(call_led, 4.2)
            assert blips >= 2 and lit < 0.6, (lit, blips)
            assert door.orchestrator.last_call.outcome.value == "missed"
        await phone.close()

    asyncio.run(main())


@pytest.mark.parametrize("owner_first", [True, False], ids=["owner-calls-first", "door-calls-first"])
def test_glare_ends_in_one_call_with_media(setup, owner_first):
    async def main():
        phone = setup.phone()
        await phone.start()
        async with running_door(setup) as door:
            if owner_first:
                call_id = await phone.call(setup.door.user_id)
                await door.press()
            else:
                await door.press()
                await phone.wait_for("m.call.invite", sender=setup.door.user_id)
                call_id = await phone.call(setup.door.user_id)
            # The door yields (its call IDs sort last): it answers the owner's call.
            answer = await phone.wait_for("m.call.answer", lambda c: c["call_id"] == call_id)
            await phone.accept_answer(answer)
            await media_flows(phone, door)
            assert door.core.call_id == call_id and door.core.state.value == "connected"
            if not owner_first:
                door_invite = await phone.wait_for("m.call.invite", sender=setup.door.user_id)
                hangup = await phone.wait_for("m.call.hangup", lambda c: c["call_id"] == door_invite["call_id"])
                assert hangup["reason"] == "replaced"
            await phone.hangup()
        await phone.close()

    asyncio.run(main())


def test_open_command_pulses_the_relay_only_for_the_owner_in_the_window(setup, matrix_users):
    stranger = matrix_users("stranger")
    their_room = setup.server.create_dm_room(stranger.access_token, setup.door.user_id)
    setup.server.join_room(setup.door.access_token, their_room)

    async def main():
        phone = setup.phone()
        await phone.start()
        async with running_door(setup) as door:
            relay = pin(door, 27)
            # outside any call: refused, with a notice
            await phone.client.room_send(setup.room_id, "m.room.message", {"msgtype": "m.text", "body": "!open"})
            await wait_until(lambda: any("Not opened" in body for _, body in phone.messages), "the refusal notice")
            assert not any(s.state for s in relay.states)
            # during a call: a stranger (in their own room with the door) gets nothing; the owner opens it
            call_id = await phone.call(setup.door.user_id)
            await phone.accept_answer(await phone.wait_for("m.call.answer", lambda c: c["call_id"] == call_id))
            send_text(setup.server, stranger, their_room, "!open")
            await asyncio.sleep(2.0)
            assert not any(s.state for s in relay.states)
            await phone.client.room_send(setup.room_id, "m.room.message", {"msgtype": "m.text", "body": "!open"})
            await wait_until(lambda: relay.state == 1, "the relay to pull in")
            await wait_until(lambda: any("Door opened" in body for _, body in phone.messages), "the acknowledgement")
            await wait_until(lambda: relay.state == 0, "the relay to drop out", timeout=10)
            await phone.hangup()
        await phone.close()

    asyncio.run(main())
