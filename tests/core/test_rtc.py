"""MatrixRTC (Element Call) calls in the core: the same table as legacy calls, driven by memberships.

Each test walks what a resident on Element X would see: the ring, joining, declining, leaving, their own call
in the room that the door joins, and the strangers and untrusted sessions the door never joins.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intercom.core import (
    ApplyAnswer,
    ButtonPressed,
    CallEnded,
    CallState,
    CloseMedia,
    DeviceKeys,
    Direction,
    HangupRequested,
    Ignored,
    LocalAnswerReady,
    LocalOfferReady,
    MediaState,
    MediaStateChanged,
    ObservedKeys,
    Outcome,
    OwnerKeysObserved,
    PostSnapshot,
    PrepareOffer,
    Resident,
    RoomMembersChanged,
    RtcAnnounce,
    RtcAvailabilityChanged,
    RtcConnect,
    RtcDeclineReceived,
    RtcMembershipChanged,
    SendCallEvent,
    SendNotice,
    TimerDue,
)
from intercom.core import rtc
from intercom.core.errors import MalformedCallEvent

from .helpers import DOOR, OFFER_SDP, STRANGER, hangup, invite, of, sends
from .test_household import ALICE, BOB, ROOMS, household, resident

PHONE = "ELEMENTX"


def state_key(user: str, device: str = PHONE) -> str:
    return f"_{user}_{device}_m.call"


def membership(user: str = ALICE, device: str = PHONE, *, room: str | None = None, age_ms: int | None = 500,
               sender: str | None = None, **content) -> RtcMembershipChanged:
    body = {"application": "m.call", "call_id": "", "scope": "m.room", "device_id": device,
            "focus_active": {"type": "livekit", "focus_selection": "oldest_membership"},
            "foci_preferred": [{"type": "livekit", "livekit_service_url": "https://rtc.example.org",
                                "livekit_alias": room or ROOMS[user]}],
            "expires": 14_400_000, **content}
    return RtcMembershipChanged(room_id=room or ROOMS[user], sender=sender or user, state_key=state_key(user, device),
                                content=body, age_ms=age_ms)


def left(user: str = ALICE, device: str = PHONE, *, room: str | None = None) -> RtcMembershipChanged:
    return RtcMembershipChanged(room_id=room or ROOMS[user], sender=user, state_key=state_key(user, device),
                                content={}, age_ms=10)


def rtc_door(*residents: Resident, available: bool = True):
    core = household(*(residents or (resident(ALICE),)))
    core.handle(RtcAvailabilityChanged(available=available), 0.0)
    return core


def ring_rtc(core, now: float = 1.0):
    """Press; the LiveKit side connects: returns (call ID, the actions after connecting)."""
    actions = core.handle(ButtonPressed(), now)
    (connect,) = of(actions, RtcConnect)
    assert connect.direction is Direction.OUTGOING and connect.peer == ALICE and connect.room_id == ROOMS[ALICE]
    return connect.call_id, core.handle(LocalOfferReady(call_id=connect.call_id, sdp=""), now + 0.1)


# --- parsing -------------------------------------------------------------------------------------------------------

def test_a_membership_is_parsed_with_its_device_and_focus():
    m = membership()
    found = rtc.parse_membership(m.state_key, m.sender, m.content, age_ms=100)
    assert found == rtc.Membership(user_id=ALICE, device_id=PHONE, state_key=m.state_key,
                                   focus_url="https://rtc.example.org", intent="")


@pytest.mark.parametrize("content, why", [
    ({}, "left"),
    ({"application": "m.call", "call_id": "", "scope": "m.room", "device_id": PHONE, "expires": 1000}, "expired"),
    ({"application": "io.element.other", "device_id": PHONE}, "not a call"),
    ({"application": "m.call", "call_id": "side-call", "device_id": PHONE}, "another call"),
])
def test_left_expired_and_other_memberships_are_not_live(content, why):
    assert why in rtc.parse_membership(state_key(ALICE), ALICE, content, age_ms=5000)


def test_a_membership_without_an_age_may_be_a_replay():
    m = membership()
    assert "replay" in rtc.parse_membership(m.state_key, m.sender, m.content, age_ms=None)


@pytest.mark.parametrize("key, sender, content", [
    (state_key(ALICE), STRANGER, {"application": "m.call", "device_id": PHONE}),  # someone else's state key
    (state_key(ALICE), ALICE, {"application": "m.call", "device_id": "OTHER"}),  # device differs from the key
    (state_key(ALICE), ALICE, {"application": "m.call"}),  # no device
    (state_key(ALICE), ALICE, {"application": "m.call", "device_id": PHONE, "expires": "soon"}),
    (state_key(ALICE), ALICE, ["not", "an", "object"]),
])
def test_memberships_that_lie_are_malformed(key, sender, content):
    with pytest.raises(MalformedCallEvent):
        rtc.parse_membership(key, sender, content, age_ms=10)


# --- which technology rings whom -----------------------------------------------------------------------------------

def test_auto_rings_by_matrixrtc_when_the_homeserver_offers_a_focus_else_legacy():
    assert of(rtc_door().handle(ButtonPressed(), 1.0), RtcConnect)
    actions = rtc_door(available=False).handle(ButtonPressed(), 1.0)
    assert of(actions, PrepareOffer) and not of(actions, RtcConnect)


def test_each_resident_is_rung_once_by_the_technology_they_chose():
    core = rtc_door(resident(ALICE, calls="matrixrtc"), resident(BOB, calls="legacy"))
    actions = core.handle(ButtonPressed(), 1.0)
    (connect,) = of(actions, RtcConnect)
    (offer,) = of(actions, PrepareOffer)
    assert connect.peer == ALICE
    out = core.handle(LocalOfferReady(call_id=offer.call_id, sdp=OFFER_SDP), 1.1)
    out += core.handle(LocalOfferReady(call_id=connect.call_id, sdp=""), 1.1)
    assert [s.room_id for s in sends(out, "m.call.invite")] == [ROOMS[BOB]]
    assert [(a.room_id, a.ring) for a in of(out, RtcAnnounce)] == [(ROOMS[ALICE], ALICE)]


def test_a_resident_who_last_called_by_legacy_is_rung_by_legacy_under_auto():
    core = rtc_door()
    core.handle(invite("1700000000000aaaaa", sender=ALICE, room_id=ROOMS[ALICE]), 1.0)
    core.handle(hangup("1700000000000aaaaa", sender=ALICE, room_id=ROOMS[ALICE]), 2.0)
    assert of(core.handle(ButtonPressed(), 10.0), PrepareOffer)
    assert core.household_status()[0]["rung_by"] == "legacy"


# --- the door rings by MatrixRTC -----------------------------------------------------------------------------------

def test_ring_join_talk_leave():
    core = rtc_door()
    call_id, actions = ring_rtc(core)
    (announce,) = of(actions, RtcAnnounce)
    assert announce.ring == ALICE and announce.lifetime_ms > 0 and announce.room_id == ROOMS[ALICE]
    assert [p.room_id for p in of(actions, PostSnapshot)] == [ROOMS[ALICE]]
    assert not of(actions, SendCallEvent)  # not one m.call.* event
    assert core.state is CallState.RINGING
    actions = core.handle(membership(), 3.0)
    assert of(actions, ApplyAnswer) and core.state is CallState.CONNECTING
    core.handle(MediaStateChanged(call_id=call_id, state=MediaState.CONNECTED), 3.5)
    assert core.state is CallState.CONNECTED
    actions = core.handle(left(), 20.0)
    (ended,) = of(actions, CallEnded)
    assert ended.summary.outcome is Outcome.COMPLETED and of(actions, CloseMedia)
    assert core.state is CallState.IDLE


def test_a_resident_already_in_the_rooms_call_answers_the_ring_at_once():
    core = rtc_door()
    core.handle(membership(age_ms=120_000), 0.5)  # too old to be joined as their call, but in the room's call
    _, actions = ring_rtc(core)
    assert of(actions, ApplyAnswer) and core.state is CallState.CONNECTING


def test_decline_ends_the_ring_and_leaves():
    core = rtc_door()
    call_id, _ = ring_rtc(core)
    actions = core.handle(RtcDeclineReceived(room_id=ROOMS[ALICE], sender=ALICE, age_ms=10), 2.0)
    (ended,) = of(actions, CallEnded)
    assert ended.summary.outcome is Outcome.DECLINED
    assert of(actions, CloseMedia) and any("declined" in n.text for n in of(actions, SendNotice))


def test_a_declines_from_someone_else_changes_nothing():
    core = rtc_door()
    ring_rtc(core)
    actions = core.handle(RtcDeclineReceived(room_id=ROOMS[ALICE], sender=STRANGER, age_ms=10), 2.0)
    assert of(actions, Ignored) and core.state is CallState.RINGING


def test_nobody_joins_the_ring_times_out():
    core = rtc_door()
    ring_rtc(core)
    actions = core.handle(TimerDue(), 1.0 + core.settings.timings.ring_timeout + 1)
    (ended,) = of(actions, CallEnded)
    assert ended.summary.outcome is Outcome.MISSED and of(actions, CloseMedia)


def test_the_first_to_join_takes_the_ring_and_the_others_stop_ringing():
    core = rtc_door(resident(ALICE), resident(BOB, calls="legacy"))
    actions = core.handle(ButtonPressed(), 1.0)
    for a in of(actions, RtcConnect):
        core.handle(LocalOfferReady(call_id=a.call_id, sdp=""), 1.1)
    for a in of(actions, PrepareOffer):
        core.handle(LocalOfferReady(call_id=a.call_id, sdp=OFFER_SDP), 1.1)
    actions = core.handle(membership(), 2.0)
    assert [s.room_id for s in sends(actions, "m.call.hangup")] == [ROOMS[BOB]]
    assert core.ring_status()["answered_by"] == ALICE


def test_another_device_of_the_resident_joining_later_does_not_change_the_call():
    core = rtc_door()
    call_id, _ = ring_rtc(core)
    core.handle(membership(), 2.0)
    actions = core.handle(membership(device="TABLET"), 3.0)
    assert of(actions, Ignored) and core.state is CallState.CONNECTING
    actions = core.handle(left(device="TABLET"), 4.0)  # it leaves again: the call goes on
    assert not of(actions, CallEnded)


# --- a resident calls the door by MatrixRTC -------------------------------------------------------------------------

def test_the_door_joins_a_residents_call_in_their_room():
    core = rtc_door()
    actions = core.handle(membership(), 1.0)
    (connect,) = of(actions, RtcConnect)
    assert connect.direction is Direction.INCOMING and connect.peer == ALICE
    actions = core.handle(LocalAnswerReady(call_id=connect.call_id, sdp=""), 1.5)
    (announce,) = of(actions, RtcAnnounce)
    assert announce.ring == "" and announce.room_id == ROOMS[ALICE]
    core.handle(MediaStateChanged(call_id=connect.call_id, state=MediaState.CONNECTED), 2.0)
    assert core.state is CallState.CONNECTED
    (ended,) = of(core.handle(left(), 30.0), CallEnded)
    assert ended.summary.outcome is Outcome.COMPLETED


def test_a_strangers_call_is_never_joined():
    core = rtc_door()
    stranger = RtcMembershipChanged(room_id=ROOMS[ALICE], sender=STRANGER, state_key=state_key(STRANGER),
                                    content=membership().content | {"device_id": PHONE}, age_ms=10)
    assert not of(core.handle(stranger, 1.0), RtcConnect)
    # nor a resident's call in a room that is not theirs with the door
    assert not of(core.handle(membership(room="!party:example.org"), 1.0), RtcConnect)
    # nor a membership sent by someone else under the resident's state key
    forged = membership(sender=STRANGER)
    assert not of(core.handle(forged, 1.0), RtcConnect)


def test_old_and_ageless_memberships_are_not_joined_nor_one_the_door_already_left():
    core = rtc_door()
    assert not of(core.handle(membership(age_ms=None), 1.0), RtcConnect)
    assert not of(core.handle(membership(device="OLD", age_ms=600_000), 1.0), RtcConnect)
    (connect,) = of(core.handle(membership(device="NEW"), 2.0), RtcConnect)
    core.handle(LocalAnswerReady(call_id=connect.call_id, sdp=""), 2.1)
    core.handle(MediaStateChanged(call_id=connect.call_id, state=MediaState.CONNECTED), 2.2)
    core.handle(HangupRequested(), 3.0)
    # the resident's client renews its membership: the door does not come back into the call it left
    assert not of(core.handle(membership(device="NEW"), 4.0), RtcConnect)


def test_a_call_while_busy_or_without_the_right_is_not_joined_and_the_resident_is_told():
    core = rtc_door(resident(ALICE), resident(BOB, calls="legacy"))
    core.handle(invite("1700000000000bbbbb", sender=BOB, room_id=ROOMS[BOB]), 1.0)
    actions = core.handle(membership(), 1.5)
    assert not of(actions, RtcConnect)
    assert any("busy" in n.text and n.room_id == ROOMS[ALICE] for n in of(actions, SendNotice))
    core = rtc_door(resident(ALICE, answer_calls=False))
    actions = core.handle(membership(), 1.0)
    assert not of(actions, RtcConnect) and any("answer_calls" in n.text for n in of(actions, SendNotice))


def test_the_residents_own_call_replaces_the_legacy_ring_to_them():
    core = rtc_door(resident(ALICE, calls="legacy"))
    (offer,) = of(core.handle(ButtonPressed(), 1.0), PrepareOffer)
    core.handle(LocalOfferReady(call_id=offer.call_id, sdp=OFFER_SDP), 1.1)
    actions = core.handle(membership(), 2.0)
    assert [s.content["reason"] for s in sends(actions, "m.call.hangup")] == ["replaced"]
    assert of(actions, RtcConnect)


# --- encrypted rooms: only trusted devices ---------------------------------------------------------------------------

TRUSTED = DeviceKeys(device_id=PHONE, ed25519="ed-phone", name="Element X", signed=True)
THIEF = DeviceKeys(device_id="THIEF", ed25519="ed-thief", name="nio", signed=False)


def encrypted_rtc_door():
    core = rtc_door()
    core.handle(RoomMembersChanged(room_id=ROOMS[ALICE], joined=frozenset({DOOR, ALICE}), encrypted=True), 0.0)
    core.handle(OwnerKeysObserved(keys=ObservedKeys(master_key="m", devices=(TRUSTED, THIEF)), user_id=ALICE), 0.0)
    return core


def test_in_an_encrypted_room_an_untrusted_sessions_call_is_not_joined_and_the_resident_is_told():
    core = encrypted_rtc_door()
    actions = core.handle(membership(device="THIEF"), 1.0)
    assert not of(actions, RtcConnect)
    assert any("THIEF" in n.text for n in of(actions, SendNotice))
    assert of(core.handle(membership(), 2.0), RtcConnect)


def test_in_an_encrypted_room_an_untrusted_session_cannot_answer_the_ring_nor_decline_in_the_clear():
    core = encrypted_rtc_door()
    ring_rtc(core)
    assert not of(core.handle(membership(device="THIEF"), 2.0), ApplyAnswer)
    assert core.state is CallState.RINGING
    core.handle(RtcDeclineReceived(room_id=ROOMS[ALICE], sender=ALICE, age_ms=10), 2.5)  # not encrypted
    assert core.state is CallState.RINGING
    core.handle(RtcDeclineReceived(room_id=ROOMS[ALICE], sender=ALICE, age_ms=10, encrypted=True,
                                   device_id="THIEF"), 2.6)
    assert core.state is CallState.RINGING
    assert of(core.handle(membership(), 3.0), ApplyAnswer)


# --- hostile input --------------------------------------------------------------------------------------------------

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner,
                                                                                      max_size=4), max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(key=st.one_of(st.text(max_size=40), st.just(state_key(ALICE)), st.just(state_key(ALICE, "X"))),
       content=st.dictionaries(st.sampled_from(["application", "call_id", "scope", "device_id", "expires",
                                                "foci_preferred", "m.call.intent"]), json_values, max_size=7),
       age=st.one_of(st.none(), st.integers(-10, 10**9)))
def test_no_membership_a_peer_can_send_breaks_the_door(key, content, age):
    core = rtc_door()
    ring_rtc(core)
    actions = core.handle(RtcMembershipChanged(room_id=ROOMS[ALICE], sender=ALICE, state_key=key, content=content,
                                               age_ms=age), 2.0)
    assert not any(isinstance(a, Ignored) and "internal error" in a.reason for a in actions)
    assert core.state in (CallState.RINGING, CallState.CONNECTING)


def test_auto_rings_by_legacy_where_the_door_may_not_join_calls():
    """A room where the door lacks the power to send call memberships (a room made with the private_chat preset)."""
    core = rtc_door()
    core.handle(RoomMembersChanged(room_id=ROOMS[ALICE], joined=frozenset({DOOR, ALICE}), rtc_allowed=False), 0.5)
    actions = core.handle(ButtonPressed(), 1.0)
    assert of(actions, PrepareOffer) and not of(actions, RtcConnect)


# --- property test: a household on both technologies, driven at random ------------------------------------------------

from dataclasses import dataclass, field  # noqa: E402

from hypothesis import HealthCheck  # noqa: E402

from intercom.core import (CallTimings, CoreSettings, DoorCore, HomeserverConnectionChanged,  # noqa: E402
                           PrepareAnswer)

from .helpers import DOOR_PARTY, answer, reject  # noqa: E402
from .test_household import CAROL, TALKING  # noqa: E402

MIXED_TIMINGS = CallTimings(ring_timeout=20.0, invite_lifetime=60.0, connect_timeout=5.0, max_call_duration=60.0,
                            prepare_timeout=4.0, ended_display=3.0)
PEOPLE = (ALICE, BOB, CAROL)
DEVICES = (PHONE, "TABLET")

mixed_op = st.one_of(
    st.just(("press",)),
    st.just(("ready",)),
    st.tuples(st.sampled_from(["legacy_answer", "legacy_reject", "join", "leave", "decline", "connect",
                               "rtc_call", "legacy_call"]), st.integers(0, 2), st.integers(0, 1)),
    st.just(("stranger",)),
    st.tuples(st.just("wait"), st.floats(0.05, 25.0)),
)


@dataclass
class Mixed:
    core: DoorCore
    now: float = 0.0
    preparing: dict[str, type] = field(default_factory=dict)  #: call ID -> the ready event it waits for
    rung: dict[str, float] = field(default_factory=dict)  #: call ID -> when its ring went out
    invites: dict[str, str] = field(default_factory=dict)  #: legacy call ID -> resident
    closed: set[str] = field(default_factory=set)
    ended: set[str] = field(default_factory=set)
    counter: int = 0

    def feed(self, event) -> list:
        actions = self.core.handle(event, self.now)
        for a in actions:
            if isinstance(a, RtcConnect):
                assert a.peer in PEOPLE and a.room_id == ROOMS[a.peer]  # only residents, in their room
                self.preparing[a.call_id] = LocalOfferReady if a.direction is Direction.OUTGOING else LocalAnswerReady
            elif isinstance(a, PrepareOffer):
                self.preparing[a.call_id] = LocalOfferReady
            elif isinstance(a, PrepareAnswer):
                self.preparing[a.call_id] = LocalAnswerReady
            elif isinstance(a, RtcAnnounce) and a.ring:
                self.rung[a.call_id] = self.now
            elif isinstance(a, SendCallEvent) and a.event_type == "m.call.invite":
                self.rung[a.content["call_id"]] = self.now
                self.invites[a.content["call_id"]] = next(u for u, r in ROOMS.items() if r == a.room_id)
            elif isinstance(a, CloseMedia):
                self.closed.add(a.call_id)
            elif isinstance(a, CallEnded) and a.summary.outcome is not Outcome.REFUSED:
                self.ended.add(a.summary.call_id)  # (a refused invite never had media)
        # one ring per resident and press: never an m.call.invite and a MatrixRTC ring to the same room at once
        rings = [a.room_id for a in actions if isinstance(a, RtcAnnounce) and a.ring]
        rings += [a.room_id for a in actions if isinstance(a, SendCallEvent) and a.event_type == "m.call.invite"]
        assert len(rings) == len(set(rings))
        return actions


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(techs=st.lists(st.sampled_from(["legacy", "matrixrtc", "auto"]), min_size=3, max_size=3),
       n=st.integers(1, 3), ops=st.lists(mixed_op, min_size=1, max_size=40))
def test_both_technologies_hold_the_rules_under_any_sequence(techs, n, ops):
    residents = tuple(resident(PEOPLE[i], calls=techs[i]) for i in range(n))
    core = DoorCore(CoreSettings(user_id=DOOR, party_id=DOOR_PARTY, residents=residents, timings=MIXED_TIMINGS))
    h = Mixed(core)
    h.feed(HomeserverConnectionChanged(online=True))
    h.feed(RtcAvailabilityChanged(available=True))
    for r in residents:
        h.feed(RoomMembersChanged(room_id=r.room_id, joined=frozenset({DOOR, r.user_id})))
    for step in ops:
        kind, *args = step
        person = PEOPLE[args[0] % n] if len(args) == 2 else None
        device = DEVICES[args[1]] if len(args) == 2 else None
        if kind == "press":
            h.feed(ButtonPressed())
        elif kind == "ready":
            for call_id, ready in list(h.preparing.items()):
                del h.preparing[call_id]
                h.feed(ready(call_id=call_id, sdp=OFFER_SDP))
        elif kind in ("legacy_answer", "legacy_reject"):
            live = [c for c, who in h.invites.items() if who == person and c in core._calls]
            if live:
                make = answer if kind == "legacy_answer" else reject
                h.feed(make(live[0], sender=person, room_id=ROOMS[person]))
        elif kind == "join":
            h.feed(membership(person, device))
        elif kind == "leave":
            h.feed(left(person, device))
        elif kind == "decline":
            h.feed(RtcDeclineReceived(room_id=ROOMS[person], sender=person, age_ms=10))
        elif kind == "connect":
            for call in [c for c in core._calls.values() if c.peer == person]:
                h.feed(MediaStateChanged(call_id=call.call_id, state=MediaState.CONNECTED))
        elif kind == "rtc_call":
            h.feed(membership(person, device))
        elif kind == "legacy_call":
            h.counter += 1
            h.feed(invite(f"inc{h.counter:04d}", sender=person, room_id=ROOMS[person]))
        elif kind == "stranger":
            before = set(core._calls)
            actions = h.feed(RtcMembershipChanged(room_id=ROOMS[ALICE], sender=STRANGER, state_key=state_key(STRANGER),
                                                  content=membership().content, age_ms=10))
            assert not of(actions, RtcConnect) and set(core._calls) == before
        elif kind == "wait":
            h.now += args[0]
            h.feed(TimerDue())
        # never two conversations
        talking = [c for c in core._calls.values() if c.state in TALKING]
        assert len(talking) <= 1
        if talking:
            assert len(core._calls) == 1
        # nothing rings past ring_timeout
        for call in core._calls.values():
            if call.state is CallState.RINGING:
                assert h.now - h.rung[call.call_id] <= MIXED_TIMINGS.ring_timeout
        # every call that ended has its media closed (for MatrixRTC: the door leaves the room's call)
        assert h.ended <= h.closed
