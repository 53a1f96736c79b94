"""The Matrix adapter against a real Synapse, with the real call core behind it and a nio client as the phone.

Every test registers its own users and rooms on the session's homeserver. Waits are generous bounds, not
measurements; the one timing requirement checked (back within 10 s after a homeserver restart) is the issue's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import sqlite3
import stat
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import vodozemac
from nio import BadEvent, Event
from nio.crypto import OlmAccount

from intercom.core import (AddRemoteCandidates, ApplyAnswer, FaultChanged, IceCandidate, PressFeedback, RoomMembersChanged,
                           TrustRequested)
from intercom.matrix import Credential, MatrixAdapter, MatrixError, MatrixSettings, TurnServer
from intercom_dev.testbed.synapse import Homeserver

from ..support import TURN_SHARED_SECRET, TURN_URIS, User
from ..support import wait_until
from .harness import Door, Phone, run
from .sdp import ANSWER_SDP, OFFER_SDP

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ENCRYPTION = pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "e2ee"])
PHONE_PARTY = "PHONE1"


@dataclass
class Setup:
    hs: Homeserver
    door: Door
    phone: Phone
    room_id: str
    door_user: User
    owner: User


def door_settings(hs: Homeserver, user: User, room_id: str, state_dir: Path) -> MatrixSettings:
    return MatrixSettings(homeserver=hs.url, user_id=user.user_id, room_id=room_id, state_dir=state_dir,
                          credential=Credential("password", user.password), device_name="test door")


@contextlib.asynccontextmanager
async def door_and_owner(hs: Homeserver, matrix_users: Callable[..., User], tmp_path: Path, *,
                         encrypted: bool) -> AsyncIterator[Setup]:
    """The owner's DM with the door (the door joins it itself, being invited), the owner's phone, the door."""
    door_user, owner = matrix_users("door"), matrix_users("owner")
    room_id = hs.create_dm_room(owner.access_token, door_user.user_id, encrypted=encrypted)
    phone = await Phone(hs.url, owner.user_id, owner.password, tmp_path / "phone").start()
    door = Door(door_settings(hs, door_user, room_id, tmp_path / "door"), owner.user_id)
    try:
        await door.start()
        await wait_until(door.room_ready, what="the door to join its room and see the owner")
        await phone.knows_member(room_id, door_user.user_id)
        yield Setup(hs, door, phone, room_id, door_user, owner)
    finally:
        await door.close()
        await phone.close()


def invite_content(call_id: str, invitee: str, lifetime: int = 60_000) -> dict[str, Any]:
    """An invite as matrix-js-sdk sends it."""
    return {"call_id": call_id, "party_id": PHONE_PARTY, "version": "1", "lifetime": lifetime, "invitee": invitee,
            "offer": {"type": "offer", "sdp": OFFER_SDP}, "capabilities": {"m.call.transferee": False}}


def phone_call_id(tag: str) -> str:
    return f"{int(time.time() * 1000)}{tag}"


# --- calls out and in ---------------------------------------------------------------------------------------------


@ENCRYPTION
def test_door_invite_reaches_the_phone_complete_and_the_answer_is_selected(homeserver, matrix_users, tmp_path, encrypted):
    async def main() -> None:
        async with door_and_owner(homeserver, matrix_users, tmp_path, encrypted=encrypted) as s:
            s.door.press()
            invite = await s.phone.wait_for("m.call.invite")
            c = invite.content
            call_id = c["call_id"]
            sent_at = [t for t, a, ok in s.door.sends if a.event_type == "m.call.invite"][0]
            report(f"door invite ({'e2ee' if encrypted else 'plain'})", send_to_phone=invite.at - sent_at)
            assert invite.sender == s.door_user.user_id and invite.room_id == s.room_id
            assert invite.encrypted is encrypted
            assert c["version"] == "1"
            assert isinstance(c["party_id"], str) and c["party_id"]
            assert c["invitee"] == s.owner.user_id
            assert isinstance(c["lifetime"], int) and c["lifetime"] >= 60_000
            assert c["offer"] == {"type": "offer", "sdp": OFFER_SDP}
            assert not {"conf_id", "device_id", "dest_session_id", "seq"} & set(c)

            candidates = await s.phone.wait_for("m.call.candidates", call_id)
            assert candidates.content["candidates"] == [{"candidate": ""}]
            assert candidates.content["party_id"] == c["party_id"]
            assert s.phone.events.index(invite) < s.phone.events.index(candidates)

            answer = {"call_id": call_id, "party_id": PHONE_PARTY, "version": "1",
                      "answer": {"type": "answer", "sdp": ANSWER_SDP}}
            await s.phone.send(s.room_id, "m.call.answer", answer)
            select = await s.phone.wait_for("m.call.select_answer", call_id)
            assert select.content["selected_party_id"] == PHONE_PARTY
            assert select.content["party_id"] == c["party_id"] and select.content["version"] == "1"

            received = [e for e in s.door.call_events("m.call.answer") if e.content.get("call_id") == call_id]
            assert len(received) == 1
            assert received[0].sender == s.owner.user_id and dict(received[0].content) == answer
            assert isinstance(received[0].age_ms, int)
            assert ApplyAnswer(call_id=call_id, answer_sdp=ANSWER_SDP) in s.door.actions
            # Our own invite, candidates and select_answer came back in the sync: never passed to the core.
            assert all(e.sender != s.door_user.user_id for e in s.door.call_events())

    run(main())


@ENCRYPTION
def test_owner_invite_is_answered(homeserver, matrix_users, tmp_path, encrypted):
    async def main() -> None:
        async with door_and_owner(homeserver, matrix_users, tmp_path, encrypted=encrypted) as s:
            call_id = phone_call_id("OwnerCallsDoor")
            sent = asyncio.get_running_loop().time()
            await s.phone.send(s.room_id, "m.call.invite", invite_content(call_id, s.door_user.user_id))
            answer = await s.phone.wait_for("m.call.answer", call_id)
            report(f"owner invite answered ({'e2ee' if encrypted else 'plain'})", invite_to_answer=answer.at - sent)
            assert answer.sender == s.door_user.user_id and answer.encrypted is encrypted
            assert answer.content["answer"] == {"type": "answer", "sdp": ANSWER_SDP}
            assert answer.content["version"] == "1" and answer.content["party_id"]
            end = await s.phone.wait_for("m.call.candidates", call_id)
            assert end.content["candidates"] == [{"candidate": ""}]

    run(main())


@ENCRYPTION
def test_candidates_without_sdp_mid_reach_the_core_intact(homeserver, matrix_users, tmp_path, encrypted):
    async def main() -> None:
        async with door_and_owner(homeserver, matrix_users, tmp_path, encrypted=encrypted) as s:
            call_id = phone_call_id("TrickleNoMid")
            await s.phone.send(s.room_id, "m.call.invite", invite_content(call_id, s.door_user.user_id))
            await s.phone.wait_for("m.call.answer", call_id)
            # What matrix-js-sdk sends: a candidate with only sdpMLineIndex, and the bare end-of-candidates entry.
            host = "candidate:2867412384 1 udp 2122260223 127.0.0.1 50123 typ host generation 0 ufrag Hp9d"
            content = {"call_id": call_id, "party_id": PHONE_PARTY, "version": "1",
                       "candidates": [{"candidate": host, "sdpMLineIndex": 0}, {"candidate": ""}]}
            # The reason this test exists: nio cannot parse it as a candidates event.
            raw = {"type": "m.call.candidates", "event_id": "$x", "sender": s.owner.user_id,
                   "origin_server_ts": 1, "content": content}
            assert isinstance(Event.parse_event(raw), BadEvent)

            await s.phone.send(s.room_id, "m.call.candidates", content)
            arrived = await wait_until(lambda: [e for e in s.door.call_events("m.call.candidates")
                                                if e.content.get("call_id") == call_id],
                                       what="the candidates at the core")
            assert dict(arrived[0].content) == content and arrived[0].sender == s.owner.user_id
            added = await wait_until(lambda: [a for a in s.door.actions if isinstance(a, AddRemoteCandidates)
                                              and a.call_id == call_id], what="the candidates passed to media")
            assert added[0].candidates == (IceCandidate(candidate=host, sdp_mid=None, sdp_mline_index=0),
                                           IceCandidate(candidate=""))

    run(main())


def test_a_phone_that_logs_in_later_can_decrypt_the_doors_call_once_confirmed(homeserver, matrix_users, tmp_path):
    """A new device of the owner appears after the door started: the door reads its keys, gives it nothing while
    it is not trusted, and shares the room key with it as soon as the owner confirms it."""
    async def main() -> None:
        async with door_and_owner(homeserver, matrix_users, tmp_path, encrypted=True) as s:
            # A first call, declined, so the door has shared a room key before the new device exists.
            s.door.press()
            first = (await s.phone.wait_for("m.call.invite")).content["call_id"]
            await s.phone.send(s.room_id, "m.call.reject", {"call_id": first, "party_id": PHONE_PARTY, "version": "1"})
            await wait_until(lambda: s.door.core.call_id is None, what="the first call to end")

            new_phone = await Phone(homeserver.url, s.owner.user_id, s.owner.password, tmp_path / "phone2",
                                    device_name="new phone").start()
            try:
                marker = phone_call_id("NewDevice")  # sent after the login: once the door has it, it saw the login
                await new_phone.send(s.room_id, "m.call.hangup", {"call_id": marker, "party_id": "PHONE2",
                                                                   "version": "1", "reason": "user_hangup"})
                await wait_until(lambda: [e for e in s.door.call_events() if e.content.get("call_id") == marker],
                                 what="the new device's event at the door")
                device = new_phone.client.device_id
                await wait_until(lambda: device in s.door.core.trust_status()["untrusted_devices"],
                                 what="the door to see the new, untrusted device")
                s.door.feed(TrustRequested(device_id=device))
                await wait_until(lambda: device in s.door.core.trust_status()["trusted_devices"],
                                 what="the confirmation")
                s.door.press()
                invite = await new_phone.wait_for("m.call.invite")
                assert invite.content["call_id"] != first
                assert invite.encrypted and invite.content["invitee"] == s.owner.user_id
                # (The first call's events in its initial sync are rightly undecryptable: it did not exist then.)
                end = await new_phone.wait_for("m.call.candidates", invite.content["call_id"])
                assert end.encrypted and end.content["candidates"] == [{"candidate": ""}]
            finally:
                await new_phone.close()

    run(main())


# --- who the door talks to ---------------------------------------------------------------------------------------


@ENCRYPTION
def test_stranger_in_another_room_is_never_answered(homeserver, matrix_users, tmp_path, encrypted):
    async def main() -> None:
        async with door_and_owner(homeserver, matrix_users, tmp_path, encrypted=encrypted) as s:
            stranger = matrix_users("stranger")
            invited_to = homeserver.create_dm_room(stranger.access_token, s.door_user.user_id, encrypted=encrypted)
            # The door was invited; it declines (leaves and forgets the room), so the invite stops coming back.
            member = f"/_matrix/client/v3/rooms/{quote(invited_to)}/state/m.room.member/{quote(s.door_user.user_id)}"
            await wait_until(lambda: homeserver.api("GET", member, token=stranger.access_token).get("membership")
                             == "leave", what="the door to decline the invite")
            assert s.door_user.user_id not in joined_members(homeserver, stranger, invited_to)
            # ... and forgotten: not even a sync that asks for left rooms brings it back.
            asked = iter(range(1, 1000))

            def still_known() -> set[str]:
                # A new filter each time: Synapse answers a repeated sync request from its cache for 2 minutes.
                everything = urllib.parse.urlencode({"full_state": "true", "timeout": "0", "filter": json.dumps(
                    {"room": {"include_leave": True, "timeline": {"limit": next(asked)}}})})
                rooms = homeserver.api("GET", f"/_matrix/client/v3/sync?{everything}",
                                       token=s.door_user.access_token).get("rooms", {})
                return {room for part in ("join", "invite", "leave") for room in rooms.get(part, {})}
            await wait_until(lambda: invited_to not in still_known(), what="the door to forget the declined room")
            assert s.room_id in still_known()

            # Someone made the door join another room anyway (by hand): a call there still must not be answered.
            body: dict[str, Any] = {"preset": "public_chat"}
            if encrypted:
                body["initial_state"] = [{"type": "m.room.encryption", "state_key": "",
                                          "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]
            other_room = homeserver.api("POST", "/_matrix/client/v3/createRoom", body, stranger.access_token)["room_id"]
            homeserver.join_room(s.door_user.access_token, other_room)
            # Synapse refuses call invites in public rooms: make it private again once the door is in.
            homeserver.api("PUT", f"/_matrix/client/v3/rooms/{quote(other_room)}/state/m.room.join_rules/",
                           {"join_rule": "invite"}, stranger.access_token)
            # (the door has no power there, so it may not join MatrixRTC calls in that room either)
            await wait_until(lambda: RoomMembersChanged(room_id=other_room, join_rule="invite", encrypted=encrypted,
                                                        joined=frozenset({s.door_user.user_id, stranger.user_id}),
                                                        rtc_allowed=False)
                             in [e for _, e in s.door.received], what="the door to report the other room's members")
            stranger_phone = await Phone(homeserver.url, stranger.user_id, stranger.password,
                                         tmp_path / "stranger").start()
            try:
                await stranger_phone.knows_member(other_room, s.door_user.user_id)
                call_id = phone_call_id("Stranger")
                await stranger_phone.send(other_room, "m.call.invite", invite_content(call_id, s.door_user.user_id))
                reject = await stranger_phone.wait_for("m.call.reject", call_id)
                assert reject.room_id == other_room
                assert not stranger_phone.of_type("m.call.answer", call_id)
                assert [e.sender for e in s.door.call_events("m.call.invite")] == [stranger.user_id]
                assert not s.door.sent("m.call.answer")
            finally:
                await stranger_phone.close()

    run(main())


@ENCRYPTION
def test_room_with_three_members_neither_calls_nor_answers(homeserver, matrix_users, tmp_path, encrypted):
    async def main() -> None:
        async with door_and_owner(homeserver, matrix_users, tmp_path, encrypted=encrypted) as s:
            third = matrix_users("third")
            homeserver.api("POST", f"/_matrix/client/v3/rooms/{quote(s.room_id)}/invite",
                           {"user_id": third.user_id}, s.owner.access_token)
            homeserver.join_room(third.access_token, s.room_id)
            await wait_until(lambda: s.door.core.room_problem() and "3 members" in s.door.core.room_problem(),
                             what="the door to see three members")
            facts = [e for _, e in s.door.received if isinstance(e, RoomMembersChanged) and e.room_id == s.room_id]
            assert facts[-1].joined == {s.door_user.user_id, s.owner.user_id, third.user_id}
            assert facts[-1].join_rule == "invite"

            s.door.press()
            refused = await wait_until(lambda: [a for a in s.door.actions if isinstance(a, PressFeedback)],
                                       what="the press to be handled")
            assert refused == [PressFeedback(accepted=False, reason=s.door.core.room_problem())]

            call_id = phone_call_id("ThreeMembers")
            await s.phone.knows_member(s.room_id, third.user_id)
            await s.phone.send(s.room_id, "m.call.invite", invite_content(call_id, s.door_user.user_id))
            await s.phone.wait_for("m.call.reject", call_id)
            assert not s.phone.of_type("m.call.answer")
            assert not s.phone.of_type("m.call.invite")
            assert [a.event_type for _, a, _ in s.door.sends] == ["m.call.reject"]

    run(main())


# --- restarts -------------------------------------------------------------------------------------------------------


def test_homeserver_restart_while_idle(homeserver, matrix_users, tmp_path):
    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with door_and_owner(homeserver, matrix_users, tmp_path, encrypted=False) as s:
            await asyncio.to_thread(homeserver.stop)
            await wait_until(lambda: (False in [o for _, o in s.door.connection_changes()]),
                             what="the door to notice the homeserver is gone")
            assert not s.door.core.online
            await asyncio.sleep(2.0)  # idle while the server is down: the door keeps retrying

            await asyncio.to_thread(homeserver.start)
            answering = loop.time()  # start() returns as soon as /versions answers
            await wait_until(lambda: s.door.core.online, what="the door to be back online")
            back = loop.time()
            s.door.press()
            invite_sent = await wait_until(lambda: [t for t, a, ok in s.door.sends
                                                    if ok and a.event_type == "m.call.invite"],
                                           what="the door's invite to be accepted by the homeserver")
            arrived = await s.phone.wait_for("m.call.invite")
            changes = [online for _, online in s.door.connection_changes()]
            assert changes == [True, False, True]
            report("homeserver restart", online_after=back - answering, invite_sent_after=invite_sent[0] - answering,
                   invite_at_phone_after=arrived.at - answering)
            assert invite_sent[0] - answering < 10.0

    run(main())


@ENCRYPTION
def test_door_restart_is_the_same_device_and_rings_only_for_live_invites(homeserver, matrix_users, tmp_path, encrypted):
    async def main() -> None:
        async with door_and_owner(homeserver, matrix_users, tmp_path, encrypted=encrypted) as s:
            state = tmp_path / "door"
            device = s.door.adapter.device_id
            saved = (state / "session.json").read_text()
            assert json.loads(saved)["device_id"] == device
            assert stat.S_IMODE(state.stat().st_mode) == 0o700
            files = [p for p in state.rglob("*") if p.is_file()]
            assert any(p.suffix == ".db" for p in files)
            assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o600}
            await s.door.close()
            # The Olm account is pickled with the door's own random key, kept outside the store, not nio's constant.
            key = (state / "crypto.key").read_text().strip()
            assert len(key) >= 40 and key != "DEFAULT_KEY"
            (db,) = [p for p in files if p.suffix == ".db"]
            with contextlib.closing(sqlite3.connect(db)) as store:
                (pickled,) = store.execute("SELECT account FROM accounts").fetchone()
            assert OlmAccount.from_pickle(pickled, key).identity_keys["ed25519"]
            with pytest.raises((vodozemac.PickleException, vodozemac.LibolmPickleException)):
                OlmAccount.from_pickle(pickled, "DEFAULT_KEY")

            # While the door is down: a short-lived invite goes stale, one is hung up, one is still ringing.
            stale, settled, live = phone_call_id("Stale"), phone_call_id("Settled"), phone_call_id("Live")
            await s.phone.send(s.room_id, "m.call.invite", invite_content(stale, s.door_user.user_id, lifetime=4_000))
            await s.phone.send(s.room_id, "m.call.invite", invite_content(settled, s.door_user.user_id))
            await s.phone.send(s.room_id, "m.call.hangup", {"call_id": settled, "party_id": PHONE_PARTY,
                                                             "version": "1", "reason": "user_hangup"})
            await asyncio.sleep(1.5)  # the stale invite is now older than its lifetime minus the core's grace
            await s.phone.send(s.room_id, "m.call.invite", invite_content(live, s.door_user.user_id))
            # A burst behind it: more events than the default sync timeline limit (10), which would skip the invite.
            for n in range(12):
                candidate = f"candidate:{n} 1 udp {2122260223 - n} 127.0.0.1 {50000 + n} typ host"
                await s.phone.send(s.room_id, "m.call.candidates", {
                    "call_id": live, "party_id": PHONE_PARTY, "version": "1",
                    "candidates": [{"candidate": candidate, "sdpMid": "0", "sdpMLineIndex": 0}]})

            door = Door(door_settings(homeserver, s.door_user, s.room_id, state), s.owner.user_id)
            try:
                await door.start()
                assert door.adapter.device_id == device
                assert (state / "session.json").read_text() == saved  # no new login
                answer = await s.phone.wait_for("m.call.answer", live)
                assert answer.encrypted is encrypted
                assert not s.phone.of_type("m.call.answer", stale) and not s.phone.of_type("m.call.answer", settled)
                stale_seen = [e for e in door.call_events("m.call.invite") if e.content["call_id"] == stale]
                assert len(stale_seen) == 1 and stale_seen[0].age_ms >= 1_000
                assert not [e for e in door.call_events("m.call.invite") if e.content["call_id"] == settled]
                def added() -> list[IceCandidate]:
                    return [c for a in door.actions if isinstance(a, AddRemoteCandidates) and a.call_id == live
                            for c in a.candidates]
                await wait_until(lambda: len(added()) >= 12, what="the burst of candidates passed to media")
                assert [c.candidate.split()[0] for c in added()] == [f"candidate:{n}" for n in range(12)]
            finally:
                await door.close()
            devices = homeserver.api("GET", "/_matrix/client/v3/devices", token=s.door_user.access_token)["devices"]
            assert sorted(d["device_id"] for d in devices) == sorted([device, s.door_user.device_id])

    run(main())


# --- logging in ----------------------------------------------------------------------------------------------------


def test_a_wrong_password_is_a_fault_retried_slowly_and_never_shown(homeserver, matrix_users, tmp_path):
    """A refused password cannot be fixed by retrying soon, but may be fixed on the homeserver: the door shows the
    fault (naming the setting, never the secret) and keeps trying, slowly."""
    async def main() -> None:
        user = matrix_users("door")
        events: list[Any] = []
        adapter = MatrixAdapter(MatrixSettings(homeserver=homeserver.url, user_id=user.user_id, room_id="!x:localhost",
                                               state_dir=tmp_path / "door", device_name="test door",
                                               credential=Credential("password", "not the password")),
                                events.append)
        start = asyncio.ensure_future(adapter.start())
        try:
            await wait_until(lambda: [e for e in events if isinstance(e, FaultChanged)], what="the fault")
            fault = next(e for e in events if isinstance(e, FaultChanged))
            assert fault.source == "matrix" and "password" in fault.fault and "matrix.password_file" in fault.fault
            assert "not the password" not in fault.fault
            await asyncio.sleep(1.0)
            assert not start.done(), "the door gave up instead of retrying"
        finally:
            await adapter.close()
            with pytest.raises(MatrixError):
                await start
        assert not (tmp_path / "door" / "session.json").exists()

    run(main())


# --- TURN ---------------------------------------------------------------------------------------------------------


def test_turn_servers_from_the_homeserver(turn_homeserver, matrix_users, tmp_path):
    async def main() -> None:
        user = matrix_users("door", on=turn_homeserver)
        events: list[Any] = []
        # Logged in with an access token this time: the adapter takes the token's device.
        adapter = MatrixAdapter(MatrixSettings(homeserver=turn_homeserver.url, user_id=user.user_id,
                                               room_id="!none:localhost", state_dir=tmp_path / "door",
                                               credential=Credential("access_token", user.access_token),
                                               device_name="test door"), events.append)
        try:
            await adapter.start()
            assert adapter.device_id == user.device_id
            servers = await adapter.turn_servers()
            assert await adapter.turn_servers() == servers  # cached
        finally:
            await adapter.close()
        assert len(servers) == 1
        server = servers[0]
        assert server.urls == (TURN_URIS[2], TURN_URIS[1], TURN_URIS[0])  # UDP, TCP, TLS
        expiry, mxid = server.username.split(":", 1)
        assert mxid == user.user_id and 3000 < int(expiry) - time.time() <= 3600
        expected = base64.b64encode(hmac.new(TURN_SHARED_SECRET.encode(), server.username.encode(),
                                             hashlib.sha1).digest()).decode()
        assert server.credential == expected
        assert TurnServer(server.urls, server.username, server.credential) == server
        assert RoomMembersChanged(room_id="!none:localhost", joined=frozenset(), join_rule=None) in events

    run(main())


def test_no_turn_configured_is_an_empty_list(homeserver, matrix_users, tmp_path):
    async def main() -> None:
        user = matrix_users("door")
        adapter = MatrixAdapter(MatrixSettings(homeserver=homeserver.url, user_id=user.user_id, room_id="!x:localhost",
                                               state_dir=tmp_path / "door", device_name="test door",
                                               credential=Credential("password", user.password)), lambda e: None)
        try:
            await adapter.start()
            assert await adapter.turn_servers() == []
        finally:
            await adapter.close()

    run(main())


# --- helpers --------------------------------------------------------------------------------------------------------


def quote(room_id: str) -> str:
    return urllib.parse.quote(room_id, safe="")


def joined_members(hs: Homeserver, user: User, room_id: str) -> set[str]:
    return set(hs.api("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/joined_members",
                      token=user.access_token)["joined"])


def report(what: str, **seconds: float) -> None:
    """Measured durations, printed for `pytest -s` and the engineer's notes (not asserted)."""
    print(f"\n[measured] {what}: " + ", ".join(f"{k}={v * 1000:.0f} ms" for k, v in seconds.items()))


def device_keys(hs: Homeserver, asker: User, user: User, device_id: str) -> dict | None:
    """The device keys the homeserver publishes for ``user``'s ``device_id`` (None when it has none), as another
    user (``asker``) sees them."""
    answer = hs.api("POST", "/_matrix/client/v3/keys/query", {"device_keys": {user.user_id: []}},
                    token=asker.access_token)
    return answer["device_keys"].get(user.user_id, {}).get(device_id)


@pytest.mark.parametrize("credential", ["password", "access_token"])
def test_a_refused_session(homeserver, matrix_users, tmp_path, credential):
    """The saved token stops working (the device was signed out elsewhere, which also drops its keys): with a
    password the door logs in again as the same device and uploads the same keys again, so phones keep trusting
    it; with an access token it cannot, and the fault says what to do."""
    async def main() -> None:
        user, asker = matrix_users("door"), matrix_users("asker")
        secret = user.password if credential == "password" else user.access_token
        settings = MatrixSettings(homeserver=homeserver.url, user_id=user.user_id, room_id="!x:localhost",
                                  state_dir=tmp_path / "door", credential=Credential(credential, secret),
                                  device_name="test door")
        first = MatrixAdapter(settings, lambda e: None)
        await first.start()
        old_device = first.device_id
        await wait_until(lambda: device_keys(homeserver, asker, user, old_device) is not None, what="the door's keys")
        keys = device_keys(homeserver, asker, user, old_device)["keys"]
        token = json.loads((tmp_path / "door" / "session.json").read_text())["access_token"]
        await first.close()
        homeserver.api("POST", "/_matrix/client/v3/logout", {}, token)
        assert device_keys(homeserver, asker, user, old_device) is None

        events: list[Any] = []
        again = MatrixAdapter(settings, events.append)
        start = asyncio.ensure_future(again.start())
        try:
            if credential == "access_token":
                await wait_until(lambda: [e for e in events if isinstance(e, FaultChanged)], what="the fault")
                fault = next(e for e in events if isinstance(e, FaultChanged)).fault
                assert "access token" in fault and "matrix.access_token_file" in fault and secret not in fault
                assert not start.done()
                return
            await asyncio.wait_for(start, 30)
            assert again.online and again.device_id == old_device
            saved = json.loads((tmp_path / "door" / "session.json").read_text())
            assert saved["device_id"] == old_device and saved["access_token"] != token
            await wait_until(lambda: device_keys(homeserver, asker, user, old_device) is not None,
                             what="the door's keys uploaded again")
            assert device_keys(homeserver, asker, user, old_device)["keys"] == keys
        finally:
            await again.close()
            await asyncio.gather(start, return_exceptions=True)

    run(main())
