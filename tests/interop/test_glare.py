"""Glare with matrix-js-sdk: the owner calls the door while the door calls the owner.

js-sdk runs its own glare rule only when its outgoing call has ``invitee`` set, which Element Web never does
(``createCall(roomId)``); without it, the door's invite simply rings as a second call in the room. Either way the
door's rule (the lesser call ID wins; the door's IDs always sort last) must leave exactly one call, with media.
"""

from __future__ import annotations

import asyncio

import pytest

from .door import Rig, door_hears, running_door, wait_until
from .harness import open_browser

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("invitee", [False, True], ids=["without-invitee-as-element", "with-invitee"])
def test_glare_leaves_exactly_one_call_with_media(interop, homeserver, matrix_users, tmp_path, measured, invitee):
    rig = Rig(homeserver, matrix_users, tmp_path)

    async def main():
        async with open_browser(interop, tmp_path / "browser") as browser:
            owner = await browser.client("owner")
            await owner.start(homeserver.url, rig.owner)
            async with running_door(rig) as door:
                owner_call, _ = await asyncio.gather(
                    owner.place(rig.room_id, video=True, invitee=rig.door.user_id if invitee else None),
                    door.press())
                await owner.wait_state(owner_call, "connected")
                await wait_until(lambda: door.core.state.value == "connected", "the door to be connected")
                await asyncio.sleep(3.0)  # late answers, hangups and echoes must not start or end anything

                calls = await owner.calls()
                live = [c for c in calls if c["state"] != "ended"]
                assert [c["callId"] for c in live] == [owner_call], calls
                assert live[0]["state"] == "connected"
                assert door.core.state.value == "connected" and door.core.call_id == owner_call
                await owner.live_media(owner_call)
                await door_hears(door)

                door_invites = [e["content"]["call_id"] for e in await owner.events("m.call.invite")
                                if e["sender"] == rig.door.user_id]
                for call_id in door_invites:
                    hangups = await owner.events("m.call.hangup", call_id=call_id)
                    assert any(h["content"].get("reason") == "replaced" for h in hangups), hangups
                measured["door_invites_sent"] = len(door_invites)
                measured["js_sdk_calls_seen"] = len(calls)
                measured["ended"] = ";".join(f"{c['direction']}:{c['hangupReason']}" for c in calls
                                             if c["state"] == "ended")

                await owner.hangup(owner_call)
                await wait_until(lambda: door.core.state.value == "idle", "the door to end the call")
                assert door.orchestrator.last_call.outcome.value == "completed"

    asyncio.run(main())
