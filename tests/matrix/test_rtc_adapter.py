"""The Matrix side of MatrixRTC, without a homeserver: what the door sends (membership, ring, media key), what it
takes from a sync (memberships from the timeline and the state, declines), when it may join calls in a room, and
which media keys count."""

from __future__ import annotations

import base64
from types import SimpleNamespace

import pytest

from intercom.core import RtcDeclineReceived, RtcMembershipChanged
from intercom.matrix import routing, rtckeys
from intercom.matrix.rtc import foci_from, membership_content, ring_content

ROOM = "!room:example.org"
OWNER = "@owner:example.org"


def test_the_doors_membership_is_js_sdks_session_form_with_its_livekit_identity():
    content = membership_content("@door:example.org", "DOORDEV", ROOM, "https://rtc.example.org")
    assert content["application"] == "m.call" and content["call_id"] == "" and content["scope"] == "m.room"
    assert content["device_id"] == "DOORDEV" and content["membershipID"] == "@door:example.org:DOORDEV"
    assert content["foci_preferred"] == [{"type": "livekit", "livekit_service_url": "https://rtc.example.org",
                                          "livekit_alias": ROOM}]
    assert content["expires"] > 0 and isinstance(content["created_ts"], int)


def test_the_ring_mentions_the_resident_references_the_membership_and_names_the_slot():
    content = ring_content(OWNER, "$member", 120_000)
    assert content["notification_type"] == "ring" and OWNER in content["m.mentions"]["user_ids"]
    assert content["m.relates_to"] == {"rel_type": "m.reference", "event_id": "$member"}
    assert content["lifetime"] == 90_000  # the MSC's most
    assert content["slot_id"] == "m.call#ROOM"


def test_foci_are_read_from_transports_and_well_known_and_junk_is_skipped():
    assert foci_from({"rtc_transports": [{"type": "livekit", "livekit_service_url": "https://a.example/"}]},
                     "rtc_transports") == ["https://a.example"]
    junk = {"k": [None, 3, {"type": "other", "livekit_service_url": "https://b"},
                  {"type": "livekit", "livekit_service_url": "javascript:alert(1)"}]}
    assert foci_from(junk, "k") == [] and foci_from("nonsense", "k") == []


def _event(source, decrypted=False):
    return SimpleNamespace(source=source, decrypted=decrypted)


def test_memberships_come_from_timeline_and_state_and_declines_from_the_timeline():
    state = {"type": "org.matrix.msc3401.call.member", "state_key": f"_{OWNER}_PHONE_m.call", "sender": OWNER,
             "content": {"application": "m.call"}, "event_id": "$m", "unsigned": {"age": 40}}
    got = routing.to_rtc_event(ROOM, state)
    assert got == RtcMembershipChanged(room_id=ROOM, sender=OWNER, state_key=f"_{OWNER}_PHONE_m.call",
                                       content={"application": "m.call"}, age_ms=40, event_id="$m")
    assert routing.to_rtc_event(ROOM, _event(state)) == got
    decline = {"type": "org.matrix.msc4310.rtc.decline", "sender": OWNER, "event_id": "$d", "content": {},
               "unsigned": {"age": 5}}
    assert routing.to_rtc_event(ROOM, _event(decline, decrypted=True), device_id="PHONE") == RtcDeclineReceived(
        room_id=ROOM, sender=OWNER, age_ms=5, event_id="$d", encrypted=True, device_id="PHONE")
    assert routing.to_rtc_event(ROOM, _event({"type": "m.room.message", "sender": OWNER})) is None
    # a membership without a state key is not a state event: not a membership
    assert routing.to_rtc_event(ROOM, {**state, "state_key": None}) is None


class _Levels:
    def __init__(self, allowed):
        self.allowed = allowed

    def can_user_send_state(self, user_id, event_type):
        return self.allowed


def test_the_door_may_join_calls_where_the_power_levels_or_room_version_12_creators_say_so():
    door = "@door:example.org"
    assert routing.rtc_allowed(SimpleNamespace(power_levels=_Levels(True), room_version="10"), door)
    assert not routing.rtc_allowed(SimpleNamespace(power_levels=_Levels(False), room_version="10"), door)
    creator_12 = SimpleNamespace(power_levels=_Levels(False), room_version="12")
    assert routing.rtc_allowed(creator_12, door, frozenset({door}))
    assert not routing.rtc_allowed(creator_12, door, frozenset({OWNER}))
    # an older room version: a creator may have been demoted, the power levels decide
    assert not routing.rtc_allowed(SimpleNamespace(power_levels=_Levels(False), room_version="10"), door,
                                   frozenset({door}))


def _key_content(**over):
    content = rtckeys.key_content(ROOM, f"{OWNER}:PHONE", "PHONE", b"k" * 16, 3)
    content.update(over)
    return content


def test_a_media_key_counts_only_for_the_device_that_sent_it():
    key = rtckeys.parse(OWNER, "PHONE", _key_content())
    assert isinstance(key, rtckeys.MediaKey)
    assert (key.identity, key.key, key.index, key.room_id) == (f"{OWNER}:PHONE", b"k" * 16, 3, ROOM)
    # the same content from another device of the owner claims a device that did not send it
    assert "another device" in rtckeys.parse(OWNER, "LAPTOP", _key_content())


@pytest.mark.parametrize("content, why", [
    ("not an object", "not an object"),
    ({"keys": {"index": 0, "key": "x"}}, "no room_id"),
    (_key_content(keys={"index": 300, "key": base64.b64encode(b"k" * 16).decode()}), "index"),
    (_key_content(keys={"index": 1, "key": "not base64!"}), "base64"),
    (_key_content(keys={"index": 1, "key": base64.b64encode(b"k").decode()}), "bytes"),
    (_key_content(member={"id": "@x:example.org:PHONE", "claimed_device_id": "PHONE"}), "another device"),
])
def test_malformed_media_keys_are_dropped_with_a_reason(content, why):
    assert why in rtckeys.parse(OWNER, "PHONE", content)


def test_the_olm_hook_takes_media_keys_only_from_checked_devices_and_passes_everything_else_on():
    passed, got = [], []
    olm = SimpleNamespace(_handle_olm_event=lambda *a: passed.append(a) or "handled")
    client = SimpleNamespace(olm=olm)
    checked = {("curve-phone", "ed-phone"): "PHONE"}
    rtckeys.install(client, lambda sender, curve, ed: checked.get((curve, ed)), got.append)
    rtckeys.install(client, lambda *a: None, got.append)  # idempotent: not wrapped twice
    payload = {"type": "io.element.call.encryption_keys", "keys": {"ed25519": "ed-phone"}, "content": _key_content()}
    assert olm._handle_olm_event(OWNER, "curve-phone", payload) is None
    assert [k.device_id for k in got] == ["PHONE"]
    olm._handle_olm_event(OWNER, "curve-thief", {**payload, "keys": {"ed25519": "ed-thief"}})
    assert len(got) == 1  # an unchecked device's key is dropped
    assert olm._handle_olm_event(OWNER, "curve-phone", {"type": "m.room_key"}) == "handled"
    assert passed == [(OWNER, "curve-phone", {"type": "m.room_key"})]
