"""nio events to core events (intercom.matrix.routing), from raw JSON as Synapse sends it, through nio's parser."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from nio import BadEvent, CallCandidatesEvent, CallHangupEvent, CallInviteEvent, Event, MegolmEvent, UnknownEvent

from intercom.core import CallEventReceived, RoomMembersChanged
from intercom.matrix import routing

ROOM = "!room:localhost"
EVENTS = Path(__file__).parent / "events"


def raw(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / f"{name}.json").read_text())


def test_typed_invite_keeps_every_field_and_its_age():
    source = raw("invite")
    event = Event.parse_event(copy.deepcopy(source))
    assert isinstance(event, CallInviteEvent)
    assert routing.to_core_event(ROOM, event) == CallEventReceived(
        room_id=ROOM, sender="@owner:localhost", event_type="m.call.invite", content=source["content"],
        age_ms=1234, event_id="$inv1:localhost")


def test_js_sdk_candidates_become_a_bad_event_and_still_arrive_intact():
    source = raw("candidates_js_sdk")
    event = Event.parse_event(copy.deepcopy(source))
    assert isinstance(event, BadEvent)  # nio's schema wants sdpMid and sdpMLineIndex on every entry
    converted = routing.to_core_event(ROOM, event)
    assert converted is not None and converted.content == source["content"] and converted.age_ms == 90


def test_candidates_nio_accepts_are_typed_and_arrive_the_same_way():
    source = raw("candidates_js_sdk")
    source["content"]["candidates"] = source["content"]["candidates"][:1]
    event = Event.parse_event(copy.deepcopy(source))
    assert isinstance(event, CallCandidatesEvent)
    assert routing.to_core_event(ROOM, event).content == source["content"]


def test_event_types_nio_does_not_know_arrive_as_unknown_events():
    source = raw("select_answer")
    event = Event.parse_event(copy.deepcopy(source))
    assert isinstance(event, UnknownEvent)
    converted = routing.to_core_event(ROOM, event)
    assert converted.event_type == "m.call.select_answer" and converted.content == source["content"]


def test_version_0_hangup_is_passed_on_as_sent():
    event = Event.parse_event(raw("hangup_v0"))
    assert isinstance(event, CallHangupEvent)
    assert routing.to_core_event(ROOM, event).content == {"call_id": "1763950000000aBcDeFgHiJkLmNoP", "version": 0}


def test_decrypted_event_takes_age_sender_and_id_from_its_envelope():
    envelope = raw("encrypted")
    candidates = raw("candidates_js_sdk")["content"]
    # What nio builds from the Megolm plaintext: no "unsigned", so no age of its own.
    decrypted = Event.parse_decrypted_event({"type": "m.call.candidates", "content": candidates,
                                             "event_id": envelope["event_id"], "sender": envelope["sender"],
                                             "origin_server_ts": envelope["origin_server_ts"]})
    assert isinstance(decrypted, BadEvent)
    assert routing.to_core_event(ROOM, decrypted).age_ms is None
    converted = routing.to_core_event(ROOM, decrypted, envelope)
    assert converted == CallEventReceived(room_id=ROOM, sender="@owner:localhost", event_type="m.call.candidates",
                                          content=candidates, age_ms=2500, event_id="$enc1:localhost")


def test_events_that_are_not_call_events_are_left_out():
    assert routing.to_core_event(ROOM, Event.parse_event(raw("message"))) is None
    assert isinstance(Event.parse_event(raw("encrypted")), MegolmEvent)
    assert routing.to_core_event(ROOM, Event.parse_event(raw("encrypted"))) is None
    assert routing.to_core_event(ROOM, SimpleNamespace(source=None)) is None
    assert routing.to_core_event(ROOM, SimpleNamespace(source={"type": "m.call.invite", "content": {}})) is None


def test_odd_content_is_still_passed_on_for_the_core_to_judge():
    event = SimpleNamespace(source={"type": "m.call.hangup", "sender": "@x:localhost", "content": ["not", "a dict"]})
    assert routing.to_core_event(ROOM, event).content == {}


@pytest.mark.parametrize("unsigned, age", [
    ({"age": 0}, 0), ({"age": 5000}, 5000), ({}, None), ({"age": -1}, None), ({"age": True}, None),
    ({"age": 1.5}, None), ({"age": "12"}, None), (None, None), ("x", None),
])
def test_event_age(unsigned, age):
    source = {"type": "m.call.invite"} if unsigned is None else {"type": "m.call.invite", "unsigned": unsigned}
    assert routing.event_age(source) == age


# --- batches -------------------------------------------------------------------------------------------------------

def call(event_type: str, call_id: str, room: str = ROOM, sender: str = "@owner:localhost") -> CallEventReceived:
    return CallEventReceived(room_id=room, sender=sender, event_type=event_type,
                             content={"call_id": call_id, "version": "1"})


@pytest.mark.parametrize("settling", ["m.call.hangup", "m.call.reject", "m.call.answer", "m.call.select_answer"])
def test_an_invite_settled_later_in_the_batch_is_dropped(settling):
    invite, later = call("m.call.invite", "c1"), call(settling, "c1", sender="@door:localhost")
    kept, dropped = routing.drop_superseded_invites([invite, call("m.call.candidates", "c1"), later])
    assert dropped == [invite] and kept == [call("m.call.candidates", "c1"), later]


def test_only_the_same_call_in_the_same_room_settles_an_invite():
    batch = [call("m.call.hangup", "c1"),  # before the invite: an older call with the same ID, not a settlement
             call("m.call.invite", "c1"), call("m.call.hangup", "c2"), call("m.call.hangup", "c1", room="!other:x"),
             call("m.call.candidates", "c1")]
    assert routing.drop_superseded_invites(batch) == (batch, [])


# --- room facts ----------------------------------------------------------------------------------------------------

def room(users: dict[str, bool], join_rule: Any = "invite") -> SimpleNamespace:
    return SimpleNamespace(users={u: SimpleNamespace(invited=invited) for u, invited in users.items()},
                           join_rule=join_rule)


def test_room_facts_count_joined_members_only():
    facts = routing.room_facts(ROOM, room({"@door:x": False, "@owner:x": False, "@guest:x": True}))
    assert facts == RoomMembersChanged(room_id=ROOM, joined=frozenset({"@door:x", "@owner:x"}), join_rule="invite")


def test_room_facts_of_a_room_the_door_is_not_in():
    empty = RoomMembersChanged(room_id=ROOM, joined=frozenset(), join_rule=None)
    assert routing.room_facts(ROOM, None) == empty
    assert routing.room_facts(ROOM, room({"@door:x": False}), joined=False) == empty
    assert routing.room_facts(ROOM, room({}, join_rule="public")).join_rule == "public"


def test_description_for_the_log_leaves_the_sdp_out():
    event = routing.to_core_event(ROOM, Event.parse_event(raw("invite")))
    text = routing.describe(event)
    assert "m.call.invite from @owner:localhost" in text and "age 1234 ms" in text and "v=0" not in text


def test_an_event_without_age_gets_one_from_its_server_time_only_when_the_clock_is_synchronised():
    source = {"type": "m.call.invite", "origin_server_ts": 1_700_000_000_000, "content": {}}
    assert routing.event_age(source) is None  # the clock is not known to be right: the age stays unknown
    assert routing.event_age(source, now_ms=1_700_000_004_000) == 4000
    assert routing.event_age(source, now_ms=1_699_999_999_000) == 0  # a server clock ahead: not negative
    assert routing.event_age({**source, "unsigned": {"age": 250}}, now_ms=1_700_000_004_000) == 250
    assert routing.event_age({**source, "origin_server_ts": "soon"}, now_ms=1_700_000_004_000) is None
