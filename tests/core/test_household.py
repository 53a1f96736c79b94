"""A household: ring groups, several buttons, quiet hours, rooms the door makes, rights and trust per resident.

The unit tests walk through what each resident sees; the property tests drive a household of one to four residents
with Hypothesis (random presses at random clock times, answers, declines, hangups, the residents' own calls, media
and the passing of time) and check the rules after every step: never two conversations, every other call of a
ring ends the moment one is answered, nothing rings past ``ring_timeout``, quiet hours hold at any clock time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intercom.core import (
    ApplyAnswer,
    Button,
    ButtonPressed,
    CallEnded,
    CallState,
    CallTimings,
    CoreSettings,
    DoorCore,
    HomeserverConnectionChanged,
    Ignored,
    LedState,
    LocalAnswerReady,
    LocalOfferReady,
    MediaState,
    MediaStateChanged,
    OpenDoor,
    Outcome,
    PostSnapshot,
    PrepareAnswer,
    PrepareOffer,
    PressFeedback,
    QuietHours,
    Resident,
    ResidentRoomChanged,
    RoomMembersChanged,
    SendNotice,
    TextMessageReceived,
    TimerDue,
)

from .helpers import ANSWER_SDP, DOOR, DOOR_PARTY, OFFER_SDP, answer, hangup, invite, of, reject, sends

ALICE, BOB, CAROL = "@alice:example.org", "@bob:example.org", "@carol:example.org"
ROOMS = {ALICE: "!alice:example.org", BOB: "!bob:example.org", CAROL: "!carol:example.org"}
NIGHT = QuietHours.parse("22:00-07:00")


def household(*residents: Resident, buttons: tuple[Button, ...] = (), ready: bool = True, **timings) -> DoorCore:
    counter = iter(range(1, 100_000))
    core = DoorCore(CoreSettings(user_id=DOOR, party_id=DOOR_PARTY, residents=residents, buttons=buttons,
                                 timings=CallTimings(**timings)), new_token=lambda: f"{next(counter):05d}")
    if ready:
        core.handle(HomeserverConnectionChanged(online=True), 0.0)
        for r in residents:
            if r.room_id is not None:
                core.handle(RoomMembersChanged(room_id=r.room_id, joined=frozenset({DOOR, r.user_id})), 0.0)
    return core


def resident(user: str, **kw) -> Resident:
    return Resident(user_id=user, room_id=kw.pop("room_id", ROOMS[user]), **kw)


def ring(core: DoorCore, now: float = 1.0, **press) -> dict[str, str]:
    """Press and let the media side produce every offer: resident -> call ID of the invite sent to their room."""
    actions = core.handle(ButtonPressed(**press), now)
    calls = {}
    for prep in of(actions, PrepareOffer):
        out = core.handle(LocalOfferReady(call_id=prep.call_id, sdp=OFFER_SDP), now + 0.1)
        (sent,) = sends(out, "m.call.invite")
        calls[next(u for u, r in ROOMS.items() if r == sent.room_id)] = prep.call_id
    return calls


def pictures(actions) -> list[tuple[str, str, str, str]]:
    """The pictures asked for: (room, reason, button label, resident mentioned)."""
    return [(p.room_id, p.reason, p.label, p.mention) for p in of(actions, PostSnapshot)]


def texts(actions, room=None) -> list[str]:
    return [a.text for a in of(actions, SendNotice) if room is None or a.room_id == room]


# --- ring groups -------------------------------------------------------------------------------------------------


def test_a_press_rings_every_resident_at_once_each_in_their_room():
    core = household(resident(ALICE), resident(BOB))
    actions = core.handle(ButtonPressed(), 1.0)
    assert len(of(actions, PrepareOffer)) == 2 and of(actions, PressFeedback)[0].accepted
    assert core.led is LedState.CALLING
    calls = {}
    for prep in of(actions, PrepareOffer):
        out = core.handle(LocalOfferReady(call_id=prep.call_id, sdp=OFFER_SDP), 1.1)
        (sent,) = sends(out, "m.call.invite")
        (picture,) = of(out, PostSnapshot)
        assert (picture.room_id, picture.reason, picture.ring_id) == (sent.room_id, "ring", calls.get("ring", prep.call_id))
        calls["ring"] = picture.ring_id  # every picture of the ring is the same still
        calls[sent.room_id] = prep.call_id
    calls.pop("ring")
    assert set(calls) == {ROOMS[ALICE], ROOMS[BOB]}
    assert sorted(core.ring_status()["ringing"]) == [ALICE, BOB]


def test_the_first_answer_gets_the_call_and_the_other_ringing_stops_with_who_answered():
    core = household(resident(ALICE), resident(BOB))
    calls = ring(core)
    actions = core.handle(answer(calls[BOB], sender=BOB, room_id=ROOMS[BOB]), 3.0)
    assert of(actions, ApplyAnswer) == [ApplyAnswer(call_id=calls[BOB], answer_sdp=ANSWER_SDP)]
    (select,) = sends(actions, "m.call.select_answer")
    assert select.room_id == ROOMS[BOB]
    (stop,) = sends(actions, "m.call.hangup")
    assert stop.room_id == ROOMS[ALICE] and stop.content["call_id"] == calls[ALICE]
    assert any("answered by @bob:example.org" in t for t in texts(actions, ROOMS[ALICE]))
    assert not texts(actions, ROOMS[BOB])
    ended = {a.summary.peer: a.summary.outcome for a in of(actions, CallEnded)}
    assert ended == {ALICE: Outcome.ANSWERED_ELSEWHERE}
    assert core.ring_status()["answered_by"] == BOB and core.ring_status()["ringing"] == []
    # A late answer from Alice changes nothing: her call is over.
    late = core.handle(answer(calls[ALICE], sender=ALICE, room_id=ROOMS[ALICE]), 3.5)
    assert not of(late, ApplyAnswer) and of(late, Ignored)
    assert [c.peer for c in core._calls.values()] == [BOB]


def test_a_decline_stops_only_that_ringing_and_the_rest_ring_out_with_a_missed_notice():
    core = household(resident(ALICE), resident(BOB), resident(CAROL), ring_timeout=30)
    calls = ring(core)
    actions = core.handle(reject(calls[ALICE], sender=ALICE, room_id=ROOMS[ALICE]), 2.0)
    assert [a.summary.outcome for a in of(actions, CallEnded)] == [Outcome.DECLINED]
    assert any("declined" in t for t in texts(actions, ROOMS[ALICE])) and not sends(actions, "m.call.hangup")
    assert core.led is LedState.CALLING and sorted(core.ring_status()["ringing"]) == [BOB, CAROL]
    assert core.ring_status()["declined"] == [ALICE]
    actions = core.handle(TimerDue(), 1.1 + 30)
    assert {a.room_id for a in sends(actions, "m.call.hangup")} == {ROOMS[BOB], ROOMS[CAROL]}
    assert all("Missed call" in t for t in texts(actions)) and len(texts(actions)) == 2
    assert core.state is CallState.IDLE and core.led is LedState.MISSED


def test_a_hangup_by_the_one_who_answered_ends_the_ring():
    core = household(resident(ALICE), resident(BOB))
    calls = ring(core)
    core.handle(answer(calls[ALICE], sender=ALICE, room_id=ROOMS[ALICE]), 2.0)
    core.handle(MediaStateChanged(call_id=calls[ALICE], state=MediaState.CONNECTED), 2.5)
    assert core.state is CallState.CONNECTED
    actions = core.handle(hangup(calls[ALICE], sender=ALICE, room_id=ROOMS[ALICE]), 20.0)
    assert [a.summary.outcome for a in of(actions, CallEnded)] == [Outcome.COMPLETED] and core.state is CallState.IDLE


def test_a_resident_calling_while_rung_wins_or_loses_glare_like_one_owner_and_the_others_stop():
    core = household(resident(ALICE), resident(BOB))
    calls = ring(core)
    ours = calls[BOB]
    theirs = "0" + ours  # sorts before ours: the spec's rule lets the lower call ID win
    actions = core.handle(invite(theirs, sender=BOB, room_id=ROOMS[BOB]), 2.0)
    assert of(actions, PrepareAnswer) and of(actions, PrepareAnswer)[0].call_id == theirs
    assert {a.room_id for a in sends(actions, "m.call.hangup")} >= {ROOMS[ALICE]}
    assert any("answered by @bob:example.org" in t for t in texts(actions, ROOMS[ALICE]))
    assert [c.peer for c in core._calls.values()] == [BOB]


def test_a_second_residents_call_while_the_door_is_busy_is_refused_with_a_reason():
    core = household(resident(ALICE), resident(BOB))
    core.handle(invite("c-alice", sender=ALICE, room_id=ROOMS[ALICE]), 1.0)
    actions = core.handle(invite("c-bob", sender=BOB, room_id=ROOMS[BOB]), 1.5)
    (refusal,) = sends(actions, "m.call.reject")
    assert refusal.room_id == ROOMS[BOB]
    assert "busy" in of(actions, CallEnded)[0].summary.detail and not of(actions, PrepareAnswer)


def test_residents_calls_are_answered_only_with_the_right_to_be():
    core = household(resident(ALICE), resident(BOB, answer_calls=False))
    actions = core.handle(invite("c-bob", sender=BOB, room_id=ROOMS[BOB]), 1.0)
    assert not of(actions, PrepareAnswer) and sends(actions, "m.call.reject")
    assert "answer_calls is off" in of(actions, CallEnded)[0].summary.detail
    assert of(core.handle(invite("c-alice", sender=ALICE, room_id=ROOMS[ALICE]), 2.0), PrepareAnswer)
    # ...and never in another resident's room.
    core = household(resident(ALICE), resident(BOB))
    actions = core.handle(invite("c-x", sender=ALICE, room_id=ROOMS[BOB]), 1.0)
    assert not of(actions, PrepareAnswer) and "not in the door's room with the caller" in \
        of(actions, CallEnded)[0].summary.detail


# --- quiet hours -------------------------------------------------------------------------------------------------


def test_quiet_hours_post_the_picture_and_a_notice_and_call_nobody_there():
    core = household(resident(ALICE), resident(BOB, quiet_hours=NIGHT))
    actions = core.handle(ButtonPressed(minute_of_day=23 * 60), 1.0)
    assert len(of(actions, PrepareOffer)) == 1
    assert pictures(actions) == [(ROOMS[BOB], "ring", "", BOB)]
    assert of(actions, PostSnapshot)[0].ring_id == of(actions, PrepareOffer)[0].call_id  # the ring's one still
    assert any("quiet hours" in t for t in texts(actions, ROOMS[BOB]))
    assert core.ring_status()["quiet"] == [BOB] and core.ring_status()["rung"] == [ALICE]
    core = household(resident(ALICE), resident(BOB, quiet_hours=NIGHT))
    assert len(of(core.handle(ButtonPressed(minute_of_day=12 * 60), 1.0), PrepareOffer)) == 2


def test_when_everybody_is_quiet_the_press_still_gets_feedback_and_pictures():
    core = household(resident(ALICE, quiet_hours=NIGHT), resident(BOB, quiet_hours=NIGHT))
    actions = core.handle(ButtonPressed(minute_of_day=3 * 60), 1.0)
    assert not of(actions, PrepareOffer) and of(actions, PressFeedback)[0].accepted
    assert {a.room_id for a in of(actions, PostSnapshot)} == {ROOMS[ALICE], ROOMS[BOB]}
    assert core.led is LedState.MISSED
    # The quiet residents saw the picture: they may still open for this ring, within the window.
    opened = core.handle(TextMessageReceived(room_id=ROOMS[ALICE], sender=ALICE, body="!open", age_ms=100), 20.0)
    assert of(opened, OpenDoor)


@given(start=st.integers(0, 1439), end=st.integers(0, 1439), minute=st.integers(-2000, 5000))
def test_quiet_hours_hold_for_any_clock_time(start, end, minute):
    hours = QuietHours(start, end)
    m = minute % 1440
    expected = (start <= m < end) if start <= end else (m >= start or m < end)
    assert hours.covers(minute) is expected
    core = household(resident(ALICE), resident(BOB, quiet_hours=hours))
    actions = core.handle(ButtonPressed(minute_of_day=minute), 1.0)
    rung = {core._calls[p.call_id].peer for p in of(actions, PrepareOffer)}
    assert rung == ({ALICE} if expected else {ALICE, BOB})
    assert ((ROOMS[BOB], "ring", "", BOB) in pictures(actions)) is expected


@pytest.mark.parametrize("text, why", [("22:00", "HH:MM-HH:MM"), ("25:00-07:00", "not a time of day"),
                                       ("22:00-7", "not a time of day"), ("a-b", "not a time of day")])
def test_quiet_hours_are_parsed_strictly(text, why):
    with pytest.raises(ValueError, match=why):
        QuietHours.parse(text)


def test_quiet_hours_over_midnight_and_by_day():
    assert NIGHT.covers(22 * 60) and NIGHT.covers(0) and NIGHT.covers(6 * 60 + 59) and not NIGHT.covers(7 * 60)
    day = QuietHours.parse("09:30-17:00")
    assert day.covers(9 * 60 + 30) and not day.covers(17 * 60) and str(day) == "09:30-17:00"
    assert not QuietHours.parse("08:00-08:00").covers(8 * 60)


# --- several buttons ---------------------------------------------------------------------------------------------


def test_each_button_rings_its_residents_and_names_itself():
    buttons = (Button(name="Flat 1", residents=(ALICE,)), Button(name="Flat 2", residents=(BOB, CAROL)))
    core = household(resident(ALICE), resident(BOB), resident(CAROL), buttons=buttons)
    actions = core.handle(ButtonPressed(button=1), 1.0)
    assert {core._calls[p.call_id].peer for p in of(actions, PrepareOffer)} == {BOB, CAROL}
    prep = of(actions, PrepareOffer)[0]
    out = core.handle(LocalOfferReady(call_id=prep.call_id, sdp=OFFER_SDP), 1.1)
    assert of(out, PostSnapshot)[0].label == "Flat 2"
    out = core.handle(TimerDue(), 100.0)
    assert any("(Flat 2)" in t for t in texts(out))


def test_a_press_on_another_button_during_a_call_posts_the_picture_and_a_busy_notice():
    buttons = (Button(name="Flat 1", residents=(ALICE,)), Button(name="Flat 2", residents=(BOB,)))
    core = household(resident(ALICE), resident(BOB), buttons=buttons)
    calls = ring(core, button=0)
    core.handle(answer(calls[ALICE], sender=ALICE, room_id=ROOMS[ALICE]), 2.0)
    actions = core.handle(ButtonPressed(button=1), 3.0)
    assert of(actions, PressFeedback)[0].accepted and not of(actions, PrepareOffer)
    assert pictures(actions) == [(ROOMS[BOB], "ring", "Flat 2", BOB)]
    assert any("busy with another call" in t and "(Flat 2)" in t for t in texts(actions, ROOMS[BOB]))
    # The same button again: acknowledged, nothing posted twice.
    again = core.handle(ButtonPressed(button=0), 3.5)
    assert of(again, PressFeedback)[0].accepted and not of(again, PostSnapshot) and not of(again, PrepareOffer)


def test_an_unknown_button_is_refused_and_logged():
    core = household(resident(ALICE))
    actions = core.handle(ButtonPressed(button=7), 1.0)
    assert of(actions, PressFeedback) == [PressFeedback(accepted=False, reason="no button 7 is configured")]


# --- rooms made by the door ----------------------------------------------------------------------------------------


def test_a_resident_without_a_room_is_rung_once_the_door_has_one_with_them():
    core = household(resident(ALICE), resident(BOB, room_id=None))
    waiting = f"waiting for {BOB} to join the room the door made"
    core.handle(ResidentRoomChanged(user_id=BOB, room_id="!made:example.org", waiting=waiting), 0.5)
    core.handle(RoomMembersChanged(room_id="!made:example.org", joined=frozenset({DOOR})), 0.5)
    assert waiting in core.room_problem(BOB) and core.led is LedState.IDLE  # Alice can still be rung
    calls = core.handle(ButtonPressed(), 1.0)
    assert {core._calls[p.call_id].peer for p in of(calls, PrepareOffer)} == {ALICE}
    assert waiting in core.ring_status()["not_rung"][BOB]
    core.handle(TimerDue(), 200.0)
    core.handle(RoomMembersChanged(room_id="!made:example.org", joined=frozenset({DOOR, BOB})), 201.0)
    core.handle(ResidentRoomChanged(user_id=BOB, room_id="!made:example.org"), 201.0)
    assert core.room_problem(BOB) is None
    actions = core.handle(ButtonPressed(), 300.0)
    assert {core._calls[p.call_id].peer for p in of(actions, PrepareOffer)} == {ALICE, BOB}
    assert [r["room_id"] for r in core.household_status()] == [ROOMS[ALICE], "!made:example.org"]


def test_a_third_member_in_one_room_ends_only_that_call():
    core = household(resident(ALICE), resident(BOB))
    calls = ring(core)
    actions = core.handle(RoomMembersChanged(room_id=ROOMS[BOB], joined=frozenset({DOOR, BOB, CAROL})), 2.0)
    assert [a.summary.peer for a in of(actions, CallEnded)] == [BOB]
    assert [c.call_id for c in core._calls.values()] == [calls[ALICE]]


def test_nobody_reachable_is_a_refused_press_that_says_why():
    core = household(resident(ALICE, room_id=None), ready=False)
    core.handle(HomeserverConnectionChanged(online=True), 0.0)
    actions = core.handle(ButtonPressed(), 1.0)
    (feedback,) = of(actions, PressFeedback)
    assert not feedback.accepted and "no room with @alice:example.org" in feedback.reason
    assert core.led is LedState.ERROR


# --- rights ---------------------------------------------------------------------------------------------------------


def _open(user: str, now: float):
    return TextMessageReceived(room_id=ROOMS[user], sender=user, body="!open", age_ms=100)


def test_open_needs_the_right_and_a_ring_that_rang_you():
    buttons = (Button(name="Flat 1", residents=(ALICE, BOB)), Button(name="Flat 2", residents=(CAROL,)))
    core = household(resident(ALICE), resident(BOB, open_door=False), resident(CAROL), buttons=buttons)
    ring(core, button=0)
    refused = core.handle(_open(BOB, 2.0), 2.0)
    assert not of(refused, OpenDoor) and any("open_door" in t for t in texts(refused, ROOMS[BOB]))
    other = core.handle(_open(CAROL, 2.0), 2.0)
    assert not of(other, OpenDoor) and any("rang for you" in t for t in texts(other, ROOMS[CAROL]))
    opened = core.handle(_open(ALICE, 2.0), 2.0)
    assert of(opened, OpenDoor)[0].by == ALICE


# --- property tests: a household driven at random -------------------------------------------------------------------

TIMINGS = CallTimings(ring_timeout=20.0, invite_lifetime=60.0, connect_timeout=5.0, max_call_duration=60.0,
                      prepare_timeout=4.0, ended_display=3.0)
PEOPLE = (ALICE, BOB, CAROL, "@dave:example.org")
ROOM_OF = {**ROOMS, "@dave:example.org": "!dave:example.org"}

op = st.one_of(
    st.tuples(st.just("press"), st.integers(0, 1), st.integers(0, 1439)),
    st.tuples(st.just("offer"), st.integers(0, 3)),
    st.tuples(st.sampled_from(["answer", "answer", "reject", "hangup", "connect", "call", "answer_ready"]),
              st.integers(0, 3)),
    st.tuples(st.just("wait"), st.floats(0.05, 25.0)),
)


@dataclass
class Household:
    core: DoorCore
    now: float = 0.0
    #: call ID -> resident, for invites the door sent (still possibly ringing), and when each was sent.
    invites: dict[str, str] = field(default_factory=dict)
    ringing_since: dict[str, float] = field(default_factory=dict)
    answered: set[str] = field(default_factory=set)
    preparing: list[str] = field(default_factory=list)
    incoming: dict[str, str] = field(default_factory=dict)
    counter: int = 0

    def feed(self, event) -> list:
        actions = self.core.handle(event, self.now)
        for prep in of(actions, PrepareOffer):
            self.preparing.append(prep.call_id)
        for sent in sends(actions, "m.call.invite"):
            self.invites[sent.content["call_id"]] = next(u for u, r in ROOM_OF.items() if r == sent.room_id)
            self.ringing_since[sent.content["call_id"]] = self.now
        return actions


def _residents(n: int, quiet: list[bool]) -> tuple[Resident, ...]:
    return tuple(Resident(user_id=PEOPLE[i], room_id=ROOM_OF[PEOPLE[i]], quiet_hours=NIGHT if quiet[i] else None)
                 for i in range(n))


TALKING = {CallState.CONNECTING, CallState.CONNECTING_RENEGOTIATING, CallState.CONNECTED, CallState.RENEGOTIATING,
           CallState.RECONNECTING, CallState.RESTARTING, CallState.ANSWERING}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 4), quiet=st.lists(st.booleans(), min_size=4, max_size=4),
       ops=st.lists(op, min_size=1, max_size=40))
def test_ring_groups_hold_their_rules_under_any_sequence(n, quiet, ops):
    residents = _residents(n, quiet)
    buttons = (Button(name="", residents=tuple(r.user_id for r in residents)),
               Button(name="Side", residents=(residents[-1].user_id,)))
    core = DoorCore(CoreSettings(user_id=DOOR, party_id=DOOR_PARTY, residents=residents, buttons=buttons,
                                 timings=TIMINGS))
    h = Household(core)
    h.feed(HomeserverConnectionChanged(online=True))
    for r in residents:
        h.feed(RoomMembersChanged(room_id=r.room_id, joined=frozenset({DOOR, r.user_id})))
    for step in ops:
        kind, *args = step
        person = PEOPLE[args[0] % n] if kind not in ("press", "wait") else None
        room = ROOM_OF[person] if person else None
        ringing_calls_before = {c.call_id for c in core._calls.values() if c.state is CallState.RINGING}
        if kind == "press":
            had_calls = bool(core._calls)
            actions = h.feed(ButtonPressed(button=args[0], minute_of_day=args[1]))
            placed = {core._calls[p.call_id].peer for p in of(actions, PrepareOffer)}
            pressed = buttons[args[0]].residents
            if not had_calls:
                # Quiet hours hold for any clock time: the quiet are never called and always get the picture.
                quiet_now = {r.user_id for r in residents if r.user_id in pressed and r.quiet_at(args[1])}
                assert placed == set(pressed) - quiet_now
                pictured = {p.room_id for p in of(actions, PostSnapshot)}
                assert all(ROOM_OF[u] in pictured for u in quiet_now)
            else:
                assert not placed  # one call at a time
        elif kind == "offer":
            # The media side finishes the offers being prepared (all of them, or the first only).
            for call_id in h.preparing[: None if args[0] % 2 else 1]:
                h.preparing.remove(call_id)
                h.feed(LocalOfferReady(call_id=call_id, sdp=OFFER_SDP))
        elif kind in ("answer", "reject", "hangup"):
            # A resident whose phone rings acts on the call (which of the ringing ones: chosen by the index).
            live = [c for c in h.invites if c in core._calls]
            if live:
                call_id = live[args[0] % len(live)]
                person = h.invites[call_id]
                make = {"answer": answer, "reject": reject, "hangup": hangup}[kind]
                actions = h.feed(make(call_id, sender=person, room_id=ROOM_OF[person]))
                if of(actions, ApplyAnswer):
                    h.answered.add(call_id)
                    # Every other call of the door ends at once.
                    assert [c.call_id for c in core._calls.values()] == [call_id]
                    assert not (ringing_calls_before - {call_id}) & set(core._calls)
        elif kind == "connect":
            for call_id in [c.call_id for c in core._calls.values() if c.peer == person]:
                h.feed(MediaStateChanged(call_id=call_id, state=MediaState.CONNECTED))
        elif kind == "call":
            h.counter += 1
            call_id = f"inc{h.counter:04d}"
            actions = h.feed(invite(call_id, sender=person, room_id=room))
            if of(actions, PrepareAnswer):
                h.incoming[call_id] = person
                assert [c.call_id for c in core._calls.values()] == [call_id]
        elif kind == "answer_ready":
            for call_id, who in list(h.incoming.items()):
                if who == person:
                    h.feed(LocalAnswerReady(call_id=call_id, sdp=ANSWER_SDP))
        elif kind == "wait":
            h.now += args[0]
            h.feed(TimerDue())
        # Never two conversations: at most one call past ringing, and then no other call at all.
        talking = [c for c in core._calls.values() if c.state in TALKING]
        assert len(talking) <= 1
        if talking:
            assert len(core._calls) == 1
        # Nothing rings past ring_timeout (the core acts on every deadline before anything else).
        for call in core._calls.values():
            if call.state is CallState.RINGING:
                assert h.now - h.ringing_since[call.call_id] <= TIMINGS.ring_timeout
        # Every call of the door is with a resident, in that resident's room.
        for call in core._calls.values():
            assert call.room_id == ROOM_OF[call.peer]
