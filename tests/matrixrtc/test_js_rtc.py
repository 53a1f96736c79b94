"""Element Call's calls, owner to owner: two matrix-js-sdk clients in headless Chromium, each doing what Element Call
does (js-sdk 43's MatrixRTC session for membership, ringing and media keys; livekit-client 2.23 for media), against
a real Synapse, a real LiveKit server and our token service (the ``rtc_stack`` fixture).

This is the owner's side that the door will meet: what js-sdk sends (membership, ring, decline, keys), how it
decides that a ring should ring, what identity LiveKit gives each participant, and that media flows, encrypted in
encrypted rooms. The page side is ``tests/interop/js/src/rtc.js``.
"""

from __future__ import annotations

import asyncio
import base64
from urllib.parse import quote

import pytest

from ..interop.conftest import interop, measured  # noqa: F401 (fixtures: the built page served, the numbers)
from ..interop.harness import JsClient, open_browser

pytestmark = pytest.mark.integration

MEMBER_EVENT = "org.matrix.msc3401.call.member"
NOTIFICATION_EVENT = "org.matrix.msc4075.rtc.notification"
DECLINE_EVENT = "org.matrix.msc4310.rtc.decline"
KEYS_EVENT = "io.element.call.encryption_keys"


@pytest.fixture(autouse=True)
def _print_measured(measured, request):
    """The numbers each test measured, printed after it (shown with ``-s`` or ``-rP``; the interop suite's summary
    lists them too when both suites run in one session)."""
    yield
    if measured:
        print(f"\n{request.node.name}: " + ", ".join(f"{k}={v}" for k, v in measured.items()))


def make_room(hs, caller, callee, *, encrypted: bool) -> str:
    """A direct room as Element Web makes one (trusted private chat: both members may notify the room), joined by
    both. Encrypted rooms get m.room.encryption from the start."""
    body = {"preset": "trusted_private_chat", "is_direct": True, "invite": [callee.user_id]}
    if encrypted:
        body["initial_state"] = [{"type": "m.room.encryption", "state_key": "",
                                  "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]
    room_id = hs.api("POST", "/_matrix/client/v3/createRoom", body, token=caller.access_token)["room_id"]
    hs.api("POST", f"/_matrix/client/v3/join/{quote(room_id, safe='')}", {}, token=callee.access_token)
    return room_id


def identity(client: JsClient) -> str:
    """The LiveKit participant identity our focus gives a js-sdk device (as lk-jwt-service's legacy endpoint)."""
    return f"{client.user_id}:{client.device_id}"


async def livekit_participants(livekit, room: str) -> list:
    """What the LiveKit server itself knows of the room's participants and their tracks (RoomService)."""
    from livekit import api

    async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
        reply = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
    return list(reply.participants)


def since(later: dict | None, earlier: dict | None) -> int | None:
    """Milliseconds between two page stamps ``{t, wall}`` (wall clock: the stamps may come from two pages)."""
    if not later or not earlier:
        return None
    return later["wall"] - earlier["wall"]


async def ring_and_answer(hs, a: JsClient, b: JsClient, room_id: str, measured: dict) -> tuple[dict, dict]:
    """A joins and rings B; B sees the ring and joins; both decode the other's video and hear the other's audio."""
    joined_a = await a.rtc_join(room_id, ring=b.user_id)
    assert joined_a["transportSource"] == "rtc/transports", joined_a
    assert joined_a["sfu"]["claims"]["sub"] == identity(a), joined_a["sfu"]
    assert joined_a["sfu"]["claims"]["video"]["room"] == room_id, joined_a["sfu"]

    ring = await b.wait_rtc_ring(room_id, sender=a.user_id)
    content = ring["content"]
    assert ring["type"] == NOTIFICATION_EVENT
    assert content["notification_type"] == "ring" and content["m.call.intent"] == "video", content
    # js-sdk 43 mentions the room, never the user it means to ring (Element Web's DMs let both notify the room)
    assert content["m.mentions"] == {"user_ids": [], "room": True}, content
    assert content["slot_id"] == "m.call#ROOM" and content["msc4354_sticky_key"] == "m.call#ROOM", content
    assert content["lifetime"] == 90000 and isinstance(content["sender_ts"], int), content
    members_a = await a.rtc_members(room_id)
    own = [m for m in members_a["members"] if m["userId"] == a.user_id]
    assert content["m.relates_to"] == {"rel_type": "m.reference", "event_id": own[0]["eventId"]}, content
    sent = (await a.rtc_call())["notificationSent"]
    assert sent["eventId"] == ring["eventId"], sent
    # js-sdk 43's own receiving rules refuse it here: no org.matrix.msc4143.rtc.slot is open in the room
    assert ring["valid"] is False and "Slot m.call#ROOM does not exist" in ring["invalidReason"], ring

    joined_b = await b.rtc_join(room_id, discovery="well-known")
    assert joined_b["transportSource"] == "well-known", joined_b
    assert joined_b["transport"] == joined_a["transport"], (joined_a["transport"], joined_b["transport"])

    at_a = await a.wait_rtc_frames(10, identity=identity(b))
    at_b = await b.wait_rtc_frames(10, identity=identity(a))
    await a.wait_rtc_audio(identity=identity(b))
    heard = await b.wait_rtc_audio(identity=identity(a))

    call_a, call_b = await a.rtc_call(), await b.rtc_call()
    measured["a_join_to_ring_seen_ms"] = since(ring, call_a["times"]["joinStart"])
    measured["a_join_to_published_ms"] = since(call_a["times"]["published"], call_a["times"]["joinStart"])
    measured["b_join_to_first_frame_ms"] = since(at_b["participant"]["element"]["firstFrame"],
                                                 call_b["times"]["joinStart"])
    measured["a_first_frame_after_b_join_ms"] = since(at_a["participant"]["element"]["firstFrame"],
                                                      call_b["times"]["joinStart"])
    measured["frame_size_at_b"] = "x".join(map(str, at_b["participant"]["element"]["lastFrameSize"]))
    measured["codec"] = at_b["participant"]["video"]["codec"]
    measured["peak_rms_at_b"] = round(heard["participant"]["element"]["peakRms"], 3)
    return at_a, at_b


def check_memberships(members: dict, a: JsClient, b: JsClient, focus_url: str, room_id: str) -> None:
    """Both devices in js-sdk's view of the session, with the state events js-sdk 43 sends."""
    got = {(m["userId"], m["deviceId"]): m for m in members["members"]}
    assert set(got) == {(a.user_id, a.device_id), (b.user_id, b.device_id)}, got
    for m in got.values():
        assert m["rtcBackendIdentity"] == f"{m['userId']}:{m['deviceId']}", m
        assert m["transport"]["livekit_service_url"] == focus_url, m
        assert m["callIntent"] == "video", m
    events = {e["stateKey"]: e for e in members["stateEvents"] if e["content"]}
    event = events[f"_{a.user_id}_{a.device_id}_m.call"]
    content = event["content"]
    assert content["application"] == "m.call" and content["call_id"] == "" and content["scope"] == "m.room", content
    assert content["device_id"] == a.device_id and content["membershipID"] == identity(a), content
    assert content["focus_active"] == {"type": "livekit", "focus_selection": "multi_sfu"}, content
    assert content["foci_preferred"] == [{"type": "livekit", "livekit_service_url": focus_url,
                                          "livekit_alias": room_id}], content
    assert content["expires"] == 4 * 3600 * 1000 and content["m.call.intent"] == "video", content


async def a_leaves(a: JsClient, b: JsClient, room_id: str, measured: dict) -> None:
    left = await a.rtc_leave()
    assert left["membershipLeaveSent"] is True, left
    gone = await b.wait_rtc_members(room_id, lambda ms: all(m["userId"] != a.user_id for m in ms),
                                    f"{a.user_id} to leave the session")
    leave_start = (await a.rtc_call())["times"]["leaveStart"]
    measured["a_leave_sent_ms"] = since(left, leave_start)
    measured["a_leave_to_membership_gone_at_b_ms"] = since(gone, leave_start)
    event = next(e for e in gone["stateEvents"] if e["stateKey"] == f"_{a.user_id}_{a.device_id}_m.call")
    assert event["content"] == {}, event  # leaving empties the member event (the delayed leave, sent now)

    async def participant_gone():
        call = await b.rtc_call()
        return all(p["identity"] != identity(a) or p["disconnected"] for p in call["participants"])
    await b.wait_for(participant_gone, f"{identity(a)} to leave the LiveKit room")


def test_a_rings_b_b_answers_media_both_ways_then_a_leaves(interop, rtc_stack, rtc_users, tmp_path, measured):
    hs = rtc_stack.homeserver
    user_a, user_b = rtc_users("caller"), rtc_users("callee")
    room_id = make_room(hs, user_a, user_b, encrypted=False)

    async def main():
        async with open_browser(interop, tmp_path / "browser") as browser:
            a, b = await browser.client("a"), await browser.client("b")
            await a.start(hs.url, user_a)
            await b.start(hs.url, user_b)
            at_a, at_b = await ring_and_answer(hs, a, b, room_id, measured)
            for seen in (at_a, at_b):
                assert seen["e2ee"]["wanted"] is False and seen["e2ee"]["enabled"] is False, seen["e2ee"]
                assert not any(t["encrypted"] for t in seen["participant"]["tracks"]), seen["participant"]
                assert {t["kind"] for t in seen["participant"]["tracks"]} == {"audio", "video"}
            check_memberships(await b.rtc_members(room_id), a, b, rtc_stack.focus.url, room_id)
            assert await a.rtc_to_device() == [] and await b.rtc_keys() == []  # no media keys without encryption
            await a_leaves(a, b, room_id, measured)

    asyncio.run(main())


def test_encrypted_room_media_is_end_to_end_encrypted_with_keys_over_to_device(interop, rtc_stack, rtc_users,
                                                                                tmp_path, measured):
    hs = rtc_stack.homeserver
    user_a, user_b = rtc_users("caller"), rtc_users("callee")
    room_id = make_room(hs, user_a, user_b, encrypted=True)

    async def main():
        async with open_browser(interop, tmp_path / "browser") as browser:
            a, b = await browser.client("a"), await browser.client("b")
            await a.start(hs.url, user_a, encryption=True)
            await b.start(hs.url, user_b, encryption=True)
            at_a, at_b = await ring_and_answer(hs, a, b, room_id, measured)
            ring = (await b.rtc_rings(room_id))[0]
            assert ring["encrypted"] is True, ring  # the ring travelled as m.room.encrypted

            # LiveKit announced every track as encrypted (GCM), to both pages and in its own books
            for seen in (at_a, at_b):
                assert seen["e2ee"] == {"wanted": True, "enabled": True, "localEncrypted": True}, seen["e2ee"]
                assert all(t["encrypted"] for t in seen["participant"]["tracks"]), seen["participant"]
            from livekit.protocol import models

            on_server = await livekit_participants(rtc_stack.livekit, room_id)
            assert {p.identity for p in on_server} == {identity(a), identity(b)}, on_server
            tracks = [t for p in on_server for t in p.tracks]
            assert len(tracks) == 4 and all(t.encryption == models.Encryption.Type.GCM for t in tracks), tracks

            # the media keys: 16 random bytes per sender, index 0, sent to each other device as an encrypted
            # to-device message, handed to LiveKit for identity "user:device"
            for receiver, sender in ((b, a), (a, b)):
                messages = [m for m in await receiver.rtc_to_device() if m["sender"] == sender.user_id]
                assert messages, await receiver.rtc_to_device()
                message = messages[0]
                assert message["encrypted"] is True and message["wireType"] == "m.room.encrypted", message
                content = message["content"]
                assert set(content) == {"keys", "member", "room_id", "session", "sent_ts"}, content
                assert content["room_id"] == room_id and content["keys"]["index"] == 0, content
                assert content["member"] == {"id": identity(sender), "claimed_device_id": sender.device_id}, content
                assert content["session"] == {"application": "m.call", "call_id": "", "scope": "m.room"}, content
                key = base64.b64decode(content["keys"]["key"])
                assert len(key) == 16, content
                handed = [k for k in await receiver.rtc_keys() if k["identity"] == identity(sender)]
                assert handed and handed[0]["index"] == 0 and base64.b64decode(handed[0]["key"]) == key, handed
                own = [k for k in await sender.rtc_keys() if k["own"]]
                assert own and base64.b64decode(own[0]["key"]) == key, own  # the sender encrypts with that key

            # the only decryption failures: frames that came before their sender's key (js-sdk shares the first key
            # at once and uses it at once; the key travels over /sync, the frames over LiveKit)
            errors = 0
            for receiver, sender in ((b, a), (a, b)):
                failures = (await receiver.rtc_call())["encryptionErrors"]
                key_at = next(k for k in await receiver.rtc_keys() if k["identity"] == identity(sender))["wall"]
                assert all(e["message"].startswith("MissingKey") and e["identity"] == identity(sender)
                           and e["wall"] <= key_at + 1000 for e in failures), (key_at, failures)
                errors += len(failures)
            measured["missing_key_errors"] = errors
            measured["key_received_after_b_join_ms"] = since(
                next(k for k in await b.rtc_keys() if not k["own"]), (await b.rtc_call())["times"]["joinStart"])
            check_memberships(await b.rtc_members(room_id), a, b, rtc_stack.focus.url, room_id)
            await a_leaves(a, b, room_id, measured)

    asyncio.run(main())


def test_a_ring_declined_and_an_open_slot_makes_it_valid(interop, rtc_stack, rtc_users, tmp_path, measured):
    """With the room's rtc.slot open (as Element Web opens it), js-sdk 43 takes the ring as one that should ring;
    B declines it as js-sdk does, and A sees the decline referencing its notification."""
    hs = rtc_stack.homeserver
    user_a, user_b = rtc_users("caller"), rtc_users("callee")
    room_id = make_room(hs, user_a, user_b, encrypted=False)

    async def main():
        async with open_browser(interop, tmp_path / "browser") as browser:
            a, b = await browser.client("a"), await browser.client("b")
            await a.start(hs.url, user_a)
            await b.start(hs.url, user_b)
            await a.rtc_join(room_id, ring=b.user_id, open_slot=True, intent="audio")
            ring = await b.wait_rtc_ring(room_id, sender=a.user_id)
            assert ring["valid"] is True, ring
            assert ring["content"]["m.call.intent"] == "audio", ring
            slot = (await b.rtc_members(room_id))["slot"]
            assert slot == {"status": "open", "application": {"type": "m.call"}}, slot

            decline_id = await b.rtc_decline(room_id, ring["eventId"])

            async def declined():
                return next((d for d in await a.rtc_declines() if d["eventId"] == decline_id), None)
            decline = await a.wait_for(declined, "the decline at A")
            assert decline["sender"] == b.user_id and decline["declines"] == ring["eventId"], decline
            assert decline["content"] == {"m.relates_to": {"rel_type": "m.reference", "event_id": ring["eventId"]},
                                          "msc4354_sticky_key": ring["eventId"]}, decline
            measured["decline_seen_at_a_ms"] = since(decline, ring)

    asyncio.run(main())
