"""Faults a door meets in months on a wall, against the real Synapse: the homeserver restarting in a call, the
homeserver gone for two minutes, the door's session deleted on the server, a damaged E2EE store. The door gets
through each by itself; nobody restarts it.

These tests stop and start the session's homeserver (same port, same data), and leave it running.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from intercom.core import HangupRequested

from .helpers import Setup, lit_time, media_flows, pin, running_door, service_speaker_bytes, wait_until

pytestmark = pytest.mark.integration

#: The outage the issue names: the homeserver gone for two minutes while the door is idle.
OUTAGE_SECONDS = 120.0


@pytest.fixture
def setup(homeserver, matrix_users, tmp_path):
    return Setup(homeserver, matrix_users, tmp_path, encrypted=True)


def report(what: str, **values: float) -> None:
    """Measured durations, printed for ``pytest -s`` and the engineers' notes (not asserted)."""
    print(f"\n[measured] {what}: " + ", ".join(f"{k}={v:.1f} s" for k, v in values.items()))


async def a_press_rings(setup, door, phone) -> None:
    """A press rings the owner's phone (which declines at once)."""
    seen = len(phone.events)
    await door.press()
    invite = await phone.wait_for("m.call.invite", sender=setup.door.user_id, start=seen, timeout=30)
    await phone.send("m.call.reject", {"call_id": invite["call_id"]})


async def restarted(server, *, down_for: float = 0.0, meanwhile=None) -> float:
    """Stop the homeserver, run ``meanwhile`` and wait ``down_for`` seconds, start it again; returns when it
    answered again (time.monotonic())."""
    await asyncio.to_thread(server.stop)
    try:
        if meanwhile is not None:
            await meanwhile()
        await asyncio.sleep(down_for)
    finally:
        await asyncio.to_thread(server.start)
    return time.monotonic()


def test_the_homeserver_restarting_mid_call_leaves_the_media_and_the_hangup_still_reaches_the_owner(setup):
    async def main():
        phone = setup.phone()
        await phone.start()
        async with running_door(setup) as door:
            await door.press()
            invite = await phone.wait_for("m.call.invite", sender=setup.door.user_id)
            await phone.answer(invite)
            await wait_until(lambda: door.core.state.value == "connected", "the call to connect")
            await media_flows(phone, door, seconds=1.0)

            async def while_down():
                frames, heard = phone.received.video_frames, service_speaker_bytes(door)
                await asyncio.sleep(3.0)
                # Media is peer to peer: it goes on without the homeserver, both ways.
                assert phone.received.video_frames > frames + 30
                assert service_speaker_bytes(door) > heard
                assert door.core.state.value == "connected"
                # The door ends the call (as its call limit or a stop would) while the homeserver is gone.
                door.orchestrator.feed(HangupRequested())

            back = await restarted(setup.server, meanwhile=while_down)
            hangup = await phone.wait_for("m.call.hangup", lambda c: c["call_id"] == invite["call_id"],
                                          sender=setup.door.user_id, timeout=60)
            report("hangup after the homeserver's return", seconds=time.monotonic() - back)
            assert hangup["call_id"] == invite["call_id"]
            await phone.close_media()
        await phone.close()

    asyncio.run(main())


def test_two_minutes_without_the_homeserver_show_offline_refuse_presses_visibly_and_end_by_themselves(setup):
    async def main():
        phone = setup.phone()
        await phone.start()
        async with running_door(setup) as door:
            call_led = pin(door, 22)
            offline_presses: list[int] = []

            async def while_down():
                await wait_until(lambda: door.core.led.value == "offline", "the offline pattern", timeout=60)
                assert not door.core.online
                # A visitor presses meanwhile: a quick flicker ("not now"), and no call.
                call_led.clear_states()
                await door.press()
                await asyncio.sleep(1.2)
                _, flickers = lit_time(call_led, 1.2)
                offline_presses.append(flickers)
                assert door.core.state.value == "idle"

            back = await restarted(setup.server, down_for=OUTAGE_SECONDS, meanwhile=while_down)
            await wait_until(lambda: door.core.online and door.core.led.value == "idle", "the door back online",
                             timeout=60)
            report("back online after the homeserver's return", seconds=time.monotonic() - back)
            assert offline_presses and offline_presses[0] >= 3, offline_presses
            assert door.core.fault is None

            await a_press_rings(setup, door, phone)
        await phone.close()

    asyncio.run(main())


def saved(state) -> dict | None:
    """The door's saved session (None while there is none: between forgetting the old one and the new login)."""
    try:
        return json.loads((state / "session.json").read_text())
    except FileNotFoundError:
        return None


def test_the_doors_session_deleted_on_the_server_is_replaced_by_itself_and_the_next_press_rings(setup):
    async def main():
        phone = setup.phone()
        await phone.start()
        async with running_door(setup) as door:
            state = setup.tmp / "door" / "state"
            before = saved(state)
            # What "sign out this session" in another client, or an admin, does: the token and device are gone.
            setup.server.api("POST", "/_matrix/client/v3/logout", {}, before["access_token"])
            await wait_until(lambda: saved(state) not in (None, before), "the door to log in again", timeout=60)
            after = saved(state)
            assert after["device_id"] == before["device_id"], "the door should keep its device (and its keys)"
            await wait_until(lambda: door.core.online and door.core.led.value == "idle", "the door online again")
            assert door.core.fault is None

            # In the encrypted room: the phone can read the door's invite, so its keys are there again.
            await a_press_rings(setup, door, phone)
        await phone.close()

    asyncio.run(main())


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_e2ee_store_is_set_aside_the_owner_told_and_the_door_rings(setup, damage):
    async def main():
        phone = setup.phone()
        await phone.start()
        async with running_door(setup) as door:
            old_device = door.matrix.device_id
        state = setup.tmp / "door" / "state"
        (store,) = (state / "crypto").glob("*.db")
        data = store.read_bytes()
        store.write_bytes(b"\x13\x37 not a database " * 64 if damage == "garbage" else data[: len(data) // 3])

        async with running_door(setup) as door:
            assert door.matrix.device_id != old_device
            aside = state / "crypto.damaged-0"
            assert (aside / store.name).exists() and (aside / "crypto.key").exists(), "the store and its key aside"
            await wait_until(lambda: [b for s, b in phone.messages
                                      if s == setup.door.user_id and "encryption store was damaged" in b],
                             "the owner to be told", timeout=30)
            await a_press_rings(setup, door, phone)
        await phone.close()

    asyncio.run(main())
