"""Who is answered and where: only the owner, only in the configured two-person room, only live invites."""

import pytest

from intercom.core import (
    ButtonPressed,
    CallEnded,
    CallState,
    HomeserverConnectionChanged,
    Ignored,
    LedState,
    Outcome,
    PrepareAnswer,
    PrepareOffer,
    PressFeedback,
    RoomMembersChanged,
)

from .helpers import DOOR, OTHER_ROOM, OWNER, ROOM, STRANGER, invite, make_core, of, sends

TWO = frozenset({DOOR, OWNER})


def _core_with_room(joined, join_rule=None, online=True):
    core = make_core(ready=False)
    core.handle(HomeserverConnectionChanged(online=online), 0.0)
    if joined is not None:
        core.handle(RoomMembersChanged(room_id=ROOM, joined=frozenset(joined), join_rule=join_rule), 0.0)
    return core


ROOM_CASES = [
    pytest.param(None, None, True, "not known yet", id="members-unknown"),
    pytest.param(TWO | {STRANGER}, None, True, "exactly two", id="three-members"),
    pytest.param({DOOR}, None, True, "owner", id="owner-left"),
    pytest.param({OWNER, STRANGER}, None, True, "door has not joined", id="door-not-joined"),
    pytest.param(TWO, "public", True, "public", id="public-room"),
    pytest.param(TWO, None, False, "homeserver", id="offline"),
]


@pytest.mark.parametrize("joined, join_rule, online, why", ROOM_CASES)
def test_press_places_no_call_when_the_room_is_wrong(joined, join_rule, online, why):
    core = _core_with_room(joined, join_rule, online)
    actions = core.handle(ButtonPressed(), 1.0)
    (fb,) = of(actions, PressFeedback)
    assert not fb.accepted and why in fb.reason
    assert of(actions, PrepareOffer) == [] and sends(actions) == []


@pytest.mark.parametrize("joined, join_rule, online, why", [c for c in ROOM_CASES if c.id != "offline"])
def test_owner_invite_is_refused_when_the_room_is_wrong(joined, join_rule, online, why):
    core = _core_with_room(joined, join_rule, online)
    actions = core.handle(invite("c1"), 1.0)
    assert of(actions, PrepareAnswer) == []
    (rej,) = sends(actions, "m.call.reject")
    assert rej.content["call_id"] == "c1"
    assert why in of(actions, CallEnded)[0].summary.detail


@pytest.mark.parametrize("event, why", [
    (invite("c1", sender=STRANGER), "not a resident"),
    (invite("c1", sender=STRANGER, room_id=OTHER_ROOM), "not a resident"),
    (invite("c1", room_id=OTHER_ROOM), "not in the door's room with the caller"),
])
def test_calls_from_anyone_else_are_refused_never_answered(event, why):
    core = make_core()
    actions = core.handle(event, 1.0)
    assert of(actions, PrepareAnswer) == []
    (rej,) = sends(actions)
    assert rej.event_type == "m.call.reject" and rej.room_id == event.room_id
    (ended,) = of(actions, CallEnded)
    assert ended.summary.outcome is Outcome.REFUSED and why in ended.summary.detail
    assert core.state is CallState.IDLE and of(actions, PressFeedback) == []


def test_a_v0_strangers_call_is_refused_with_a_hangup():
    core = make_core()
    (h,) = sends(core.handle(invite("c1", sender=STRANGER, version=0, party=None), 1.0))
    assert h.event_type == "m.call.hangup"


@pytest.mark.parametrize("event, why", [
    (invite("c1", invitee="@someone:example.org"), "is for @someone"),
    (invite("c1", age_ms=61_000, lifetime=60_000), "expired"),
    (invite("c1", age_ms=58_000, lifetime=60_000), "expired"),  # within the ring grace
    (invite("c1", sender=STRANGER, age_ms=90_000), "expired"),
])
def test_invites_not_for_us_or_expired_are_ignored_silently(event, why):
    core = make_core()
    actions = core.handle(event, 1.0)
    assert sends(actions) == [] and of(actions, PrepareAnswer) == []
    assert why in of(actions, Ignored)[0].reason


def test_owner_invite_without_invitee_is_answered():
    """Element classic sends no invitee."""
    core = make_core()
    assert of(core.handle(invite("c1", invitee=None), 1.0), PrepareAnswer)


def test_an_invite_of_unknown_age_is_not_fresh_and_never_answered():
    """No ``unsigned.age``: it could be a replay from any time (the adapter fills the age in from the server's
    timestamp only once the door's clock is synchronised)."""
    core = make_core()
    actions = core.handle(invite("c1", invitee=None, age_ms=None), 1.0)
    assert of(actions, PrepareAnswer) == [] and sends(actions) == []
    assert "no age" in of(actions, Ignored)[0].reason


def test_a_third_member_joining_ends_the_call():
    core = make_core()
    core.handle(ButtonPressed(), 1.0)
    actions = core.handle(RoomMembersChanged(room_id=ROOM, joined=TWO | {STRANGER}), 2.0)
    assert of(actions, CallEnded)[0].summary.outcome is Outcome.CANCELLED
    assert core.state is CallState.IDLE


def test_membership_of_other_rooms_does_not_matter():
    core = make_core()
    core.handle(RoomMembersChanged(room_id=OTHER_ROOM, joined=frozenset({DOOR})), 1.0)
    assert core.room_problem() is None and core.led is LedState.IDLE


def test_the_owner_leaving_the_room_ends_the_call():
    """The spec treats the peer leaving as a hangup."""
    from .helpers import connect, take_call

    core = make_core()
    take_call(core, "c1")
    connect(core, "c1", 2.0)
    actions = core.handle(RoomMembersChanged(room_id=ROOM, joined=frozenset({DOOR})), 3.0)
    (ended,) = of(actions, CallEnded)
    assert ended.summary.outcome is Outcome.COMPLETED
    assert "owner" in ended.summary.detail and core.state is CallState.IDLE


def test_a_strangers_invite_in_another_room_for_nobody_in_particular_gets_no_reply():
    """In a group room the door is in, a call meant for someone else must not be ended by the door's reject."""
    core = make_core()
    actions = core.handle(invite("c1", sender=STRANGER, room_id=OTHER_ROOM, invitee=None, room_members=3), 1.0)
    assert sends(actions) == [] and "not for the door" in of(actions, Ignored)[0].reason
    actions = core.handle(invite("c2", sender=STRANGER, room_id=OTHER_ROOM, invitee=None), 1.0)
    assert sends(actions) == [], "a room the Matrix side cannot count counts as a group"
    actions = core.handle(invite("c3", sender=STRANGER, room_id=OTHER_ROOM, invitee="@carol:example.org",
                                 room_members=2), 1.0)
    assert sends(actions) == []


def test_a_strangers_invite_in_a_room_of_two_with_the_door_is_refused_so_their_phone_stops_ringing():
    """matrix-js-sdk sends no invitee in a room of two: the call can only be meant for the door."""
    core = make_core()
    actions = core.handle(invite("c1", sender=STRANGER, room_id=OTHER_ROOM, invitee=None, room_members=2), 1.0)
    (r,) = sends(actions)
    assert r.event_type == "m.call.reject" and r.room_id == OTHER_ROOM
    assert of(actions, PrepareAnswer) == [] and of(actions, CallEnded)[0].summary.outcome is Outcome.REFUSED


def test_a_strangers_invite_naming_the_door_or_in_its_room_is_refused():
    core = make_core()
    (r,) = sends(core.handle(invite("c1", sender=STRANGER, room_id=OTHER_ROOM, invitee=DOOR), 1.0))
    assert r.event_type == "m.call.reject" and r.room_id == OTHER_ROOM
    (r,) = sends(core.handle(invite("c2", sender=STRANGER, invitee=None), 1.0))
    assert r.event_type == "m.call.reject" and r.room_id == ROOM


def test_a_flood_of_invites_gets_a_bounded_number_of_replies_and_the_owner_still_gets_through():
    from intercom.core.door import REFUSALS_PER_MINUTE

    core = make_core()
    replies = sum(len(sends(core.handle(invite(f"flood{n}", sender=STRANGER, room_id=OTHER_ROOM), 1.0 + n / 100)))
                  for n in range(200))
    assert replies == REFUSALS_PER_MINUTE
    assert of(core.handle(invite("owner1"), 4.0), PrepareAnswer), "the owner's call is taken after the flood"
    core.handle(invite("late", sender=STRANGER, room_id=OTHER_ROOM), 30.0)
    assert sends(core.handle(invite("later", sender=STRANGER, room_id=OTHER_ROOM), 62.0), "m.call.reject"), \
        "a minute later, refusals are sent again"
