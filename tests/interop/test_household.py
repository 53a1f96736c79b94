"""A household against matrix-js-sdk: two (or three) residents as real js-sdk clients in headless Chromium, each in
their own room with a real door (simulated hardware, real aiortc and matrix-nio) on the test Synapse.

What each resident's page saw is checked (js-sdk's call state, hangup reason, decoded video, remote audio), and what
the homeserver stored (``origin_server_ts`` of the answer and of the other room's hangup: one clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.parse
from pathlib import Path

import pytest

from intercom.app import Service
from intercom.service.config import load_config
from intercom_dev.testbed.door import write_config

from .door import door_hears, wait_until
from .harness import open_browser

pytestmark = pytest.mark.integration


class Household:
    """A door and residents on the test Synapse; ``rooms`` False for a resident leaves them to the door."""

    def __init__(self, homeserver, matrix_users, tmp_path: Path, *names: str, made_by_door: tuple[str, ...] = (),
                 quiet: dict[str, str] | None = None) -> None:
        self.server, self.tmp = homeserver, tmp_path
        self.door = matrix_users("door")
        self.users, self.rooms, residents = {}, {}, []
        for name in names:
            user = self.users[name] = matrix_users(name)
            entry = {"user_id": user.user_id}
            if name not in made_by_door:
                room = self.rooms[name] = homeserver.create_dm_room(user.access_token, self.door.user_id)
                homeserver.join_room(self.door.access_token, room)
                entry["room_id"] = room
            if quiet and name in quiet:
                entry["quiet_hours"] = quiet[name]
            residents.append(entry)
        self.config_path = write_config(tmp_path / "door", homeserver=homeserver.url, user_id=self.door.user_id,
                                        password=self.door.password, residents=residents)

    def stored(self, name: str, event_type: str, call_id: str) -> int:
        """When the homeserver stored the call event of this type and call in a resident's room (read as the door,
        a member of every resident's room): its ``origin_server_ts``."""
        room = urllib.parse.quote(self.rooms[name], safe="")
        body = self.server.api("GET", f"/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100",
                               token=self.door.access_token)
        return next(e["origin_server_ts"] for e in body["chunk"]
                    if e["type"] == event_type and e["content"].get("call_id") == call_id)


@contextlib.asynccontextmanager
async def running(household: Household, *, idle: bool = True):
    service = Service(load_config(household.config_path), simulate=True,
                      control_socket=household.tmp / "control.sock")
    task = asyncio.ensure_future(service.run())
    try:
        await asyncio.wait_for(service.ready.wait(), 60)
        if idle:
            await wait_until(lambda: service.core.led.value == "idle", "the door to show idle")
        yield service
    finally:
        service.stop()
        await asyncio.wait_for(task, 30)


async def press_and_ring(door: Service, pages: dict, house: Household) -> tuple[dict, dict]:
    """Press; both Alice's and Bob's pages ring, each in their own room: their js-sdk calls."""
    await door.press()
    alice = await pages["alice"].wait_incoming(sender_room=house.rooms["alice"])
    bob = await pages["bob"].wait_incoming(sender_room=house.rooms["bob"])
    assert alice["state"] == bob["state"] == "ringing" and alice["callId"] != bob["callId"]
    return alice, bob


async def clients(browser, household: Household, *names: str) -> dict:
    pages = {}
    for name in names:
        pages[name] = await browser.client(name)
        await pages[name].start(household.server.url, household.users[name])
    return pages


def test_a_press_rings_both_the_first_answer_gets_media_the_other_stops_within_a_second(
        interop, homeserver, matrix_users, tmp_path, measured):
    house = Household(homeserver, matrix_users, tmp_path, "alice", "bob")

    async def main():
        async with open_browser(interop, tmp_path / "browser") as browser:
            pages = await clients(browser, house, "alice", "bob")
            async with running(house) as door:
                alice, bob = await press_and_ring(door, pages, house)
                assert sorted(door.core.ring_status()["ringing"]) == sorted(u.user_id for u in house.users.values())

                await pages["alice"].answer(alice["callId"])
                connected = await pages["alice"].wait_state(alice["callId"], "connected")
                assert [f["purpose"] for f in connected["remoteFeeds"]] == ["m.usermedia"]
                ended = await pages["bob"].wait_state(bob["callId"], "ended", timeout=10)
                assert ended["hangupParty"] == "remote"
                # Within 1 s of the answer (the homeserver's clock for both): Bob's phone stops ringing.
                await pages["bob"].wait_event("m.call.hangup", call_id=bob["callId"])
                stopped_ms = (house.stored("bob", "m.call.hangup", bob["callId"])
                              - house.stored("alice", "m.call.answer", alice["callId"]))
                measured["answer_to_other_hangup_ms"] = stopped_ms
                assert 0 <= stopped_ms <= 1000, stopped_ms

                stats = await pages["alice"].live_media(alice["callId"])
                assert stats["video"]["frameWidth"] > 0
                await door_hears(door)
                await wait_until(lambda: door.core.state.value == "connected", "the door to be connected")
                assert door.core.call_id == alice["callId"] and door.core.ring_status()["answered_by"] == \
                    house.users["alice"].user_id
                assert len(door.core._calls) == 1
                await pages["alice"].hangup(alice["callId"])
                await wait_until(lambda: door.core.state.value == "idle", "the door to be idle")

    asyncio.run(main())


def test_a_decline_by_one_leaves_the_other_ringing(interop, homeserver, matrix_users, tmp_path):
    house = Household(homeserver, matrix_users, tmp_path, "alice", "bob")

    async def main():
        async with open_browser(interop, tmp_path / "browser") as browser:
            pages = await clients(browser, house, "alice", "bob")
            async with running(house) as door:
                alice, bob = await press_and_ring(door, pages, house)
                await pages["bob"].reject(bob["callId"])
                await pages["bob"].wait_state(bob["callId"], "ended")
                await wait_until(lambda: door.core.ring_status()["declined"] == [house.users["bob"].user_id],
                                 "the door to see Bob's decline")
                await asyncio.sleep(1.5)
                assert (await pages["alice"].state(alice["callId"]))["state"] == "ringing"
                assert door.core.led.value == "calling"
                await pages["alice"].answer(alice["callId"])
                await pages["alice"].wait_state(alice["callId"], "connected")
                await pages["alice"].wait_media(alice["callId"])
                await pages["alice"].hangup(alice["callId"])

    asyncio.run(main())


def _quiet_now() -> str:
    """Quiet hours around the present local time (an hour either side)."""
    now = time.localtime()
    minutes = now.tm_hour * 60 + now.tm_min
    start, end = (minutes - 60) % 1440, (minutes + 60) % 1440
    return f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"


def test_quiet_hours_give_a_picture_and_no_call(interop, homeserver, matrix_users, tmp_path):
    house = Household(homeserver, matrix_users, tmp_path, "alice", "bob", quiet={"bob": _quiet_now()})

    async def main():
        async with open_browser(interop, tmp_path / "browser") as browser:
            pages = await clients(browser, house, "alice", "bob")
            async with running(house) as door:
                await door.press()
                alice = await pages["alice"].wait_incoming(sender_room=house.rooms["alice"])
                bob_user = house.users["bob"].user_id
                assert door.core.ring_status()["quiet"] == [bob_user]
                # Bob's room gets the picture and the notice, from the homeserver's own record of the room.
                messages = await wait_for_messages(house, "bob", lambda ms: any(
                    m.get("msgtype") == "m.image" for m in ms) and any("quiet hours" in m.get("body", "")
                                                                       for m in ms))
                image = next(m for m in messages if m.get("msgtype") == "m.image")
                assert bob_user in image["m.mentions"]["user_ids"]
                assert [c for c in await pages["bob"].calls() if c["direction"] == "inbound"] == []
                assert await pages["bob"].events("m.call.invite") == []
                await pages["alice"].reject(alice["callId"])

    asyncio.run(main())


async def wait_for_messages(house: Household, name: str, done, timeout: float = 20.0) -> list[dict]:
    """The ``m.room.message`` contents of a resident's room (read as the door) once ``done(contents)`` holds."""
    room = urllib.parse.quote(house.rooms[name], safe="")
    deadline = time.monotonic() + timeout
    contents: list[dict] = []
    while time.monotonic() < deadline:
        body = await asyncio.to_thread(house.server.api, "GET",
                                       f"/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50",
                                       None, house.door.access_token)
        contents = [e["content"] for e in body.get("chunk", []) if e.get("type") == "m.room.message"]
        if done(contents):
            return contents
        await asyncio.sleep(0.2)
    raise AssertionError(f"the room of {name} never got what was expected: {contents}")


def test_a_resident_without_a_room_gets_one_made_by_the_door_and_the_next_press_rings_them(
        interop, homeserver, matrix_users, tmp_path, measured):
    house = Household(homeserver, matrix_users, tmp_path, "alice", "carol", made_by_door=("carol",))
    carol = house.users["carol"]

    async def main():
        async with open_browser(interop, tmp_path / "browser") as browser:
            pages = await clients(browser, house, "alice")
            pages["carol"] = await browser.client("carol")
            await pages["carol"].start(homeserver.url, carol, encryption=True)
            async with running(house, idle=False) as door:
                started = time.monotonic()

                def carols():
                    return next(r for r in door.core.household_status() if r["user_id"] == carol.user_id)

                await wait_until(lambda: carols()["room_id"] is not None, "the door to make Carol's room")
                room = carols()["room_id"]
                measured["room_made_s"] = round(time.monotonic() - started, 2)
                assert "waiting for" in (carols()["room_problem"] or "") and carol.user_id in carols()["room_problem"]
                # What Carol is invited to: private, encrypted, just the two of them, the door in charge.
                state = homeserver.api("GET", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room, safe='')}/state",
                                       token=house.door.access_token)
                kinds = {e["type"]: e for e in state}
                assert kinds["m.room.encryption"]["content"]["algorithm"] == "m.megolm.v1.aes-sha2"
                assert kinds["m.room.join_rules"]["content"]["join_rule"] == "invite"
                members = {e["state_key"]: e["content"]["membership"] for e in state if e["type"] == "m.room.member"}
                assert members == {house.door.user_id: "join", carol.user_id: "invite"}

                # A press before Carol joined rings Alice alone and says why Carol was not rung.
                await door.press()
                alice = await pages["alice"].wait_incoming(sender_room=house.rooms["alice"])
                assert carol.user_id in door.core.ring_status()["not_rung"]
                await pages["alice"].reject(alice["callId"])
                await wait_until(lambda: door.core.state.value == "idle", "the door to be idle")

                homeserver.join_room(carol.access_token, room)  # Carol accepts the invite
                await wait_until(lambda: carols()["room_problem"] is None, "Carol's room to be usable", timeout=30)
                await wait_until(lambda: door.core.trust_status(carol.user_id)["trusted_devices"],
                                 "the door to trust Carol's session", timeout=30)
                await door.press()
                ringing = await pages["carol"].wait_incoming(sender_room=room, timeout=30)
                await pages["carol"].answer(ringing["callId"])
                await pages["carol"].wait_state(ringing["callId"], "connected", timeout=30)
                await pages["carol"].live_media(ringing["callId"])
                await wait_until(lambda: door.core.state.value == "connected", "the door to be connected")
                assert door.core.ring_status()["answered_by"] == carol.user_id
                await pages["carol"].hangup(ringing["callId"])

            # A restart reuses the room: no second room is made.
            async with running(house) as door:
                await wait_until(lambda: next(r for r in door.core.household_status()
                                              if r["user_id"] == carol.user_id)["room_problem"] is None,
                                 "Carol's room to be usable again")
                assert next(r for r in door.core.household_status() if r["user_id"] == carol.user_id)["room_id"] == room
                joined = homeserver.api("GET", "/_matrix/client/v3/joined_rooms", token=carol.access_token)
                assert joined["joined_rooms"] == [room]

    asyncio.run(main())
