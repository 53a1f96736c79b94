"""A household against a real Synapse: each resident in a room of two with the door, configured, made by the door,
or the resident's own; each resident's keys read and pinned apart.

The adapter runs alone here (its events recorded, trust verdicts applied by hand): what the core makes of them is
tested in tests/core.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import stat
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from intercom.core import (OwnerKeysObserved, Pins, ResidentRoomChanged, RoomMembersChanged, TextMessageReceived,
                           TrustUpdated)
from intercom.matrix import Credential, MatrixAdapter, MatrixSettings, load_household_pins
from intercom.matrix import client as client_module
from intercom.matrix import retry
from intercom.matrix.rooms import CALL_MEMBER_EVENT, creator_is_privileged
from intercom.matrix.trust import pins_file
from intercom_dev.testbed.synapse import Homeserver

from ..support import User, wait_until
from .harness import Phone, run
from .test_matrix_refusals import Proxy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def household(hs: Homeserver, door: User, state_dir: Path, *residents: tuple[str, str | None]) -> MatrixSettings:
    return MatrixSettings(homeserver=hs.url, user_id=door.user_id, state_dir=state_dir,
                          credential=Credential("password", door.password), device_name="test door",
                          residents=residents)


@contextlib.asynccontextmanager
async def running(settings: MatrixSettings) -> AsyncIterator[tuple[MatrixAdapter, list[Any]]]:
    """The adapter, started and syncing; its events in the list. Fails the test if the sync loop died."""
    events: list[Any] = []
    adapter = MatrixAdapter(settings, events.append)
    await adapter.start()
    loop = asyncio.ensure_future(adapter.run())
    try:
        yield adapter, events
    finally:
        await adapter.close()
        await asyncio.gather(loop, return_exceptions=True)
    if loop.done() and not loop.cancelled() and loop.exception() is not None:
        raise AssertionError(f"the sync loop crashed: {loop.exception()!r}")


def rooms_for(events: list[Any], user_id: str) -> list[ResidentRoomChanged]:
    return [e for e in events if isinstance(e, ResidentRoomChanged) and e.user_id == user_id]


def quote(room_id: str) -> str:
    return urllib.parse.quote(room_id, safe="")


def state(hs: Homeserver, token: str, room_id: str) -> dict[str, dict[str, Any]]:
    """The room's state as ``type`` or ``type/state_key`` → content."""
    events = hs.api("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/state", token=token)
    return {e["type"] + (f"/{e['state_key']}" if e["state_key"] else ""): e["content"] for e in events}  # type: ignore[union-attr]


def membership(hs: Homeserver, token: str, room_id: str, user_id: str) -> str | None:
    content = hs.api("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.member/{quote(user_id)}",
                     token=token)
    return content.get("membership")


def joined_rooms(hs: Homeserver, user: User) -> set[str]:
    return set(hs.api("GET", "/_matrix/client/v3/joined_rooms", token=user.access_token)["joined_rooms"])


def report(what: str, **seconds: float) -> None:
    print(f"\n[measured] {what}: " + ", ".join(f"{k}={v * 1000:.0f} ms" for k, v in seconds.items()))


# --- rooms made by the door -----------------------------------------------------------------------------------------


def test_the_door_makes_a_room_for_a_resident_without_one_and_a_restart_reuses_it(homeserver, matrix_users, tmp_path):
    async def main() -> None:
        door, bob = matrix_users("door"), matrix_users("bob")
        settings = household(homeserver, door, tmp_path / "door", (bob.user_id, None))
        clock = asyncio.get_running_loop()
        began = clock.time()
        async with running(settings) as (adapter, events):
            started = clock.time()
            made = await wait_until(lambda: [e for e in rooms_for(events, bob.user_id) if e.room_id],
                                    what="the door to make a room")
            report("room made by the door", start=started - began, room_after_start=clock.time() - started)
            room_id = made[0].room_id
            waiting = f"waiting for {bob.user_id} to join the room the door made"
            assert rooms_for(events, bob.user_id)[0] == ResidentRoomChanged(
                user_id=bob.user_id, room_id=None, waiting=f"the door is making a room with {bob.user_id}")
            assert made[0] == ResidentRoomChanged(user_id=bob.user_id, room_id=room_id, waiting=waiting)
            assert adapter.resident_rooms() == {bob.user_id: room_id}

            # What Bob's app shows: a direct chat invite named Doorbell, encrypted.
            sync = homeserver.api("GET", "/_matrix/client/v3/sync?timeout=0", token=bob.access_token)
            invite = {e["type"] + "/" + e["state_key"]: e["content"]
                      for e in sync["rooms"]["invite"][room_id]["invite_state"]["events"]}
            assert invite["m.room.name/"] == {"name": "Doorbell"}
            assert invite["m.room.encryption/"]["algorithm"] == "m.megolm.v1.aes-sha2"
            assert invite[f"m.room.member/{bob.user_id}"]["membership"] == "invite"
            assert invite[f"m.room.member/{bob.user_id}"]["is_direct"] is True

            room = state(homeserver, door.access_token, room_id)
            assert room["m.room.join_rules"] == {"join_rule": "invite"}
            assert room["m.room.history_visibility"] == {"history_visibility": "invited"}
            levels = room["m.room.power_levels"]
            door_level = {} if creator_is_privileged(room["m.room.create"].get("room_version")) else {
                door.user_id: 100}
            assert levels["users"] == {bob.user_id: 50, **door_level}
            assert levels["events"][CALL_MEMBER_EVENT] == 0
            assert levels["events"]["m.room.power_levels"] == levels["events"]["m.room.join_rules"] == 100

            saved = tmp_path / "door" / "rooms.json"
            assert stat.S_IMODE(saved.stat().st_mode) == 0o600
            assert json.loads(saved.read_text())["rooms"][bob.user_id]["room_id"] == room_id

        async with running(settings) as (adapter, events):
            # The restart knows the room at once (no None while a room is made) and makes no other.
            assert rooms_for(events, bob.user_id) == [ResidentRoomChanged(user_id=bob.user_id, room_id=room_id,
                                                                          waiting=waiting)]
            homeserver.join_room(bob.access_token, room_id)
            await wait_until(lambda: ResidentRoomChanged(user_id=bob.user_id, room_id=room_id, waiting="")
                             in events, what="the door to see Bob join")
            await wait_until(lambda: RoomMembersChanged(room_id=room_id, joined=frozenset({door.user_id, bob.user_id}),
                                                        join_rule="invite", encrypted=True) in events,
                             what="the facts of Bob's room")
        assert joined_rooms(homeserver, door) == {room_id}

        # A damaged rooms.json is kept aside; the room of just the door and Bob is found again, none is made.
        saved.write_text('{"version": 1, "rooms": {"@bob": ')
        async with running(settings) as (adapter, events):
            assert rooms_for(events, bob.user_id) == [ResidentRoomChanged(user_id=bob.user_id, room_id=room_id)]
            assert (tmp_path / "door" / "rooms.json.damaged").exists()
            assert json.loads(saved.read_text())["rooms"][bob.user_id] == {"room_id": room_id, "made_by_door": True,
                                                                           "invited_at": None}
        assert joined_rooms(homeserver, door) == {room_id}

    run(main())


# --- invites ------------------------------------------------------------------------------------------------------


def test_a_residents_invite_into_a_room_of_two_is_accepted_and_remembered(homeserver, matrix_users, tmp_path):
    """Carol invited the door before it started: her room is taken, none is made. Alice invites the door while the
    room it made for her waits: hers is preferred, and the door leaves its own (taking back the invite)."""
    async def main() -> None:
        door, alice, carol = matrix_users("door"), matrix_users("alice"), matrix_users("carol")
        carols = homeserver.create_dm_room(carol.access_token, door.user_id, encrypted=True)
        settings = household(homeserver, door, tmp_path / "door", (alice.user_id, None), (carol.user_id, None))
        async with running(settings) as (adapter, events):
            assert rooms_for(events, carol.user_id) == [ResidentRoomChanged(user_id=carol.user_id, room_id=carols)]
            made = await wait_until(lambda: [e.room_id for e in rooms_for(events, alice.user_id) if e.room_id],
                                    what="the door to make Alice's room")
            alices = homeserver.create_dm_room(alice.access_token, door.user_id, encrypted=True)
            await wait_until(lambda: ResidentRoomChanged(user_id=alice.user_id, room_id=alices) in events,
                             what="the door to take Alice's room")
            await wait_until(lambda: made[0] not in joined_rooms(homeserver, door),
                             what="the door to leave the room it made")
            assert membership(homeserver, alice.access_token, made[0], alice.user_id) == "leave"  # invite taken back
            assert adapter.resident_rooms() == {alice.user_id: alices, carol.user_id: carols}
            saved = json.loads((tmp_path / "door" / "rooms.json").read_text())["rooms"]
            assert saved[alice.user_id] == {"room_id": alices, "made_by_door": False, "invited_at": None}
            assert saved[carol.user_id]["room_id"] == carols
        assert joined_rooms(homeserver, door) == {alices, carols}

    run(main())


def test_invites_from_a_stranger_and_into_a_room_with_a_third_member_are_declined(homeserver, matrix_users,
                                                                                   tmp_path):
    async def main() -> None:
        door, dave, stranger, third = (matrix_users("door"), matrix_users("dave"), matrix_users("stranger"),
                                       matrix_users("third"))
        strangers = homeserver.create_dm_room(stranger.access_token, door.user_id)
        crowded = homeserver.api("POST", "/_matrix/client/v3/createRoom", {
            "preset": "private_chat", "invite": [third.user_id, door.user_id]}, dave.access_token)["room_id"]
        settings = household(homeserver, door, tmp_path / "door", (dave.user_id, None))
        async with running(settings) as (adapter, events):
            await wait_until(lambda: membership(homeserver, stranger.access_token, strangers, door.user_id) == "leave",
                             what="the door to decline the stranger's invite")
            await wait_until(lambda: membership(homeserver, dave.access_token, crowded, door.user_id) == "leave",
                             what="the door to decline Dave's room with a third member")
            # Dave has no room of two with the door, so it makes one.
            made = await wait_until(lambda: [e.room_id for e in rooms_for(events, dave.user_id) if e.room_id],
                                    what="the door to make Dave's room")
            assert made[0] not in (strangers, crowded)
            assert {e.room_id for e in rooms_for(events, dave.user_id)} == {None, made[0]}
        assert joined_rooms(homeserver, door) == {made[0]}

    run(main())


# --- keys and pins of two residents -------------------------------------------------------------------------------


def test_two_residents_keys_are_read_apart_and_their_pins_kept_apart_across_a_restart(homeserver, matrix_users,
                                                                                     tmp_path):
    async def main() -> None:
        door, alice, bob = matrix_users("door"), matrix_users("alice"), matrix_users("bob")
        alices = homeserver.create_dm_room(alice.access_token, door.user_id, encrypted=True)
        phones = [await Phone(homeserver.url, u.user_id, u.password, tmp_path / u.localpart).start()
                  for u in (alice, bob)]
        alice_phone, bob_phone = (p.client.device_id for p in phones)
        settings = household(homeserver, door, tmp_path / "door", (alice.user_id, alices), (bob.user_id, None))
        try:
            async with running(settings) as (adapter, events):
                def keys() -> dict[str, set[str]]:
                    return {e.user_id: {d.device_id for d in e.keys.devices} for e in events
                            if isinstance(e, OwnerKeysObserved)}
                await wait_until(lambda: keys() == {alice.user_id: {alice_phone}, bob.user_id: {bob_phone}},
                                 what="each resident's keys, apart")

                bobs = (await wait_until(lambda: [e.room_id for e in rooms_for(events, bob.user_id) if e.room_id],
                                         what="Bob's room"))[0]
                homeserver.join_room(bob.access_token, bobs)
                await wait_until(lambda: ResidentRoomChanged(user_id=bob.user_id, room_id=bobs) in events,
                                 what="Bob in his room")
                pins = {alice.user_id: Pins(devices={alice_phone: "a"}), bob.user_id: Pins(devices={bob_phone: "b"})}
                for user_id, device in ((alice.user_id, alice_phone), (bob.user_id, bob_phone)):
                    adapter.apply_trust(TrustUpdated(pins=pins[user_id], trusted=frozenset({device}),
                                                     key_holders=frozenset({device}), untrusted=frozenset(),
                                                     user_id=user_id))

                # Each phone's encrypted message is named as sent by that phone (among that resident's devices).
                for phone, room_id in ((phones[0], alices), (phones[1], bobs)):
                    await phone.knows_member(room_id, door.user_id)
                    await phone.client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "hello"},
                                                 ignore_unverified_devices=True)
                texts = await wait_until(lambda: {e.sender: e.device_id for e in events
                                                  if isinstance(e, TextMessageReceived) and e.body == "hello"}
                                         if len([e for e in events if isinstance(e, TextMessageReceived)]) >= 2
                                         else None, what="both messages at the door")
                assert texts == {alice.user_id: alice_phone, bob.user_id: bob_phone}

                # nio's marks: each resident's key holder verified (both rooms get their keys), nothing else.
                client = adapter._client
                assert client is not None
                for user_id, device in ((alice.user_id, alice_phone), (bob.user_id, bob_phone)):
                    marked = client.device_store[user_id][device]
                    assert client.olm.is_device_verified(marked) and not client.olm.is_device_blacklisted(marked)

            assert json.loads((tmp_path / "door" / "trust.json").read_text())["user_id"] == alice.user_id
            assert json.loads(pins_file(tmp_path / "door", bob.user_id).read_text())["user_id"] == bob.user_id
            async with running(settings) as (adapter, events):
                assert adapter.load_pins() == pins
            assert load_household_pins(tmp_path / "door", [alice.user_id, bob.user_id]) == pins
        finally:
            for phone in phones:
                await phone.close()

    run(main())


def test_a_resident_who_leaves_the_room_the_door_made_is_invited_again_but_not_in_a_loop(homeserver, matrix_users,
                                                                                        tmp_path, monkeypatch,
                                                                                        caplog):
    monkeypatch.setattr(client_module, "REINVITE_INTERVAL", 1.0)  # an hour in the door

    async def main() -> None:
        door, bob = matrix_users("door"), matrix_users("bob")
        async with running(household(homeserver, door, tmp_path / "door", (bob.user_id, None))) as (adapter, events):
            room_id = (await wait_until(lambda: [e.room_id for e in rooms_for(events, bob.user_id) if e.room_id],
                                        what="the door to make a room"))[0]
            await asyncio.sleep(1.0)  # the invite that made the room is older than the interval now
            homeserver.join_room(bob.access_token, room_id)
            await wait_until(lambda: ResidentRoomChanged(user_id=bob.user_id, room_id=room_id) in events,
                             what="Bob in the room")
            homeserver.api("POST", f"/_matrix/client/v3/rooms/{quote(room_id)}/leave", {}, bob.access_token)
            await wait_until(lambda: membership(homeserver, door.access_token, room_id, bob.user_id) == "invite",
                             what="the door to invite Bob again")
            await wait_until(lambda: f"{bob.user_id} left the room {room_id} the door made; invited them again"
                             in caplog.text, what="the log to say so")
            saved = json.loads((tmp_path / "door" / "rooms.json").read_text())["rooms"][bob.user_id]
            assert saved["made_by_door"] and saved["invited_at"] > time.time() - 10
            # Bob declines at once: no new invite before the interval has passed (and no new room either).
            homeserver.api("POST", f"/_matrix/client/v3/rooms/{quote(room_id)}/leave", {}, bob.access_token)
            await asyncio.sleep(2.0)
            assert membership(homeserver, door.access_token, room_id, bob.user_id) == "leave"
            assert adapter.resident_rooms() == {bob.user_id: room_id}
        assert joined_rooms(homeserver, door) == {room_id}

    with caplog.at_level(logging.INFO, logger="intercom.matrix"):
        run(main())


# --- when making a room fails ---------------------------------------------------------------------------------------


class CreateRefusingProxy(Proxy):
    """The proxy in front of the test homeserver, answering the next room creations with these refusals."""

    def __init__(self, upstream: str, refusals: list[tuple[int, dict[str, Any]]]) -> None:
        super().__init__(upstream)
        self.refusals = refusals

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/createRoom") and self.refusals:
            self.requests.append(request.path)
            status, body = self.refusals.pop(0)
            return web.json_response(body, status=status)
        return await super()._handle(request)


def test_a_refused_room_creation_is_retried_with_backoff_and_the_core_told_why(homeserver, matrix_users, tmp_path,
                                                                              monkeypatch):
    monkeypatch.setattr(retry, "MAKE_ROOM", retry.Retry(first=0.3, longest=0.6, jitter=False))

    async def main() -> None:
        door, erin = matrix_users("door"), matrix_users("erin")
        refusals = [(429, {"errcode": "M_LIMIT_EXCEEDED", "error": "slow down", "retry_after_ms": 400}),
                    (403, {"errcode": "M_FORBIDDEN", "error": "no new rooms today"})]
        async with CreateRefusingProxy(homeserver.url, refusals) as proxy:
            settings = dataclasses.replace(household(homeserver, door, tmp_path / "door", (erin.user_id, None)),
                                           homeserver=proxy.url)
            async with running(settings) as (adapter, events):
                made = await wait_until(lambda: [e.room_id for e in rooms_for(events, erin.user_id) if e.room_id],
                                        what="the room, made at the third try")
                assert adapter.online and not refusals
                assert [p for p in proxy.requests if p.endswith("/createRoom")] == [
                    "/_matrix/client/v3/createRoom"] * 3
                told = [e.waiting for e in rooms_for(events, erin.user_id) if e.room_id is None]
                assert told[0] == f"the door is making a room with {erin.user_id}"
                assert "429" in told[1] and "could not make a room" in told[1]
                assert "M_FORBIDDEN" in told[2] or "403" in told[2]
        assert joined_rooms(homeserver, door) == set(made)

    run(main())


def test_a_room_the_door_is_alone_in_that_is_no_residents_is_left(homeserver, matrix_users, tmp_path):
    """What a creation the homeserver carried out but did not answer leaves behind (an invite it could not deliver
    to another server fails the request after the room exists)."""
    async def main() -> None:
        door, fay = matrix_users("door"), matrix_users("fay")
        fays = homeserver.create_dm_room(fay.access_token, door.user_id)
        async with running(household(homeserver, door, tmp_path / "door", (fay.user_id, None))) as (adapter, events):
            await wait_until(lambda: ResidentRoomChanged(user_id=fay.user_id, room_id=fays) in events,
                             what="Fay's room")
            stray = homeserver.api("POST", "/_matrix/client/v3/createRoom", {"preset": "private_chat"},
                                   door.access_token)["room_id"]
            await wait_until(lambda: stray not in joined_rooms(homeserver, door), what="the door to leave the room")
        assert joined_rooms(homeserver, door) == {fays}

    run(main())
