"""The call table as a whole: every state × every input lands where the table says, or is refused untouched.

The two-door wire tests (``test_properties.py``) show the rules work together; these show the table itself is
total and sound, so no input a peer, the media side or a timer can produce leaves a call in a state the table does
not name.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intercom.core import (
    CallEnded,
    CallInput,
    CallState,
    CallTimings,
    CloseMedia,
    Direction,
    IceCandidate,
    Ignored,
    PostSnapshot,
    SendCallEvent,
    SendNotice,
)
from intercom.core.call import TABLE, TIMERS, Call, Details
from intercom.core.legacy import LegacyWire
from intercom.core.states import TALKED

from .helpers import DOOR_PARTY, OFFER_SDP, OWNER, PHONE, ROOM

TIMINGS = CallTimings()
LIVE = [s for s in CallState if s not in (CallState.IDLE, CallState.ENDED)]
#: Every input with what it would carry in real life.
DETAILS = Details(sdp=OFFER_SDP, stream_id="s", local=({"candidate": "candidate:1 1 udp 1 10.0.0.1 9 typ host",
                                                       "sdpMid": "0"},),
                  remote=((PHONE, IceCandidate(candidate="candidate:2 1 udp 1 10.0.0.2 9 typ host", sdp_mid="0")),),
                  party=PHONE, detail="because", rival_call_id="1700000000000rival")


def direction_of(state: CallState) -> Direction:
    return Direction.INCOMING if state is CallState.ANSWERING else Direction.OUTGOING


def call_in(state: CallState, direction: Direction | None = None, now: float = 100.0) -> Call:
    """A call as the table leaves it in ``state``: its timers running, its peer chosen once it has one."""
    direction = direction or direction_of(state)
    chosen = direction is Direction.INCOMING or state not in (CallState.IDLE, CallState.PREPARING, CallState.RINGING)
    call = Call(call_id="zcall", direction=direction, peer=OWNER, room_id=ROOM, wire=LegacyWire(DOOR_PARTY),
                timings=TIMINGS, started_at=now - 50, state=state, peer_party=PHONE if chosen else None,
                peer_chosen=chosen, connected_at=now - 20 if state in TALKED else None)
    call.timers = {what: now + 500 for what, (_, states) in TIMERS.items() if state in states}
    return call


def running(call: Call) -> set[CallInput]:
    return set(call.timers)


def timers_of(state: CallState) -> set[CallInput]:
    return {what for what, (_, states) in TIMERS.items() if state in states}


def both_directions(state: CallState) -> list[Direction]:
    if state in (CallState.PREPARING, CallState.RINGING):
        return [Direction.OUTGOING]
    if state is CallState.ANSWERING:
        return [Direction.INCOMING]
    return [Direction.OUTGOING, Direction.INCOMING]


CASES = [(state, direction, what) for state in CallState for direction in both_directions(state)
         for what in CallInput]


def check_step(call: Call, what: CallInput, now: float, details: Details = DETAILS) -> list:
    """Step ``call`` and check the result against the table: the invariants every row and refusal keep."""
    before = copy.deepcopy(dataclasses.asdict(call) | {"wire": None})
    state = call.state
    actions = call.step(what, now, details)
    row = TABLE.get((state, what))
    if row is None:
        assert [type(a) for a in actions] == [Ignored], actions
        assert actions[0].reason
        assert copy.deepcopy(dataclasses.asdict(call) | {"wire": None}) == before, "a refusal changed the call"
        return actions
    assert not any(isinstance(a, Ignored) for a in actions), actions
    assert call.state is row.next
    ended = [a for a in actions if isinstance(a, CallEnded)]
    if row.next is CallState.ENDED:
        assert len(ended) == 1 and ended[0].summary.call_id == call.call_id
        at = actions.index(CloseMedia(call_id=call.call_id))
        assert actions[at + 1] is ended[0], "end: close media, then CallEnded"
        assert all(isinstance(a, SendNotice) for a in actions[at + 2:]), "only notices follow the end"
        assert call.summary is ended[0].summary and call.result_led is not None
        assert call.timers == {}
    else:
        assert ended == [] and not any(isinstance(a, CloseMedia) for a in actions)
        assert running(call) == timers_of(call.state)
        for timer in timers_of(call.state) & timers_of(state):
            assert call.timers[timer] == before["timers"][timer], f"{timer.name} restarted by a move within it"
    for action in actions:
        if isinstance(action, SendCallEvent):
            assert action.room_id == ROOM and action.content["call_id"] in (call.call_id, details.rival_call_id)
            assert action.content["party_id"] == DOOR_PARTY and action.content["version"] == "1"
        if isinstance(action, PostSnapshot):
            assert state is CallState.PREPARING and action.reason == "ring"
    return actions


@pytest.mark.parametrize(("state", "direction", "what"), CASES,
                         ids=[f"{s.name}-{d.name[:2]}-{w.name}" for s, d, w in CASES])
def test_every_state_and_input_is_either_a_row_or_refused_untouched(state, direction, what):
    check_step(call_in(state, direction), what, 101.0)


def test_every_started_call_can_always_be_ended_and_ended_is_final():
    for state in LIVE:
        for what in (CallInput.LOCAL_HANGUP, CallInput.INTERNAL_ERROR, CallInput.ROOM_UNUSABLE,
                     CallInput.MEDIA_ERROR):
            assert TABLE[state, what].next is CallState.ENDED, (state, what)
    assert not any(state is CallState.ENDED for state, _ in TABLE)


def test_every_state_is_reachable_from_idle_and_can_reach_ended():
    edges: dict[CallState, set[CallState]] = {}
    for (state, _), row in TABLE.items():
        edges.setdefault(state, set()).add(row.next)
    seen, todo = {CallState.IDLE}, [CallState.IDLE]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(CallState)
    assert all(CallState.ENDED in edges[state] for state in LIVE)


def test_every_timer_ends_the_call_or_changes_its_state_where_it_runs():
    for timer, (setting, states) in TIMERS.items():
        assert hasattr(TIMINGS, setting)
        for state in states:
            assert TABLE[state, timer].next is not state, (timer, state)


def test_a_timer_runs_from_entering_its_states_until_leaving_them():
    call = call_in(CallState.CONNECTED)
    call.step(CallInput.MEDIA_DISCONNECTED, 105.0)
    grace = call.timers[CallInput.RECONNECT_TIMEOUT]
    assert grace == 105.0 + TIMINGS.reconnect_grace
    call.step(CallInput.NEGOTIATE, 106.0, DETAILS)  # an ICE restart: the grace keeps running
    call.step(CallInput.NEGOTIATION_ANSWER_READY, 107.0, DETAILS)
    assert call.state is CallState.RECONNECTING and call.timers[CallInput.RECONNECT_TIMEOUT] == grace
    assert call.due(grace - 0.1) is None and call.due(grace) is CallInput.RECONNECT_TIMEOUT
    call.step(CallInput.MEDIA_CONNECTED, 108.0)
    assert CallInput.RECONNECT_TIMEOUT not in call.timers and call.state is CallState.CONNECTED


INPUTS = st.sampled_from(list(CallInput))


@settings(max_examples=500, deadline=None)
@given(incoming=st.booleans(), steps=st.lists(st.tuples(INPUTS, st.floats(0.0, 20.0)), max_size=30))
def test_any_sequence_of_inputs_keeps_a_call_within_its_table(incoming, steps):
    """From a fresh call, any inputs at any times: each step is a row or an untouched refusal, a call ends at
    most once, and nothing moves it after that."""
    call = Call(call_id="zcall", direction=Direction.INCOMING if incoming else Direction.OUTGOING, peer=OWNER,
                room_id=ROOM, wire=LegacyWire(DOOR_PARTY), timings=TIMINGS, started_at=0.0,
                peer_party=PHONE if incoming else None, peer_chosen=incoming)
    now, ends = 0.0, 0
    for what, dt in [(CallInput.TAKE if incoming else CallInput.PLACE, 0.0), *steps]:
        now += dt
        if what is CallInput.ANSWER and call.direction is Direction.INCOMING:
            continue  # the classifier never makes an answer an input of a call the door did not place
        actions = check_step(call, what, now)
        ends += sum(isinstance(a, CallEnded) for a in actions)
        assert ends == (call.state is CallState.ENDED)
        if call.state not in (CallState.IDLE, CallState.ENDED):
            assert (call.connected_at is not None) == (call.state in TALKED)
