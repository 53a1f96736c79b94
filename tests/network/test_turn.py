"""Calls across networks: the door on a home network behind a symmetric NAT, the owner's matrix-js-sdk (Element's
call code) in Chromium behind a carrier's symmetric NAT, and the homeserver's TURN (coturn) between them."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from ..interop.harness import open_browser
from .conftest import phone_browser
from .topology import CARRIER_LAN

pytestmark = pytest.mark.integration


async def door_state(door, predicate, what: str, timeout: float = 30.0) -> dict:
    return await asyncio.to_thread(door.wait_for, predicate, timeout, what)


def relayed(pair: dict | None) -> bool:
    """Whether the phone's selected candidate pair goes through a TURN relay on either side."""
    return bool(pair) and ("relay" in (pair.get("local") or "") or "relay" in (pair.get("remote") or ""))


async def start_call(rig, door, owner, *, door_calls: bool) -> str:
    """A visitor presses the button and the owner answers, or the owner calls the door; returns the call id."""
    if door_calls:
        await asyncio.to_thread(door.press)
        ringing = await owner.wait_incoming(timeout=30)
        await owner.answer(ringing["callId"])
        return ringing["callId"]
    return await owner.place(rig.room_id)


@contextlib.asynccontextmanager
async def call_in_progress(network, page_server, tmp_path, rig, host, *, door_calls: bool):
    """The door running, the owner's phone on ``host`` and a call between them with live media:
    yields (door, owner, call_id)."""
    installation = phone_browser(network, page_server, host, tmp_path / "chromium")
    door = await asyncio.to_thread(rig.start)
    async with open_browser(installation, tmp_path / "browser") as browser:
        owner = await browser.client("owner")
        await owner.start(rig.hs.url, rig.owner, loopback=False)
        call_id = await start_call(rig, door, owner, door_calls=door_calls)
        await owner.wait_state(call_id, "connected", timeout=30)
        await owner.live_media(call_id)
        yield door, owner, call_id


async def call_and_check_media(network, page_server, tmp_path, rig, *, door_calls: bool, host=None) -> dict:
    host = host or network.phone_away
    installation = phone_browser(network, page_server, host, tmp_path / "chromium")
    door = await asyncio.to_thread(rig.start)
    async with open_browser(installation, tmp_path / "browser") as browser:
        owner = await browser.client("owner")
        await owner.start(rig.hs.url, rig.owner, loopback=False)
        started = time.monotonic()
        call_id = await start_call(rig, door, owner, door_calls=door_calls)
        connected = await owner.wait_state(call_id, "connected", timeout=30)
        stats = await owner.live_media(call_id)
        status = await door_state(door, lambda s: s["call_state"] == "connected", "the door to be connected")
        assert status["call_id"] == call_id
        assert status["turn"] == ("available" if rig.hs.turn_uris else "none"), status
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


@pytest.mark.parametrize("door_calls", [True, False], ids=["door-calls-owner", "owner-calls-door"])
def test_the_owner_at_home_connects_directly_without_turn(network, plain_homeserver, page_server, door_rig,
                                                          tmp_path, door_calls):
    """Same LAN, a homeserver without TURN: the door and the phone find each other on the home network."""
    rig = door_rig(plain_homeserver)
    result = asyncio.run(call_and_check_media(network, page_server, tmp_path, rig, door_calls=door_calls,
                                              host=network.phone_home))
    pair = result["stats"].get("pair")
    assert pair and not relayed(pair), pair
    assert network.door_host.address in (pair.get("local") or "") + (pair.get("remote") or ""), pair


def room_notices(hs, user, room_id: str) -> list[str]:
    answer = hs.api("GET", f"/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=50", token=user.access_token)
    return [e["content"].get("body", "") for e in answer.get("chunk", [])
            if e.get("type") == "m.room.message" and e["content"].get("msgtype") == "m.notice"]


@pytest.mark.parametrize("turn", ["none", "down"])
def test_with_no_path_the_door_gives_up_within_connect_timeout_says_why_and_is_idle_again(
        network, plain_homeserver, dead_turn_homeserver, page_server, door_rig, tmp_path, turn):
    """Both behind symmetric NATs and no TURN (none offered, or its server down): no call can connect. The door
    must not hang: ice_failed within connect_timeout, the error pattern, a notice that says why, then idle with
    nothing left running."""
    rig = door_rig(plain_homeserver if turn == "none" else dead_turn_homeserver,
                   extra="[calls]\nconnect_timeout = 5\n")

    async def scenario():
        installation = phone_browser(network, page_server, network.phone_away, tmp_path / "chromium")
        door = await asyncio.to_thread(rig.start)
        async with open_browser(installation, tmp_path / "browser") as browser:
            owner = await browser.client("owner")
            await owner.start(rig.hs.url, rig.owner, loopback=False)
            await asyncio.to_thread(door.press)
            ringing = await owner.wait_incoming(timeout=30)
            await owner.answer(ringing["callId"])
            answered = time.monotonic()
            failed = await door_state(door, lambda s: s["led"] == "error", "the door to show the error pattern", 20)
            waited = time.monotonic() - answered
            idle = await door_state(door, lambda s: s["call_state"] == "idle", "the door to be idle again")
            ended = await owner.wait_state(ringing["callId"], "ended", timeout=20)
            return ringing["callId"], failed, waited, idle, ended

    call_id, failed, waited, idle, ended = asyncio.run(scenario())
    assert waited < 5 + 3, f"the door took {waited:.1f} s to give up (connect_timeout 5 s)"
    last = idle["last_call"]
    assert last["call_id"] == call_id and last["outcome"] == "failed" and last["reason"] == "ice_failed", last
    assert ended["hangupParty"] == "remote" and ended["hangupReason"] == "ice_failed", ended
    notices = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any("could not connect" in n for n in notices):
        notices = room_notices(rig.hs, rig.owner, rig.room_id)
        time.sleep(0.2)
    text = next((n for n in notices if "could not connect" in n), None)
    assert text is not None and ("no TURN server" if turn == "none" else "TURN server (is it running") in text, \
        notices
    assert rig.door.process.poll() is None, "the door must keep running"
    if turn == "none":
        # Said once, plainly, at start: in the log and in intercom status.
        assert idle["turn"] == "none" and "no TURN server" in idle["network_warning"], idle
        assert rig.door.log_path.read_text().count("the homeserver offers no TURN server") == 1
    else:
        assert idle["turn"] == "available" and idle["network_warning"] is None, idle


def test_with_udp_blocked_on_both_networks_the_call_goes_through_turn_over_tcp(network, turn_homeserver, page_server,
                                                                                door_rig, tmp_path):
    """The homeserver lists TURN over UDP, TCP and TLS; aiortc alone takes only the first. With UDP blocked at
    both routers only a TCP (or TLS) relay works, and the door must still gather it and connect."""
    rig = door_rig(turn_homeserver)
    with network.topology.block_udp("home"), network.topology.block_udp("carrier"):
        result = asyncio.run(call_and_check_media(network, page_server, tmp_path, rig, door_calls=True))
    pair = result["stats"].get("pair")
    assert relayed(pair), f"media did not go through TURN: {pair}"
    assert result["stats"]["video"]["frameWidth"] > 0


@pytest.mark.parametrize("door_calls", [True, False], ids=["door-calls-owner", "owner-calls-door"])
def test_when_the_phone_changes_networks_mid_call_the_call_goes_on(network, turn_homeserver, page_server, door_rig,
                                                                   tmp_path, door_calls):
    """The owner's phone gets a new address mid-call (Wi-Fi to mobile): every path of the call dies, and
    matrix-js-sdk restarts ICE with an m.call.negotiate offer. The door must answer it with new ICE credentials,
    connect again through TURN under the same call, and carry media both ways until the owner hangs up."""
    rig = door_rig(turn_homeserver)
    host = network.phone_away
    old_address = host.address

    async def scenario():
        async with call_in_progress(network, page_server, tmp_path, rig, host, door_calls=door_calls) as \
                (door, owner, call_id):
            before = await owner.stats(call_id)
            moved = time.monotonic()
            network.topology.renumber(host, CARRIER_LAN, 3)

            async def answered():
                return [e for e in await owner.events("m.call.negotiate", call_id=call_id)
                        if e["sender"] == rig.door_user.user_id and e["content"]["description"]["type"] == "answer"]
            answers = await owner.wait_for(answered, "the door to answer the ICE restart", timeout=45)
            after = await owner.live_media(call_id, seconds=2.0)
            restored = time.monotonic() - moved
            state = await owner.state(call_id)
            status = await door_state(door, lambda s: s["call_state"] == "connected", "the door to stay connected")
            await owner.hangup(call_id)
            idle = await door_state(door, lambda s: s["call_state"] == "idle", "the door to end the call")
            return call_id, before, after, answers, state, status, idle, restored

    try:
        call_id, before, after, answers, state, status, idle, restored = asyncio.run(scenario())
    finally:
        network.topology.renumber(host, CARRIER_LAN, int(old_address.rsplit(".", 1)[1]))
    print(f"media restored {restored:.1f} s after the phone's address changed")
    assert state["state"] == "connected", state
    assert status["call_id"] == call_id, status
    assert relayed(after.get("pair")), f"media after the restart did not go through TURN: {after.get('pair')}"
    assert after["audio"]["packets"] > before["audio"]["packets"], (before, after)
    assert after["video"]["framesDecoded"] > before["video"]["framesDecoded"], (before, after)
    assert after["audioOut"]["packets"] > before["audioOut"]["packets"], (before, after)
    assert old_address not in (after["pair"].get("local") or ""), after["pair"]
    sdp = answers[0]["content"]["description"]["sdp"]
    assert "a=ice-ufrag:" in sdp and "a=ice-pwd:" in sdp
    last = idle["last_call"]
    assert last["call_id"] == call_id and last["outcome"] == "completed", last
    assert last["reason"] == "user_hangup", last
    assert rig.door.process.poll() is None


def test_when_the_phone_moves_to_a_network_with_no_path_the_door_ends_the_call_and_says_to_call_again(
        network, turn_homeserver, page_server, door_rig, tmp_path):
    """The phone's new network lets its Matrix traffic out but no media (UDP and TURN dropped): the restart finds
    no path. The door must end the call with ice_timeout within its reconnect grace, post that the call was cut
    off and to call again, and be idle and running afterwards."""
    rig = door_rig(turn_homeserver)
    host = network.phone_away
    old_address = host.address
    topology = network.topology

    async def scenario():
        async with call_in_progress(network, page_server, tmp_path, rig, host, door_calls=False) as \
                (door, owner, call_id):
            with topology.block_udp("carrier"), topology.block("carrier", "-p", "tcp", "--dport", "3478"), \
                    topology.block("carrier", "-p", "tcp", "--dport", "5349"):
                topology.renumber(host, CARRIER_LAN, 3)
                await owner.wait_event("m.call.negotiate", call_id=call_id, timeout=45)
                restarted = time.monotonic()
                idle = await door_state(door, lambda s: s["call_state"] == "idle" and s["last_call"],
                                        "the call to end", 60)
                gave_up = time.monotonic() - restarted
                ended = await owner.wait_state(call_id, "ended", timeout=40)
            return call_id, idle, ended, gave_up

    try:
        call_id, idle, ended, gave_up = asyncio.run(scenario())
    finally:
        topology.renumber(host, CARRIER_LAN, int(old_address.rsplit(".", 1)[1]))
    print(f"the door gave up {gave_up:.1f} s after the phone's ICE restart")
    last = idle["last_call"]
    assert last["call_id"] == call_id and last["outcome"] == "completed", last
    assert last["reason"] == "ice_timeout", last
    assert ended["hangupReason"] in ("ice_timeout", "ice_failed"), ended
    assert gave_up < 10 + 5, gave_up  # the reconnect grace, and the time to see the door's state
    notices = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any("cut off" in n for n in notices):
        notices = room_notices(rig.hs, rig.owner, rig.room_id)
        time.sleep(0.2)
    assert any("cut off" in n and "Call the door again" in n for n in notices), notices
    assert rig.door.process.poll() is None


def test_with_only_tls_to_the_turn_server_open_the_call_goes_through_turns(network, turn_homeserver, page_server,
                                                                           door_rig, tmp_path):
    """Only TCP port 5349 gets out of both networks (UDP and TURN's port 3478 dropped): turns: is the last way."""
    rig = door_rig(turn_homeserver)
    topology = network.topology
    with topology.block_udp("home"), topology.block_udp("carrier"), \
            topology.block("home", "-p", "tcp", "--dport", "3478"), \
            topology.block("carrier", "-p", "tcp", "--dport", "3478"):
        result = asyncio.run(call_and_check_media(network, page_server, tmp_path, rig, door_calls=True))
    pair = result["stats"].get("pair")
    assert relayed(pair), f"media did not go through TURN: {pair}"
