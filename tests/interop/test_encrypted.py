"""Calls in an encrypted room: js-sdk's Rust crypto (WASM) in the page, matrix-nio (vodozemac) at the door.

Every ``m.call.*`` event then travels as ``m.room.encrypted``; both sides must share room keys with a device they
have never verified (the owner's new browser session; the door, which cannot cross-sign).
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import pytest

from .door import Rig, door_hears, running_door, wait_until
from .harness import open_browser

pytestmark = pytest.mark.integration


@pytest.fixture
def rig(homeserver, matrix_users, tmp_path):
    return Rig(homeserver, matrix_users, tmp_path, encrypted=True)


def assert_sent_encrypted(rig: Rig, js_events: list[dict], call_id: str) -> int:
    """The room on the server holds no cleartext call event; the door's events reached js-sdk encrypted.
    Returns how many encrypted events the room holds."""
    path = f"/_matrix/client/v3/rooms/{quote(rig.room_id, safe='')}/messages?dir=b&limit=200"
    chunk = rig.server.api("GET", path, token=rig.owner.access_token)["chunk"]
    types = [e["type"] for e in chunk]
    assert not [t for t in types if t.startswith("m.call.")], types
    from_door = [e for e in js_events if e["sender"] == rig.door.user_id and e["content"].get("call_id") == call_id]
    assert from_door and all(e["encrypted"] for e in from_door), from_door
    return types.count("m.room.encrypted")


def test_encrypted_room_owner_calls_the_door(interop, homeserver, rig, tmp_path, measured):
    async def main():
        async with open_browser(interop, tmp_path / "browser") as browser:
            owner = await browser.client("owner")
            await owner.start(homeserver.url, rig.owner, encryption=True)
            async with running_door(rig) as door:
                call_id = await owner.place(rig.room_id, video=True)
                connected = await owner.wait_state(call_id, "connected", timeout=30)
                stats = await owner.live_media(call_id)
                await door_hears(door)
                await wait_until(lambda: door.core.state.value == "connected", "the door to be connected")
                answer = await owner.wait_event("m.call.answer", call_id=call_id)
                assert answer["sender"] == rig.door.user_id
                measured["encrypted_events"] = assert_sent_encrypted(rig, await owner.events(), call_id)
                states = {s["state"]: s["t"] for s in reversed(connected["states"])}
                measured["invite_to_connected_ms"] = states["connected"] - states["invite_sent"]
                measured["frames"] = stats["video"]["framesDecoded"]

                await owner.hangup(call_id)
                await wait_until(lambda: door.core.state.value == "idle", "the door to end the call")
                assert door.orchestrator.last_call.outcome.value == "completed"

    asyncio.run(main())


def test_encrypted_room_door_calls_the_owner(interop, homeserver, rig, tmp_path, measured):
    async def main():
        async with open_browser(interop, tmp_path / "browser") as browser:
            owner = await browser.client("owner")
            await owner.start(homeserver.url, rig.owner, encryption=True)
            async with running_door(rig) as door:
                await door.press()
                call_id = (await owner.wait_incoming(timeout=30))["callId"]
                await owner.answer(call_id)
                connected = await owner.wait_state(call_id, "connected")
                stats = await owner.live_media(call_id)
                await door_hears(door)
                await wait_until(lambda: door.core.state.value == "connected", "the door to be connected")
                measured["encrypted_events"] = assert_sent_encrypted(rig, await owner.events(), call_id)
                states = {s["state"]: s["t"] for s in reversed(connected["states"])}
                measured["ring_to_connected_ms"] = states["connected"] - states["ringing"]
                measured["frames"] = stats["video"]["framesDecoded"]

                await owner.hangup(call_id)
                await wait_until(lambda: door.core.state.value == "idle", "the door to end the call")
                assert door.orchestrator.last_call.outcome.value == "completed"

    asyncio.run(main())


def test_encrypted_room_owner_logs_in_after_the_door_started_and_the_door_calls(interop, homeserver, rig,
                                                                               tmp_path, measured):
    """A new Element session of the owner, opened while the door runs: the door must notice the new device and
    share its room key with it, or the phone cannot decrypt the invite and never rings."""

    async def main():
        async with open_browser(interop, tmp_path / "browser") as browser:
            async with running_door(rig) as door:
                owner = await browser.client("owner")
                await owner.start(homeserver.url, rig.owner, encryption=True)
                await asyncio.sleep(1.0)  # a person would take longer than this to walk to the door
                await door.press()
                call_id = (await owner.wait_incoming(timeout=30))["callId"]
                await owner.answer(call_id)
                await owner.wait_state(call_id, "connected")
                await owner.live_media(call_id)
                await door_hears(door)
                measured["encrypted_events"] = assert_sent_encrypted(rig, await owner.events(), call_id)
                await owner.hangup(call_id)
                await wait_until(lambda: door.core.state.value == "idle", "the door to end the call")

    asyncio.run(main())
