"""Helpers for the front-panel tests: a fake clock, and reading mock pins' recorded state histories."""

from __future__ import annotations

import time
from typing import Any

from intercom.panel import PanelPins

#: The pin map of hardware/README.md (which is also the config file's default wiring: see test_pins.py).
PINS = PanelPins(button=17, button_pull_up=True, debounce_ms=50, call_led=22, status_led=23, relay=27,
                 relay_active_high=True)


class FakeClock:
    """A settable monotonic clock for the debouncer: edges happen exactly when the test says."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def start_recording(*pins: Any) -> list[float]:
    """Clear the pins' state histories now; returns when each was cleared, for :func:`history`."""
    started = []
    for pin in pins:
        started.append(time.monotonic())
        pin.clear_states()
    return started


def history(pin: Any, started: float) -> list[tuple[float, bool]]:
    """The pin's levels as ``(monotonic time, level)``, oldest first; ``started`` from :func:`start_recording`.

    ``MockPin.states`` holds the time since the *previous* change; summing them gives the time of each change.
    """
    at = started
    result = []
    for since_previous, state in list(pin.states):
        at += since_previous
        result.append((at, bool(state)))
    return result


def level_at(changes: list[tuple[float, bool]], t: float) -> bool:
    """The level a :func:`history` shows at time ``t``."""
    level = changes[0][1]
    for at, state in changes:
        if at > t:
            break
        level = state
    return level


def rising_edges(changes: list[tuple[float, bool]]) -> list[float]:
    return [at for (at, state), (_, before) in zip(changes[1:], changes) if state and not before]
