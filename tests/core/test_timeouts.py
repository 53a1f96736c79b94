"""Timeouts and what the LEDs show, with time passed in."""

import pytest

from intercom.core import (
    ButtonPressed,
    CallEnded,
    CallState,
    HomeserverConnectionChanged,
    LedState,
    MediaState,
    MediaStateChanged,
    Outcome,
    PrepareOffer,
    SetLeds,
    TimerDue,
)

from .helpers import answer, connect, invite, make_core, of, place_call, sends, take_call


def _due(core, now):
    return core.handle(TimerDue(), now)


def test_ring_timeout_hangs_up_invite_timeout_and_shows_missed():
    core = make_core(ring_timeout=30)
    call_id, _ = place_call(core, now=1.0)
    assert core.next_deadline() == pytest.approx(31.1)
    assert sends(_due(core, 31.0)) == []  # not yet
    actions = _due(core, 31.1)
    (h,) = sends(actions)
    assert h.content["reason"] == "invite_timeout"
    assert of(actions, CallEnded)[0].summary.outcome is Outcome.MISSED
    assert of(actions, SetLeds) == [SetLeds(state=LedState.MISSED)]


def test_missed_led_returns_to_idle_after_the_display_time():
    core = make_core(ring_timeout=30, ended_display=8)
    place_call(core, now=1.0)
    _due(core, 31.1)
    assert core.next_deadline() == pytest.approx(39.1)
    assert of(_due(core, 39.1), SetLeds) == [SetLeds(state=LedState.IDLE)]
    assert core.next_deadline() is None


def test_a_late_timer_acts_before_the_event_that_comes_after_it():
    """An answer that arrives after the ring time finds the call already over."""
    core = make_core(ring_timeout=30)
    call_id, _ = place_call(core, now=1.0)
    actions = core.handle(answer(call_id), 40.0)
    assert sends(actions, "m.call.hangup") and core.state is CallState.IDLE
    assert sends(actions, "m.call.select_answer") == []


def test_connect_timeout_hangs_up_ice_failed():
    core = make_core(connect_timeout=15)
    take_call(core, now=1.0)
    actions = _due(core, core.next_deadline())
    assert sends(actions)[0].content["reason"] == "ice_failed"
    assert of(actions, CallEnded)[0].summary.outcome is Outcome.FAILED


def test_prepare_timeout_sends_nothing_for_our_own_call():
    core = make_core(prepare_timeout=5)
    core.handle(ButtonPressed(), 1.0)
    actions = _due(core, 6.0)
    assert sends(actions) == [] and of(actions, CallEnded)[0].summary.outcome is Outcome.FAILED


def test_prepare_timeout_for_an_answer_refuses_the_call():
    core = make_core(prepare_timeout=5)
    core.handle(invite("c1"), 1.0)
    assert sends(_due(core, 6.0))[0].event_type == "m.call.reject"


def test_max_call_duration_ends_the_call():
    core = make_core(max_call_duration=120)
    call_id, _ = place_call(core)
    core.handle(answer(call_id), 2.0)
    connect(core, call_id, 3.0)
    assert core.next_deadline() == pytest.approx(123.0)
    actions = _due(core, 123.0)
    assert sends(actions)[0].content["reason"] == "user_hangup"
    assert of(actions, CallEnded)[0].summary.duration == pytest.approx(120.0)


def test_media_disconnected_too_long_hangs_up_ice_timeout():
    core = make_core(reconnect_grace=10)
    take_call(core, "c1", now=1.0)
    connect(core, "c1", 2.0)
    core.handle(MediaStateChanged(call_id="c1", state=MediaState.DISCONNECTED), 5.0)
    assert core.next_deadline() == pytest.approx(15.0)
    assert sends(_due(core, 15.0))[0].content["reason"] == "ice_timeout"


def test_media_reconnecting_within_the_grace_keeps_the_call():
    core = make_core(reconnect_grace=10)
    take_call(core, "c1", now=1.0)
    connect(core, "c1", 2.0)
    core.handle(MediaStateChanged(call_id="c1", state=MediaState.DISCONNECTED), 5.0)
    connect(core, "c1", 8.0)
    assert sends(_due(core, 15.0)) == [] and core.state is CallState.CONNECTED


@pytest.mark.parametrize("steps, led", [
    ([], LedState.IDLE),
    ([ButtonPressed()], LedState.CALLING),
    ([HomeserverConnectionChanged(online=False)], LedState.OFFLINE),
])
def test_leds_follow_the_state(steps, led):
    core = make_core()
    for step in steps:
        core.handle(step, 1.0)
    assert core.led is led


def test_leds_start_offline_and_every_change_is_emitted_once():
    core = make_core(ready=False)
    assert core.led is LedState.OFFLINE
    assert of(core.handle(HomeserverConnectionChanged(online=True), 0.0), SetLeds) == [SetLeds(state=LedState.ERROR)]
    assert of(core.handle(HomeserverConnectionChanged(online=True), 0.0), SetLeds) == []


def test_call_continues_while_the_homeserver_is_away():
    core = make_core()
    take_call(core, "c1")
    connect(core, "c1", 2.0)
    core.handle(HomeserverConnectionChanged(online=False), 3.0)
    assert core.state is CallState.CONNECTED and core.led is LedState.IN_CALL
    assert of(core.handle(ButtonPressed(), 4.0), PrepareOffer) == []


def test_a_device_fault_shows_the_error_pattern_while_idle_but_calls_still_work():
    from intercom.core import FaultChanged

    core = make_core()
    assert of(core.handle(FaultChanged(fault="intercom.toml rejected"), 1.0), SetLeds) == [SetLeds(state=LedState.ERROR)]
    assert core.fault == "intercom.toml rejected"
    assert of(core.handle(ButtonPressed(), 2.0), PrepareOffer)  # the door keeps working on its previous config
    assert core.led is LedState.CALLING
    assert of(core.handle(FaultChanged(fault=None), 3.0), SetLeds) == []  # the call's pattern stays


def test_faults_are_kept_per_source_and_the_error_pattern_lasts_until_the_last_one_clears():
    from intercom.core import FaultChanged

    core = make_core()
    core.handle(FaultChanged(fault="card config rejected", source="boot-config"), 1.0)
    core.handle(FaultChanged(fault="Matrix: password refused", source="matrix"), 2.0)
    assert core.fault == "card config rejected; Matrix: password refused" and core.led is LedState.ERROR
    core.handle(FaultChanged(fault="card config rejected again", source="boot-config"), 3.0)
    assert core.fault == "card config rejected again; Matrix: password refused"
    assert of(core.handle(FaultChanged(fault=None, source="boot-config"), 4.0), SetLeds) == []
    assert core.fault == "Matrix: password refused"
    assert of(core.handle(FaultChanged(fault=None, source="matrix"), 5.0), SetLeds) == [SetLeds(state=LedState.IDLE)]
    assert core.fault is None
