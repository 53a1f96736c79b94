"""Calls across networks: the door on a home network behind a symmetric NAT, the owner's matrix-js-sdk (Element's
call code) in Chromium behind a carrier's symmetric NAT, and the homeserver's TURN (coturn) between them."""

from __future__ import annotations

import asyncio
import time

import pytest

from ..interop.harness import open_browser
from .conftest import phone_browser

pytestmark = pytest.mark.integration


async def door_state(door, predicate, what: str, timeout: float = 30.0) -> dict:
    return await asyncio.to_thread(door.wait_for, predicate, timeout, what)


def relayed(pair: dict | None) -> bool:
    """Whether the phone's selected candidate pair goes through a TURN relay on either side."""
    return bool(pair) and ("relay" in (pair.get("local") or "") or "relay" in (pair.get("remote") or ""))


async def call_and_check_media(network, page_server, tmp_path, rig, *, door_calls: bool, host=None) -> dict:
    host = host or network.phone_away
    installation = phone_browser(network, page_server, host, tmp_path / "chromium")
    door = await asyncio.to_thread(rig.start)
    async with open_browser(installation, tmp_path / "browser") as browser:
        owner = await browser.client("owner")
        await owner.start(rig.hs.url, rig.owner, loopback=False)
        started = time.monotonic()
        if door_calls:
            await asyncio.to_thread(door.press)
            ringing = await owner.wait_incoming(timeout=30)
            call_id = ringing["callId"]
            await owner.answer(call_id)
        else:
            call_id = await owner.place(rig.room_id)
        connected = await owner.wait_state(call_id, "connected", timeout=30)
        stats = await owner.live_media(call_id)
        status = await door_state(door, lambda s: s["call_state"] == "connected", "the door to be connected")
        assert status["call_id"] == call_id
        result = {"stats": stats, "connected": connected, "seconds": time.monotonic() - started}
        await owner.hangup(call_id)
        await door_state(door, lambda s: s["call_state"] == "idle", "the door to end the call")
        last = door.status()["last_call"]
        assert last["call_id"] == call_id and last["outcome"] == "completed", last
        return result


@pytest.mark.parametrize("door_calls", [True, False], ids=["door-calls-owner", "owner-calls-door"])
def test_a_call_between_two_symmetric_nats_connects_through_turn(network, turn_homeserver, page_server, door_rig,
                                                                 tmp_path, door_calls):
    rig = door_rig(turn_homeserver)
    result = asyncio.run(call_and_check_media(network, page_server, tmp_path, rig, door_calls=door_calls))
    pair = result["stats"].get("pair")
    assert relayed(pair), f"media did not go through TURN: {pair}"
    assert result["stats"]["video"]["frameWidth"] > 0
