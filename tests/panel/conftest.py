"""Fixtures for the front-panel tests: a fresh gpiozero MockFactory per test, panels closed afterwards.

Only the pins are fake (``MockFactory`` with ``MockPWMPin``); gpiozero's devices, callbacks and background
threads run for real, so LED patterns and relay pulses take real (short) time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from intercom.panel import FrontPanel, PanelPins, make_pin_factory

from .helpers import PINS


@pytest.fixture
def mock_factory() -> Iterator[Any]:
    """A fresh ``MockFactory(pin_class=MockPWMPin)``, reset after the test (pins and reservations cleared)."""
    factory = make_pin_factory("mock")
    yield factory
    factory.reset()


@pytest.fixture
def plain_factory() -> Iterator[Any]:
    """A ``MockFactory`` with plain ``MockPin``: a released pin keeps its last level.

    (``MockPWMPin.close`` drives the pin to 0 when it is released, which would hide what the panel drove last.)
    """
    factory = MockFactory()
    yield factory
    factory.reset()


class Presses(list[float]):
    """The times of the ``on_press`` calls a panel made, oldest first; ``buttons`` holds the index each was given."""

    def __init__(self) -> None:
        super().__init__()
        self.buttons: list[int] = []


@pytest.fixture
def make_panel(mock_factory: Any) -> Iterator[Callable[..., tuple[FrontPanel, Presses]]]:
    """Build panels on ``mock_factory``; returns ``(panel, presses)`` where ``presses`` collects on_press calls.

    ``on_press``, if given, is called after recording, with the button index, as the panel calls it.
    """
    panels: list[FrontPanel] = []

    def make(pins: PanelPins | None = None, *, on_press: Callable[[int], None] | None = None,
             clock: Callable[[], float] = time.monotonic) -> tuple[FrontPanel, Presses]:
        presses = Presses()

        def record(button: int) -> None:
            presses.append(time.monotonic())
            presses.buttons.append(button)
            if on_press is not None:
                on_press(button)

        panel = FrontPanel(pins or PINS, record, pin_factory=mock_factory, clock=clock)
        panels.append(panel)
        return panel, presses

    yield make
    for panel in panels:
        panel.close()
