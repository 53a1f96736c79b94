"""FrontPanel on gpiozero's MockFactory: the button, the LEDs and the relay, observed through the mock pins.

Presses are ``drive_low()`` on the button pin (pulled up, wired to ground). LED and relay levels are read from
the pins' recorded state histories, whose timestamps are real: the timing assertions check the requirements
(feedback within 100 ms, relay pulse length) on those recordings, with margins for a busy test machine.
The LED player is never early, only late when the machine is busy, so levels are sampled near the *end* of each
expected run.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from typing import Any

import gpiozero
import pytest

from intercom.core.states import LedState
from intercom.panel import PATTERNS, TICK, FrontPanel, PanelError, make_pin_factory
from intercom.panel.patterns import Pattern

from ..support import wait_until_sync as wait_until
from .helpers import PINS, FakeClock, history, level_at, rising_edges, start_recording



def pins(factory: Any) -> tuple[Any, Any, Any, Any]:
    """The mock pins: button, call LED, status LED, relay."""
    return tuple(factory.pin(n) for n in (PINS.button, PINS.call_led, PINS.status_led, PINS.relay))


def push(button: Any, clock: FakeClock, levels: str, every: float = 0.008) -> None:
    """Drive the button through ``levels`` (``d`` down, ``u`` up), the fake clock moving ``every`` seconds each."""
    for letter in levels:
        button.drive_low() if letter == "d" else button.drive_high()
        clock.advance(every)


# --- the button -----------------------------------------------------------------------------------------------


def test_a_press_calls_on_press_once(make_panel, mock_factory) -> None:
    panel, presses = make_panel()
    button = mock_factory.pin(PINS.button)
    button.drive_low()
    assert len(presses) == 1
    button.drive_high()
    assert len(presses) == 1


def test_contact_bounce_gives_one_press(make_panel, mock_factory) -> None:
    """5 toggles within 40 ms with debounce 50 ms: one press; a clean second push later: a second press."""
    clock = FakeClock()
    panel, presses = make_panel(clock=clock)
    button = mock_factory.pin(PINS.button)
    push(button, clock, "dudud")  # 5 edges, 8 ms apart: 32 ms from first to last
    assert len(presses) == 1
    clock.advance(0.3)
    push(button, clock, "ududu")  # letting go bounces too
    assert len(presses) == 1
    clock.advance(0.1)
    push(button, clock, "d")
    assert len(presses) == 2


def test_bounce_with_the_real_clock(make_panel, mock_factory) -> None:
    """The default clock is wired in: toggles as fast as the test can make them count once."""
    panel, presses = make_panel()
    button = mock_factory.pin(PINS.button)
    for _ in range(3):
        button.drive_low()
        button.drive_high()
    button.drive_low()
    assert len(presses) == 1
    time.sleep(0.1)
    button.drive_high()
    time.sleep(0.1)
    button.drive_low()
    assert len(presses) == 2


def test_a_held_button_counts_once(make_panel, mock_factory) -> None:
    clock = FakeClock()
    panel, presses = make_panel(clock=clock)
    button = mock_factory.pin(PINS.button)
    button.drive_low()
    clock.advance(30.0)
    time.sleep(0.05)
    button.drive_high()
    assert len(presses) == 1


def test_press_release_press_after_the_debounce_time_counts_twice(make_panel, mock_factory) -> None:
    clock = FakeClock()
    panel, presses = make_panel(clock=clock)
    button = mock_factory.pin(PINS.button)
    push(button, clock, "du", every=0.2)
    push(button, clock, "d")
    assert len(presses) == 2


def test_a_release_shorter_than_the_debounce_time_is_not_a_new_press(make_panel, mock_factory) -> None:
    clock = FakeClock()
    panel, presses = make_panel(clock=clock)
    button = mock_factory.pin(PINS.button)
    push(button, clock, "d", every=0.2)
    push(button, clock, "ud", every=0.03)
    assert len(presses) == 1


def test_a_pull_down_button_is_pressed_by_driving_high(make_panel, mock_factory) -> None:
    panel, presses = make_panel(dataclasses.replace(PINS, button_pull_up=False))
    button = mock_factory.pin(PINS.button)
    button.drive_high()
    assert len(presses) == 1


def test_an_on_press_error_is_logged_and_the_button_keeps_working(make_panel, mock_factory, caplog) -> None:
    def broken(button: int) -> None:
        raise RuntimeError("orchestrator bug")

    clock = FakeClock()
    panel, presses = make_panel(on_press=broken, clock=clock)
    button = mock_factory.pin(PINS.button)
    with caplog.at_level(logging.ERROR, logger="intercom.panel"):
        push(button, clock, "du", every=0.2)
        push(button, clock, "d")
    assert len(presses) == 2
    assert [r.exc_info[1].args[0] for r in caplog.records] == ["orchestrator bug"] * 2


def test_press_acts_like_the_button_without_debouncing(make_panel, mock_factory) -> None:
    """The control socket's software press: the same flash and on_press, once per call."""
    panel, presses = make_panel()
    panel.show(LedState.IDLE)
    call = mock_factory.pin(PINS.call_led)
    panel.press()
    assert call.state and len(presses) == 1
    panel.press()
    assert len(presses) == 2
    panel.close()
    panel.press()
    assert len(presses) == 2


# --- feedback -------------------------------------------------------------------------------------------------


def test_a_press_lights_the_call_led_within_100_ms_even_while_on_press_blocks(make_panel, mock_factory) -> None:
    """The panel lights the LED itself, in the button callback, before on_press (blocking here for 300 ms)."""
    panel, presses = make_panel(on_press=lambda button: time.sleep(0.3))
    panel.show(LedState.IDLE)
    button, call, _, _ = pins(mock_factory)
    [call_started] = start_recording(call)
    # Taken just before the press rather than rebuilt from the button pin's history: two pins' histories are
    # rebuilt from different clearing times, microseconds apart, which made the order of nearly equal times wobble.
    pressed_at = time.monotonic()
    button.drive_low()  # returns only after on_press
    lit_at = next(at for at, level in history(call, call_started) if level)
    assert len(presses) == 1
    assert 0 <= lit_at - pressed_at < 0.100
    assert lit_at < presses[0]  # lit before on_press was even called


def test_accepted_feedback_is_one_glow_then_the_state_pattern(make_panel, mock_factory) -> None:
    panel, _ = make_panel()
    panel.show(LedState.IDLE)
    button, call, _, _ = pins(mock_factory)
    [started] = start_recording(call)
    button.drive_low()
    panel.feedback(True)
    wait_until(lambda: len(call.states) >= 3)
    time.sleep(0.2)
    changes = history(call, started)
    assert [level for _, level in changes] == [False, True, False]  # one glow, then IDLE: dark
    assert 0.28 <= changes[2][0] - changes[1][0] <= 0.6


def test_refused_feedback_flickers_then_returns_to_the_state_pattern(make_panel, mock_factory) -> None:
    panel, _ = make_panel()
    panel.show(LedState.IN_CALL)  # call LED steady on
    button, call, _, _ = pins(mock_factory)
    [started] = start_recording(call)
    button.drive_low()
    panel.feedback(False)
    wait_until(lambda: len(rising_edges(history(call, started))) >= 4)
    time.sleep(0.2)
    changes = history(call, started)
    assert len(rising_edges(changes)) == 4  # the flicker: 4 flashes, unlike the single accepted glow
    assert changes[-1][1] is True  # back to IN_CALL's steady light, and staying there


def test_a_state_change_lets_a_running_flash_finish(make_panel, mock_factory) -> None:
    """PressFeedback then SetLeds(CALLING) arrive together: the glow plays out (dark 0.3-0.4 s), then the blink."""
    panel, _ = make_panel()
    panel.show(LedState.IDLE)
    button, call, _, _ = pins(mock_factory)
    [started] = start_recording(call)
    button.drive_low()
    panel.feedback(True)
    panel.show(LedState.CALLING)
    time.sleep(1.05)
    changes = history(call, started)
    assert level_at(changes, started + 0.28) is True
    assert level_at(changes, started + 0.38) is False  # the flash's dark end, not CALLING's "on 0.5 s"
    assert level_at(changes, started + 0.85) is True  # CALLING: on 0.5 s from 0.4 s
    assert level_at(changes, started + 1.0) is False


# --- LED patterns ---------------------------------------------------------------------------------------------

WINDOW = 2.2  # seconds: every pattern's full cycle fits (the slowest repeats every 2 s)
LATE_ALLOWANCE = 0.15  # how late the pattern player may show a run on a busy machine


def shown_between(changes: list[tuple[float, bool]], start: float, end: float, level: bool) -> bool:
    """Whether the recorded pin showed ``level`` at some moment in ``[start, end]``."""
    if level_at(changes, start) is level:
        return True
    return any(start <= at <= end and state is level for at, state in changes)


def expected_runs(pattern: Pattern) -> list[tuple[float, float, bool]]:
    """``(start, end, level)`` of each run of equal levels that ends within WINDOW, as the pattern's frames say."""
    ticks = round(2 * WINDOW / TICK)  # beyond WINDOW, so a run is never cut short by the window's end
    frames = list(itertools.islice(pattern.frames(), ticks))
    frames += [frames[-1]] * (ticks - len(frames))
    runs = []
    for level, group in itertools.groupby(enumerate(frames), key=lambda item: item[1]):
        indices = [index for index, _ in group]
        runs.append((indices[0] * TICK, (indices[-1] + 1) * TICK, level))
    return [run for run in runs if run[1] <= WINDOW + 1e-9] or [(0.0, WINDOW, frames[0])]


def test_each_state_drives_the_pins_as_the_table_says_and_every_state_looks_different() -> None:
    """All nine states at once, one mock Pi each, recorded for 2.2 s of real time.

    Each recorded history must show, for every run the table gives, the run's level at some moment between the
    run's start and its end plus LATE_ALLOWANCE (the player is never early, and a busy machine makes it late), and
    the nine states' patterns, sampled every tick, must all differ.
    """
    factories = {state: make_pin_factory("mock") for state in LedState}
    panels = {state: FrontPanel(PINS, lambda button: None, pin_factory=factories[state]) for state in LedState}
    try:
        starts = {}
        for state, panel in panels.items():
            panel.show(LedState.IDLE)  # a known pattern to change from, so every state starts with show()
            _, call, status, _ = pins(factories[state])
            starts[state] = start_recording(call, status)
            panel.show(state)
        time.sleep(WINDOW + 0.1)
        recorded = {
            state: [history(pin, started) for pin, started in zip(pins(factories[state])[1:3], starts[state])]
            for state in LedState
        }
    finally:
        for state, panel in panels.items():
            panel.close()
            factories[state].reset()

    signatures = {}
    for state, (call_changes, status_changes) in recorded.items():
        indication = PATTERNS[state]
        for led, pattern, changes, started in [
            ("call", indication.call, call_changes, starts[state][0]),
            ("status", indication.status, status_changes, starts[state][1]),
        ]:
            for run_start, run_end, level in expected_runs(pattern):
                assert shown_between(changes, started + run_start, started + run_end + LATE_ALLOWANCE, level), (
                    f"{state.name}: {led} LED should be {'on' if level else 'off'} "
                    f"{run_start:.2f}-{run_end:.2f} s; recorded {changes}"
                )
        signatures[state] = tuple(
            tuple(itertools.islice(pattern.frames(), round(WINDOW / TICK))) for pattern in (indication.call,
                                                                                            indication.status)
        )
    for a, b in itertools.combinations(LedState, 2):
        assert signatures[a] != signatures[b], f"{a.name} and {b.name} recorded the same"


def test_showing_the_same_state_again_keeps_the_rhythm(make_panel, mock_factory) -> None:
    panel, _ = make_panel()
    _, call, _, _ = pins(mock_factory)
    [started] = start_recording(call)
    panel.show(LedState.CALLING)
    time.sleep(0.2)
    panel.show(LedState.CALLING)  # a restart would keep it on until 0.7 s
    time.sleep(0.5)
    assert level_at(history(call, started), started + 0.65) is False


def test_the_panel_starts_offline_with_the_relay_off(make_panel, mock_factory) -> None:
    panel, _ = make_panel()
    _, call, status, relay = pins(mock_factory)
    assert panel.state is LedState.OFFLINE
    assert (call.state, status.state, relay.state) == (False, True, False)
    assert not panel.relay_active


# --- the relay ------------------------------------------------------------------------------------------------


def test_a_relay_pulse_switches_on_then_off_after_its_time(make_panel, mock_factory) -> None:
    panel, _ = make_panel()
    relay = mock_factory.pin(PINS.relay)
    [started] = start_recording(relay)
    panel.pulse_relay(0.1)
    assert panel.relay_active and relay.state
    wait_until(lambda: not relay.state)
    assert not panel.relay_active
    changes = history(relay, started)
    assert [level for _, level in changes] == [False, True, False]
    assert 0.1 <= changes[2][0] - changes[1][0] <= 0.3


def test_a_pulse_during_a_pulse_extends_it_and_never_stacks(make_panel, mock_factory) -> None:
    panel, _ = make_panel()
    relay = mock_factory.pin(PINS.relay)
    [started] = start_recording(relay)
    panel.pulse_relay(0.5)
    time.sleep(0.1)
    second = time.monotonic()
    panel.pulse_relay(0.5)
    assert second - started < 0.45, "the test machine stalled; the first pulse may have ended already"
    wait_until(lambda: not relay.state)
    changes = history(relay, started)
    assert [level for _, level in changes] == [False, True, False]  # one pulse: it never dropped in between
    off_at = changes[2][0]
    assert 0.5 <= off_at - second <= 0.65  # ends 0.5 s after the second pulse: extended, not stacked (1.0 s)


def test_a_short_pulse_does_not_cut_a_long_one_short(make_panel, mock_factory) -> None:
    panel, _ = make_panel()
    relay = mock_factory.pin(PINS.relay)
    [started] = start_recording(relay)
    panel.pulse_relay(0.4)
    panel.pulse_relay(0.1)
    wait_until(lambda: not relay.state)
    changes = history(relay, started)
    assert [level for _, level in changes] == [False, True, False]
    assert 0.4 <= changes[2][0] - changes[1][0] <= 0.55


def test_close_mid_pulse_switches_the_relay_off(plain_factory) -> None:
    panel = FrontPanel(PINS, lambda button: None, pin_factory=plain_factory)
    relay = plain_factory.pin(PINS.relay)
    panel.pulse_relay(5.0)
    panel.close()
    assert not relay.state  # driven off before the pin was released
    assert relay.function == "input"
    assert not panel.relay_active
    time.sleep(0.05)
    assert not relay.state


def test_an_active_low_relay_is_off_when_its_pin_is_high(plain_factory) -> None:
    with FrontPanel(dataclasses.replace(PINS, relay_active_high=False), lambda button: None,
                    pin_factory=plain_factory) as panel:
        relay = plain_factory.pin(PINS.relay)
        assert relay.state and not panel.relay_active
        panel.pulse_relay(0.1)
        assert not relay.state and panel.relay_active
        time.sleep(0.3)
        assert relay.state and not panel.relay_active
        panel.pulse_relay(5.0)
    assert relay.state  # driven off (high) before the pin was released
    assert relay.function == "input"


@pytest.mark.parametrize("seconds", [0, -1, float("nan"), float("inf")])
def test_a_pulse_must_last_a_positive_finite_time(make_panel, seconds: float) -> None:
    panel, _ = make_panel()
    with pytest.raises(ValueError):
        panel.pulse_relay(seconds)
    assert not panel.relay_active


def test_no_pulse_after_close(make_panel) -> None:
    panel, _ = make_panel()
    panel.close()
    with pytest.raises(PanelError, match="closed"):
        panel.pulse_relay(1.0)


# --- closing and setting up -----------------------------------------------------------------------------------


def test_close_is_idempotent_turns_everything_off_and_releases_the_pins(plain_factory) -> None:
    presses = []
    panel = FrontPanel(PINS, presses.append, pin_factory=plain_factory)
    panel.show(LedState.IN_CALL)
    button, call, status, relay = pins(plain_factory)
    panel.pulse_relay(5.0)
    assert (call.state, status.state, relay.state) == (True, True, True)
    panel.close()
    panel.close()
    assert (call.state, status.state, relay.state) == (False, False, False)  # driven off, then released
    assert {pin.function for pin in (button, call, status, relay)} == {"input"}
    panel.show(LedState.CALLING)  # a late display update during shutdown is ignored
    panel.feedback(True)
    time.sleep(0.1)
    assert (call.state, status.state) == (False, False)
    button.drive_low()
    assert presses == []
    FrontPanel(PINS, lambda button: None, pin_factory=plain_factory).close()  # every pin was released


def test_a_busy_pin_is_reported_by_role_and_nothing_stays_reserved(make_panel, mock_factory) -> None:
    blocker = gpiozero.Button(PINS.button, pin_factory=mock_factory)
    with pytest.raises(PanelError, match="GPIO17 for the button"):
        make_panel()
    blocker.close()
    make_panel()  # the relay and LEDs opened before the failure were released


def test_a_pin_that_does_not_exist_is_reported(make_panel) -> None:
    with pytest.raises(PanelError, match="GPIO99 for the call LED"):
        make_panel(dataclasses.replace(PINS, call_led=99))


def test_the_panel_is_a_context_manager(mock_factory) -> None:
    with FrontPanel(PINS, lambda button: None, pin_factory=mock_factory) as panel:
        panel.pulse_relay(5.0)
    assert not mock_factory.pin(PINS.relay).state
