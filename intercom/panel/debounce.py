"""Contact debouncing for the doorbell button, done by us rather than by the pin library.

Why not gpiozero's ``bounce_time``: each pin library implements it differently (or not at all: gpiozero's
``MockPin`` only stores the value, so a test with bouncing edges would see several presses), and some of them
report a level only once it has been stable, which delays every press by the whole window. Doing it here gives
the same behaviour on every pin factory, and lets the tests check it.

The rule: a push counts on its **first** falling edge, so the panel can light up at once; after that, a "down"
edge counts again only if the button had been up, with no edges at all, for at least ``window`` seconds before it.
So

- contact bounce (edges closer together than ``window``) on the way down or up adds nothing;
- a button held down counts once: holding makes no edges;
- a second press counts only after a real release.

The price of reacting to the first edge is that a lone electrical spike on the button wire also counts as a press;
``hardware/README.md`` covers wiring that avoids them (twisted pair, internal pull-up, optional capacitor).

:class:`Debouncer` is sans-I/O: the caller passes the time of each edge, so tests need no sleeping.
"""

from __future__ import annotations

import math


class Debouncer:
    """Turns a button's raw edges into presses: one per push, however much the contacts bounce.

    :param window: seconds the button must have been released, without any edge, before a new press counts
        (the config's ``debounce_ms`` / 1000).
    :param pressed: whether the button is down when watching starts (a button held at start-up does not count
        until it has been released).
    """

    __slots__ = ("window", "_down", "_last_edge")

    def __init__(self, window: float, *, pressed: bool = False) -> None:
        if not window >= 0:
            raise ValueError(f"the debounce window must be 0 or more seconds, not {window!r}")
        self.window = window
        self._down = pressed
        self._last_edge = -math.inf

    def edge(self, pressed: bool, now: float) -> bool:
        """Record an edge (``pressed`` is the new level) seen at time ``now``; return True if it is a new press."""
        if pressed == self._down:
            # A repeated report of the level we already have is not an edge (gpiozero filters these; be safe anyway).
            return False
        quiet = now - self._last_edge >= self.window
        self._down = pressed
        self._last_edge = now
        return pressed and quiet
