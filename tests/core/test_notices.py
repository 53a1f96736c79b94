"""What the door tells the room when a call ends: the words and the moment are the core's."""

import pytest

from intercom.core import (
    CallEnded,
    MediaState,
    MediaStateChanged,
    SendNotice,
    TimerDue,
    TurnAvailabilityChanged,
)
from intercom.core.notices import NO_PICTURE, TIME

from .helpers import ROOM, answer, connect, hangup, make_core, of, place_call, received, reject, take_call


def _after_end(actions):
    """The notices, checked to come after the call's CallEnded."""
    (ended,) = of(actions, CallEnded)
    found = of(actions, SendNotice)
    assert all(actions.index(n) > actions.index(ended) for n in found)
    return found


def test_a_call_that_rings_out_says_missed_in_reply_to_the_rings_picture():
    core = make_core(ring_timeout=30)
    place_call(core, now=1.0)
    (notice,) = _after_end(core.handle(TimerDue(), 31.1))
    assert notice == SendNotice(room_id=ROOM, text=f"Missed call from the door at {TIME}: nobody answered.",
                                reply_to_ring=True, no_picture=NO_PICTURE)


@pytest.mark.parametrize("decline", [lambda call_id: reject(call_id),
                                     lambda call_id: hangup(call_id, party=None, version=0)],
                         ids=["reject", "version 0 hangup"])
def test_a_declined_call_says_so_in_reply_to_the_rings_picture(decline):
    core = make_core()
    call_id, _ = place_call(core)
    (notice,) = _after_end(core.handle(decline(call_id), 5.0))
    assert notice.text == f"Call from the door at {TIME} was declined." and notice.reply_to_ring


def test_calls_that_were_answered_and_ended_normally_say_nothing():
    core = make_core()
    call_id, _ = place_call(core)
    core.handle(answer(call_id), 2.0)
    connect(core, call_id, 3.0)
    assert of(core.handle(hangup(call_id), 9.0), SendNotice) == []
    take_call(core, "1700000000000second", now=20.0)
    connect(core, "1700000000000second", 21.0)
    assert of(core.handle(hangup("1700000000000second"), 30.0), SendNotice) == []


@pytest.mark.parametrize("turn, why", [(False, "offers no TURN server"), (True, "not even through")])
def test_a_call_that_found_no_network_path_says_why(turn, why):
    core = make_core(connect_timeout=15)
    core.handle(TurnAvailabilityChanged(available=turn), 0.5)
    take_call(core, now=1.0)
    (notice,) = _after_end(core.handle(TimerDue(), 16.2))
    assert notice.text.startswith(f"Call to the door at {TIME} could not connect") and why in notice.text
    assert not notice.reply_to_ring


def test_ice_failing_before_connecting_says_no_path_and_after_connecting_says_cut_off():
    core = make_core()
    call_id, _ = place_call(core)
    core.handle(answer(call_id), 2.0)
    (notice,) = _after_end(core.handle(MediaStateChanged(call_id=call_id, state=MediaState.FAILED), 3.0))
    assert "Call from the door" in notice.text and "could not connect" in notice.text
    take_call(core, "1700000000000second", now=20.0)
    connect(core, "1700000000000second", 21.0)
    actions = core.handle(MediaStateChanged(call_id="1700000000000second", state=MediaState.FAILED), 25.0)
    (notice,) = _after_end(actions)
    assert notice.text.startswith(f"The call to the door was cut off at {TIME}") and "Call the door again" in notice.text


def test_media_that_stays_lost_past_the_grace_says_cut_off():
    core = make_core(reconnect_grace=10)
    take_call(core, now=1.0)
    connect(core, "1700000000000abcdef", 2.0)
    core.handle(MediaStateChanged(call_id="1700000000000abcdef", state=MediaState.DISCONNECTED), 5.0)
    (notice,) = _after_end(core.handle(TimerDue(), 15.0))
    assert "cut off" in notice.text


def test_refused_and_replayed_events_post_no_notice():
    core = make_core()
    call_id, _ = place_call(core)
    actions = core.handle(received("m.call.reject", {"call_id": call_id, "version": "1", "party_id": "P"},
                                   sender="@stranger:example.org"), 2.0)
    assert of(actions, SendNotice) == [] and of(actions, CallEnded) == []
