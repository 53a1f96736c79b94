"""What the two front-panel LEDs show for each call state, as one table (:data:`PATTERNS`).

The **call LED** (by the button) tells a visitor what the call is doing; the **status LED** tells whether the
bell can call at all. Every state looks different from every other (the tests check it); the outcomes (ended,
missed, declined) are shown for ``calls.ended_display`` seconds, then the panel goes back to idle.

=========  =======================================================  ==============================  ===============
state      call LED                                                 status LED                      a visitor reads
=========  =======================================================  ==============================  ===============
IDLE       off                                                      on                              ready to ring
CALLING    on 0.5 s, off 0.5 s, repeating                           on                              ringing
ANSWERING  on 0.1 s, off 0.1 s, repeating                           on                              connecting
IN_CALL    on                                                       on                              talk now
ENDED      3 × (on 0.1 s, off 0.1 s), then off                      on                              call over
MISSED     on 0.1 s, off 1.9 s, repeating                           on                              no answer
DECLINED   on 0.15 s, off 0.15 s, on 0.15 s, off 1.55 s, repeating  on                              declined
ERROR      off                                                      on 0.1 s, off 0.1 s, repeating  out of order
OFFLINE    off                                                      on 1 s, off 1 s, repeating      no connection
=========  =======================================================  ==============================  ===============

So: the status LED is steady while the bell can call, blinks slowly while it has no connection (also while
starting up) and flickers on an error; the call LED blinks slowly while ringing, steadies when connected, blips
once every 2 s after a missed call and twice after a declined one.

Acknowledging a press (a flash on the call LED; then the current state's call LED pattern starts again):

===============  ======================================  =========================================================
flash            call LED                                why
===============  ======================================  =========================================================
press            on 0.3 s, off 0.1 s                     Lit by the panel itself the moment a press counts.
press (lit)      off 0.3 s, on 0.1 s                     The same, inverted, when the call LED is lit just then.
accepted         on 0.3 s, off 0.1 s                     ``feedback(True)``: the same glow, so it reads as one.
refused          4 × (off 0.1 s, on 0.1 s)               ``feedback(False)``: a quick flicker, "not now".
===============  ======================================  =========================================================

Every press, on any of the bell buttons, is acknowledged on the one call LED, whatever that LED shows: a call
rung by another button (the LED blinking or steady) gets no special treatment. So that the acknowledgement shows
at once even then, the press flash **flips** the LED: a dark LED glows for 0.3 s, a lit one (a call in progress,
the "on" half of a blink) goes dark for 0.3 s. ``feedback(True)`` while the press flash still plays leaves it
alone (it is the same acknowledgement; restarting it a few milliseconds in would cut a dark flip short); after it
has ended, it plays the same flip again. Both press flashes end on the other level for 0.1 s, so that the pattern
that follows is seen to start again. All times are whole multiples of :data:`TICK`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import cycle

from ..core.states import LedState

#: Seconds per LED step: every duration in a pattern is a whole number of ticks.
TICK = 0.05

Steps = tuple[tuple[bool, float], ...]


@dataclass(frozen=True, slots=True)
class Pattern:
    """How one LED lights: ``steps`` of ``(lit, seconds)``, played ``times`` times, then held at ``then``.

    - no steps: steady at ``then`` (see :data:`ON` and :data:`OFF`);
    - ``times=None``: the steps repeat for as long as the pattern is shown;
    - ``then=None`` (flashes only): nothing is held; whatever comes next takes over.
    """

    steps: Steps = ()
    times: int | None = None
    then: bool | None = None

    def __post_init__(self) -> None:
        if not self.steps and self.then is None:
            raise ValueError("a steady pattern needs then=True or then=False")
        if self.steps and self.times is None and self.then is not None:
            raise ValueError("a repeating pattern never reaches 'then'")
        if self.times is not None and self.times < 1:
            raise ValueError(f"times must be 1 or more, not {self.times}")
        for _, seconds in self.steps:
            ticks = seconds / TICK
            if seconds <= 0 or abs(ticks - round(ticks)) > 1e-9:
                raise ValueError(f"{seconds} s is not a positive whole number of {TICK} s ticks")

    def frames(self) -> Iterator[bool]:
        """The LED's level for each :data:`TICK`: endless for a repeating pattern, else ending on ``then`` (if any)."""
        if not self.steps:
            yield bool(self.then)
            return
        body = [lit for lit, seconds in self.steps for _ in range(round(seconds / TICK))]
        if self.times is None:
            yield from cycle(body)
            return
        for _ in range(self.times):
            yield from body
        if self.then is not None:
            yield self.then

    def describe(self) -> str:
        """The pattern in words, as the tables in this module's docstring and in ``hardware/README.md`` give it."""
        if not self.steps:
            return _word(bool(self.then))
        body = ", ".join(f"{_word(lit)} {seconds:g} s" for lit, seconds in self.steps)
        if self.times is None:
            return f"{body}, repeating"
        text = body if self.times == 1 else f"{self.times} × ({body})"
        return text if self.then is None else f"{text}, then {_word(self.then)}"


def _word(lit: bool) -> str:
    return "on" if lit else "off"


def _alternating(*seconds: float) -> Steps:
    """Steps from durations that alternate on, off, on, ... (starting lit)."""
    return tuple((index % 2 == 0, duration) for index, duration in enumerate(seconds))


@dataclass(frozen=True, slots=True)
class Indication:
    """What both LEDs do for one :class:`~intercom.core.states.LedState`, and what a visitor should read."""

    call: Pattern
    status: Pattern
    meaning: str


ON = Pattern(then=True)
OFF = Pattern(then=False)

#: The one table of LED patterns (module docstring: the same in words).
PATTERNS: dict[LedState, Indication] = {
    LedState.IDLE: Indication(call=OFF, status=ON, meaning="ready to ring"),
    LedState.CALLING: Indication(
        call=Pattern(_alternating(0.5, 0.5)), status=ON, meaning="ringing"
    ),
    LedState.ANSWERING: Indication(
        call=Pattern(_alternating(0.1, 0.1)), status=ON, meaning="connecting"
    ),
    LedState.IN_CALL: Indication(call=ON, status=ON, meaning="talk now"),
    LedState.ENDED: Indication(
        call=Pattern(_alternating(0.1, 0.1), times=3, then=False), status=ON, meaning="call over"
    ),
    LedState.MISSED: Indication(call=Pattern(_alternating(0.1, 1.9)), status=ON, meaning="no answer"),
    LedState.DECLINED: Indication(
        call=Pattern(_alternating(0.15, 0.15, 0.15, 1.55)), status=ON, meaning="declined"
    ),
    LedState.ERROR: Indication(
        call=OFF, status=Pattern(_alternating(0.1, 0.1)), meaning="out of order"
    ),
    LedState.OFFLINE: Indication(
        call=OFF, status=Pattern(_alternating(1.0, 1.0)), meaning="no connection"
    ),
}

#: Call LED, lit by the panel in the button's own callback the moment a press counts (the LED being dark).
PRESS_FLASH = Pattern(_alternating(0.3, 0.1), times=1)
#: Call LED, the same acknowledgement when the LED is lit at that moment (a call in progress): dark, then lit.
PRESS_FLASH_LIT = Pattern(((False, 0.3), (True, 0.1)), times=1)
#: Call LED on ``feedback(accepted=True)``: the same glow, so press + acceptance read as one (over a lit LED:
#: :data:`PRESS_FLASH_LIT`).
ACCEPTED_FLASH = PRESS_FLASH
#: Call LED on ``feedback(accepted=False)``: a quick flicker, unlike any state's pattern on that LED.
REFUSED_FLASH = Pattern(((False, 0.1), (True, 0.1)), times=4)
