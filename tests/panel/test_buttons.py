"""An apartment panel: several bell buttons, one call LED, on gpiozero's MockFactory.

Each button is its own gpiozero device with its own debouncer; ``on_press`` receives the button's index. A press
on any button flashes the call LED at once, also while the LED shows a call rung by another button, and the call's
pattern comes back after the flash. As in test_frontpanel.py, LED levels are read from the mock pins' recorded
histories, whose timestamps are real; levels are sampled near the *end* of each expected run (the LED player is
never early, only late on a busy machine).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import gpiozero
import pytest

from intercom.core.states import LedState
from intercom.panel import FrontPanel, PanelError

from ..support import wait_until_sync as wait_until
from .helpers import PINS, FakeClock, history, level_at, start_recording

#: Three bell buttons: GPIO17 (button #0, the one-button default), GPIO5 and GPIO6.
THREE = dataclasses.replace(PINS, extra_buttons=(5, 6))
TWO = dataclasses.replace(PINS, extra_buttons=(5,))


def push(button: Any, clock: FakeClock, levels: str, every: float = 0.008) -> None:
    """Drive a button through ``levels`` (``d`` down, ``u`` up), the fake clock moving ``every`` seconds each."""
    for letter in levels:
        button.drive_low() if letter == "d" else button.drive_high()
        clock.advance(every)


# --- which button -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pins", [TWO, THREE], ids=["two", "three"])
def test_each_press_reports_its_button_index(make_panel, mock_factory, pins) -> None:
    clock = FakeClock()
    panel, presses = make_panel(pins, clock=clock)
    assert panel.button_count == len(pins.buttons)
    order = [*reversed(range(len(pins.buttons))), 0]
    for index in order:
        clock.advance(0.2)  # every button released long enough for its next press to count
        push(mock_factory.pin(pins.buttons[index]), clock, "du", every=0.1)
    assert presses.buttons == order


def test_a_callable_with_a_default_argument_gets_the_index(mock_factory) -> None:
    """What the orchestrator passes: ``button_pressed_threadsafe(self, button: int = 0)``."""

    class Orchestrator:
        def __init__(self) -> None:
            self.pressed: list[int] = []

        def button_pressed_threadsafe(self, button: int = 0) -> None:
            self.pressed.append(button)

    orchestrator = Orchestrator()
    with FrontPanel(THREE, orchestrator.button_pressed_threadsafe, pin_factory=mock_factory):
        mock_factory.pin(6).drive_low()
        mock_factory.pin(17).drive_low()
    assert orchestrator.pressed == [2, 0]


def test_a_single_button_panel_reports_button_zero(make_panel, mock_factory) -> None:
    panel, presses = make_panel()  # PanelPins without extra_buttons, as before there could be more
    mock_factory.pin(PINS.button).drive_low()
    assert presses.buttons == [0] and panel.button_count == 1


def test_press_presses_button_n(make_panel, mock_factory) -> None:
    """The software press (control socket, demo) names its button; the first one by default."""
    panel, presses = make_panel(THREE)
    panel.press(2)
    panel.press()
    panel.press(1)
    assert presses.buttons == [2, 0, 1]
    for wrong in (3, -1):
        with pytest.raises(ValueError, match="no button"):
            panel.press(wrong)
    assert presses.buttons == [2, 0, 1]


# --- debouncing, per button -------------------------------------------------------------------------------------


def test_a_bounce_on_one_button_counts_once_and_never_hides_a_press_on_another(make_panel, mock_factory) -> None:
    clock = FakeClock()
    panel, presses = make_panel(THREE, clock=clock)
    first, second = mock_factory.pin(17), mock_factory.pin(5)
    push(second, clock, "dudud")  # button #1 bounces: 5 edges, 8 ms apart
    assert presses.buttons == [1]
    push(first, clock, "d")  # within button #1's debounce time: a different button, so it counts
    assert presses.buttons == [1, 0]
    push(second, clock, "udu")  # button #1 is let go, bouncing: still one press of it
    push(first, clock, "udu")  # and button #0's bounces add nothing either
    assert presses.buttons == [1, 0]
    clock.advance(0.1)  # both released for longer than debounce_ms
    push(second, clock, "d")
    push(first, clock, "d")
    assert presses.buttons == [1, 0, 1, 0]


def test_a_button_held_at_start_counts_only_after_a_release(mock_factory) -> None:
    held = mock_factory.pin(5)
    held.drive_low()  # button #1 is down before the panel exists
    clock = FakeClock()
    pressed: list[int] = []
    with FrontPanel(THREE, pressed.append, pin_factory=mock_factory, clock=clock):
        push(mock_factory.pin(6), clock, "d")
        push(held, clock, "u", every=0.2)
        push(held, clock, "d")
    assert pressed == [2, 1]


# --- feedback during another button's call ----------------------------------------------------------------------


def flip_then_pattern(make_panel, mock_factory, state: LedState, *, wait_for_dark: bool):
    """Show ``state``, press button #1 (with the core's quick ``feedback(True)``), record the LEDs for 1.9 s.

    Returns (level just before the press, press time, call LED history, status LED history).
    """
    panel, presses = make_panel(TWO)
    panel.show(state)
    call, status = mock_factory.pin(PINS.call_led), mock_factory.pin(PINS.status_led)
    if wait_for_dark:
        wait_until(lambda: not call.state)
    call_started, status_started = start_recording(call, status)
    before = bool(call.state)
    pressed_at = time.monotonic()
    mock_factory.pin(5).drive_low()
    panel.feedback(True)  # PressFeedback(accepted=True): the core posts the picture to button #1's residents
    time.sleep(1.9)
    assert presses.buttons == [1]
    assert panel.state is state  # the call in progress is still what the panel shows
    return before, pressed_at, history(call, call_started), history(status, status_started)


def first_change_after(changes: list[tuple[float, bool]], t: float) -> tuple[float, bool]:
    return next((at, level) for at, level in changes if at >= t)


def test_a_press_on_another_button_during_a_call_goes_dark_at_once_then_steady_again(make_panel,
                                                                                      mock_factory) -> None:
    """IN_CALL: the call LED is steady on; a press on button #1 darkens it for 0.3 s, then it is on again."""
    before, pressed_at, call, status = flip_then_pattern(make_panel, mock_factory, LedState.IN_CALL,
                                                         wait_for_dark=False)
    assert before is True
    changed_at, level = first_change_after(call, pressed_at)
    assert level is False and 0 <= changed_at - pressed_at < 0.100
    # (A history starts with the level at the start of recording.) The feedback did not restart or cut the flip:
    assert [level for _, level in call] == [True, False, True]
    assert 0.28 <= call[2][0] - call[1][0] <= 0.6
    assert [level for _, level in status] == [True]  # the status LED was never touched


@pytest.mark.parametrize(
    ("wait_for_dark", "samples"),
    [
        # Pressed in the lit half of the blink: dark 0.3 s, lit 0.1 s, then CALLING from the start: on 0.5, off 0.5.
        (False, [(0.28, False), (0.85, True), (1.35, False), (1.85, True)]),
        # Pressed in the dark half: the glow (on 0.3 s, off 0.1 s), then CALLING from the start.
        (True, [(0.28, True), (0.38, False), (0.85, True), (1.35, False), (1.85, True)]),
    ],
    ids=["lit", "dark"],
)
def test_a_press_on_another_button_while_ringing_flips_the_led_then_the_blink_returns(
    make_panel, mock_factory, wait_for_dark, samples
) -> None:
    before, pressed_at, call, status = flip_then_pattern(make_panel, mock_factory, LedState.CALLING,
                                                         wait_for_dark=wait_for_dark)
    assert before is not wait_for_dark
    changed_at, level = first_change_after(call, pressed_at)
    assert level is not before and 0 <= changed_at - pressed_at < 0.100
    for offset, expected in samples:
        assert level_at(call, pressed_at + offset) is expected, f"{offset} s after the press; recorded {call}"
    assert [level for _, level in status] == [True]


def test_accepted_feedback_after_the_press_flash_flips_again(make_panel, mock_factory) -> None:
    """A late acknowledgement (a busy loop) is still seen over a lit LED: dark 0.3 s, then the call's light."""
    panel, _ = make_panel(TWO)
    panel.show(LedState.IN_CALL)
    call = mock_factory.pin(PINS.call_led)
    [started] = start_recording(call)
    panel.feedback(True)
    time.sleep(0.6)
    changes = history(call, started)
    assert [level for _, level in changes] == [True, False, True]
    assert 0.28 <= changes[2][0] - changes[1][0] <= 0.6


# --- setting up and closing -------------------------------------------------------------------------------------


def test_close_releases_every_button(plain_factory) -> None:
    pressed: list[int] = []
    panel = FrontPanel(THREE, pressed.append, pin_factory=plain_factory)
    panel.close()
    for gpio in THREE.buttons:
        plain_factory.pin(gpio).drive_low()
    assert pressed == []  # no button calls back after close
    for gpio in THREE.buttons:  # every button pin is free for another device
        gpiozero.DigitalInputDevice(gpio, pin_factory=plain_factory).close()
    FrontPanel(THREE, pressed.append, pin_factory=plain_factory).close()


def test_a_busy_button_pin_is_named_and_nothing_stays_reserved(make_panel, mock_factory) -> None:
    blocker = gpiozero.Button(6, pin_factory=mock_factory)
    with pytest.raises(PanelError, match="GPIO6 for button #2"):
        make_panel(THREE)
    blocker.close()
    make_panel(THREE)  # the relay, the LEDs and buttons #0 and #1, opened before the failure, were released


def test_a_button_pin_that_does_not_exist_is_named(make_panel) -> None:
    with pytest.raises(PanelError, match="GPIO99 for button #1"):
        make_panel(dataclasses.replace(PINS, extra_buttons=(99, 6)))
