"""A version-0 peer: raw ``m.call.*`` events with ``version: 0`` and no ``party_id`` (sent from the page with
js-sdk's plain ``sendEvent``), and a plain RTCPeerConnection in Chromium for the media. Nothing of js-sdk's call
logic takes part. The door must never send it select_answer, reject or negotiate (spec: those are version 1 only).
"""

from __future__ import annotations

import asyncio

import pytest

from .door import Rig, door_hears, hang_up_at_the_door, running_door, wait_until
from .harness import open_browser

pytestmark = pytest.mark.integration

V1_ONLY = ("m.call.select_answer", "m.call.reject", "m.call.negotiate")


@pytest.fixture
def rig(homeserver, matrix_users, tmp_path):
    return Rig(homeserver, matrix_users, tmp_path)


async def v1_only_events_from_door(peer, rig, call_id: str) -> list[dict]:
    return [e for e in await peer.events() if e["type"] in V1_ONLY and e["sender"] == rig.door.user_id
            and e["content"].get("call_id") == call_id]


def test_a_version0_peer_calls_the_door(interop, homeserver, rig, tmp_path, measured):
    async def main():
        async with open_browser(interop, tmp_path / "browser") as browser:
            peer = await browser.client("v0")
            await peer.start(homeserver.url, rig.owner)
            async with running_door(rig) as door:
                call_id = await peer.call("rawCall", rig.room_id, {"video": True})
                answer = await peer.wait_event("m.call.answer", call_id=call_id)
                assert answer["sender"] == rig.door.user_id
                stats = await peer.live_media(call_id, raw=True)
                assert stats["video"]["frameWidth"] > 0
                await door_hears(door)
                await wait_until(lambda: door.core.state.value == "connected", "the door to be connected")
                assert door.core.call_id == call_id
                state = await peer.call("rawState", call_id)
                measured["invite_to_connected_ms"] = state["connectedAt"] - state["invitedAt"]
                measured["frames"] = stats["video"]["framesDecoded"]

                await peer.call("rawHangup", call_id)
                await wait_until(lambda: door.core.state.value == "idle", "the door to end the call")
                assert door.orchestrator.last_call.outcome.value == "completed"
                assert await v1_only_events_from_door(peer, rig, call_id) == []

    asyncio.run(main())


def test_the_door_calls_a_version0_peer(interop, homeserver, rig, tmp_path, measured):
    async def main():
        async with open_browser(interop, tmp_path / "browser") as browser:
            peer = await browser.client("v0")
            await peer.start(homeserver.url, rig.owner)
            async with running_door(rig) as door:
                await door.press()
                invites = await peer.wait_for(lambda: peer.call("rawInvites"), "the door's invite")
                call_id = invites[0]["content"]["call_id"]
                await peer.call("rawAnswer", call_id, {"video": True})
                stats = await peer.live_media(call_id, raw=True)
                assert stats["video"]["frameWidth"] > 0
                await door_hears(door)
                await wait_until(lambda: door.core.state.value == "connected", "the door to be connected")
                state = await peer.call("rawState", call_id)
                measured["answer_to_connected_ms"] = state["connectedAt"] - state["answeredAt"]

                hang_up_at_the_door(door)
                hangup = await peer.wait_event("m.call.hangup", call_id=call_id)
                assert hangup["sender"] == rig.door.user_id
                await peer.wait_for(lambda: _ended(peer, call_id), "the raw call to end")
                await wait_until(lambda: door.core.state.value == "idle", "the door to be idle")
                assert door.orchestrator.last_call.outcome.value == "completed"
                assert await v1_only_events_from_door(peer, rig, call_id) == []

    asyncio.run(main())


async def _ended(peer, call_id: str) -> bool:
    return (await peer.call("rawState", call_id))["state"] == "ended"
