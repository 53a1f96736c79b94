"""The front panel: the bell buttons, the call and status LEDs, and the door-opener relay, on gpiozero.

A thin edge: gpiozero does the pins (any pin factory, ``MockFactory`` in tests); this class adds only what a
doorbell needs on top:

- **Several bell buttons** (an apartment panel: :attr:`PanelPins.buttons <.pins.PanelPins.buttons>`), one
  call LED. ``on_press(button)`` says which was pressed, by its index (0 for the first, the only one of a house).
- **Debouncing** of our own (:mod:`.debounce`), the same on every pin library, for each button on its own: a
  bouncing contact on one button never swallows a press on another.
- **Feedback at once.** A counted press flips the call LED right there in gpiozero's callback, before
  ``on_press`` runs, so the visitor sees it within milliseconds even if the rest of the program is busy, and
  whatever the LED showed (a call rung by another button included: see :mod:`.patterns`). The orchestrator's
  ``on_press`` should only hand the press to the asyncio loop (``loop.call_soon_threadsafe``); the core's
  :class:`~intercom.core.actions.PressFeedback` then refines the flash through :meth:`feedback`.
- **LED patterns** from one table (:data:`.patterns.PATTERNS`), played with gpiozero's own ``source`` mechanism:
  each LED's pattern is an iterable of levels (one per :data:`.patterns.TICK`, looked up by the clock) that
  gpiozero's background thread writes to the pin every 10 ms while the pattern moves; a steady pattern leaves no
  thread behind. (``LED.blink`` cannot express a double blink or a flash that hands over to a pattern.)
- **A door relay that is never left on**: a pulse is one ``blink(n=1)``; a pulse during a pulse extends it
  instead of stacking; :meth:`close` switches the relay off before anything else.

Threads: gpiozero calls the button handler in its callback thread (the pin library's on a Pi; the thread calling
``drive_low()`` under ``MockFactory``) while the orchestrator calls :meth:`~FrontPanel.show`,
:meth:`~FrontPanel.feedback` and :meth:`~FrontPanel.pulse_relay` from the asyncio loop. One lock serialises them;
nothing holds it for longer than it takes to stop an LED's player thread, which is waiting on an event.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from itertools import chain
from typing import Any

from gpiozero import LED, DigitalInputDevice, DigitalOutputDevice, OutputDevice

from ..core.states import LedState
from .debounce import Debouncer
from .errors import PanelError
from .patterns import OFF, PATTERNS, PRESS_FLASH, PRESS_FLASH_LIT, REFUSED_FLASH, TICK, Pattern
from .pins import PanelPins, button_role

logger = logging.getLogger(__name__)


class _Lamp:
    """One LED, the pattern it shows, and the flash (if any) playing before that pattern, from ``flash_start``."""

    __slots__ = ("led", "pattern", "flash", "flash_pattern", "flash_start")

    def __init__(self, led: LED) -> None:
        self.led = led
        self.pattern: Pattern = OFF
        self.flash: tuple[bool, ...] = ()
        self.flash_pattern: Pattern | None = None  # what ``flash`` was made from
        self.flash_start = 0.0

    def flash_left(self, now: float) -> tuple[tuple[bool, ...], float]:
        """The flash frames still to play at ``now``, and when the first of them began."""
        done = int((now - self.flash_start) / TICK)
        return self.flash[done:], self.flash_start + done * TICK


def _on_time(frames: Iterator[bool], start: float) -> Iterator[bool]:
    """The frame due by the clock (one per :data:`.patterns.TICK` from ``start``), each time the player asks.

    gpiozero's source thread asks every ``source_delay`` (10 ms) and waits *after* each write, so counting
    frames would let delays add up on a busy machine; looking at the clock keeps every change within about
    10 ms of its time (never early), however long the pattern runs. Ends when a finite pattern's last frame has
    had its tick.
    """
    index, current = 0, next(frames)
    while True:
        due = int((time.monotonic() - start) / TICK)
        while index < due:
            try:
                current = next(frames)
            except StopIteration:
                return
            index += 1
        yield current


class FrontPanel:
    """The doorbell's bell buttons, two LEDs and door relay.

    :param pins: the wiring (BCM numbers): one button, or several (:attr:`PanelPins.buttons
        <.pins.PanelPins.buttons>`).
    :param on_press: called as ``on_press(button)`` once per counted press, with the index of the button in
        ``pins.buttons`` (0 for the first, the only one of a house), in gpiozero's callback thread, after the call
        LED has flashed. A callable that takes one argument, such as ``def pressed(button: int = 0)``; one that
        takes none fails on every press. It should return quickly (hand the press to the asyncio loop); an
        exception from it is logged, and the buttons keep working.
    :param pin_factory: a gpiozero pin factory (see :func:`~intercom.panel.pins.make_pin_factory`); None uses
        gpiozero's default.
    :param clock: monotonic seconds, used to time button edges for debouncing (tests pass a fake one).

    The panel starts showing :attr:`LedState.OFFLINE <intercom.core.states.LedState.OFFLINE>` (nothing can be
    called until the orchestrator says otherwise) with the relay off.

    :raises PanelError: when a pin cannot be set up; the message names the pin and its role ("the button", or
        "button #1" on a panel with several). Every pin opened before it is released again.

    Example, on mock pins, an apartment panel with three bell buttons (GPIO17, GPIO5, GPIO6)::

        pins = PanelPins(button=17, extra_buttons=(5, 6), button_pull_up=True, debounce_ms=50, call_led=22,
                         status_led=23, relay=27, relay_active_high=True)
        panel = FrontPanel(pins, on_press=lambda button: print("ding", button),
                           pin_factory=make_pin_factory("mock"))
        panel.show(LedState.IDLE)
        panel.pulse_relay(3.0)
    """

    def __init__(
        self,
        pins: PanelPins,
        on_press: Callable[[int], None],
        *,
        pin_factory: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_press = on_press
        self._pin_factory = pin_factory
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False
        self._state = LedState.OFFLINE
        self._relay_until = 0.0  # monotonic time the current relay pulse ends
        #: Every device in the order :meth:`close` shuts them: the relay first, since it matters most.
        self._devices: list[Any] = []
        try:
            # The relay first, so it is driven "off" as early as possible; the buttons last, so no press can
            # arrive before the LEDs exist.
            self._relay = self._open(
                "the door relay", DigitalOutputDevice, pins.relay, active_high=pins.relay_active_high,
                initial_value=False,
            )
            self._call = _Lamp(self._open("the call LED", LED, pins.call_led))
            self._status = _Lamp(self._open("the status LED", LED, pins.status_led))
            # gpiozero's Button is this plus a "held" thread we don't use, which would also delay close() by
            # hold_time while the button is down. bounce_time=None: debouncing is ours (see .debounce).
            count = len(pins.buttons)
            buttons = [
                self._open(button_role(index, count), DigitalInputDevice, pin, pull_up=pins.button_pull_up,
                           bounce_time=None)
                for index, pin in enumerate(pins.buttons)
            ]
        except BaseException:
            self.close()
            raise
        #: One debouncer per button: each button's contacts bounce on their own.
        self._debouncers = [Debouncer(pins.debounce_ms / 1000, pressed=button.is_active) for button in buttons]
        for index, button in enumerate(buttons):
            button.when_activated, button.when_deactivated = self._handlers(index)
        self.show(LedState.OFFLINE)

    def _open(self, role: str, device_class: type, pin: int, **options: Any) -> Any:
        try:
            device = device_class(pin, pin_factory=self._pin_factory, **options)
        except Exception as exc:  # pin busy, not a GPIO, no pin library, no permission...
            raise PanelError(f"cannot use GPIO{pin} for {role}: {exc}") from exc
        self._devices.append(device)
        return device

    # --- the LEDs ---------------------------------------------------------------------------------------------

    @property
    def state(self) -> LedState:
        """The call state the LEDs show (the last :meth:`show`)."""
        return self._state

    def show(self, state: LedState) -> None:
        """Show ``state``'s pattern (:data:`.patterns.PATTERNS`). A flash in progress finishes first.

        An LED whose pattern does not change is left alone, so a blink keeps its rhythm. Does nothing once closed
        (the LEDs are only a display, and shutdown may race with a last update).
        """
        indication = PATTERNS[state]
        with self._lock:
            if self._closed:
                return
            self._state = state
            for lamp, pattern in ((self._call, indication.call), (self._status, indication.status)):
                if pattern is not lamp.pattern or lamp.flash_left(time.monotonic())[0]:
                    self._drive(lamp, pattern=pattern)

    def feedback(self, accepted: bool) -> None:
        """Acknowledge a press on the call LED: a glow if ``accepted``, a flicker if not; then the state's pattern.

        The panel has already flashed the LED when the press counted; this refines it once the call core has
        decided. An acceptance while that press flash still plays leaves it as it is (the same glow, read as one);
        later, it plays the glow again (flipping the LED, like a press). Does nothing once closed.
        """
        with self._lock:
            if self._closed:
                return
            if not accepted:
                self._drive(self._call, flash=REFUSED_FLASH)
            elif not (
                self._call.flash_pattern in (PRESS_FLASH, PRESS_FLASH_LIT)
                and self._call.flash_left(time.monotonic())[0]
            ):
                self._flip(self._call)

    def _flip(self, lamp: _Lamp) -> None:
        """Play the press flash on ``lamp``: a glow if it is dark now, a dark moment if it is lit (a call in
        progress, or the lit half of a blink), so the change shows at once. The caller holds the lock."""
        lamp.led.source = None  # stop the player first, so the level read is the one it stays at
        self._drive(lamp, flash=PRESS_FLASH_LIT if lamp.led.value else PRESS_FLASH)

    def _drive(self, lamp: _Lamp, *, pattern: Pattern | None = None, flash: Pattern | None = None) -> None:
        """(Re)start ``lamp``: the rest of its flash (or a new ``flash``), then ``pattern`` (or its current one).

        The first level is written here, in the caller's thread, so a change is visible when this returns;
        gpiozero's source thread plays the rest. The caller holds the lock.
        """
        now = time.monotonic()
        lamp.led.source = None  # stop the player
        if pattern is not None:
            lamp.pattern = pattern
        if flash is not None:
            lamp.flash, lamp.flash_pattern, lamp.flash_start = tuple(flash.frames()), flash, now
        # A flash keeps its own timing across re-drives: it carries on from the frame it is in.
        left, since = lamp.flash_left(now)
        frames = _on_time(chain(left, lamp.pattern.frames()), start=since if left else now)
        lamp.led.value = next(frames)
        lamp.led.source = frames

    # --- the buttons --------------------------------------------------------------------------------------------

    @property
    def button_count(self) -> int:
        """How many bell buttons the panel has (``on_press`` receives 0 to ``button_count - 1``)."""
        return len(self._debouncers)

    def _handlers(self, index: int) -> tuple[Callable[[], None], Callable[[], None]]:
        """gpiozero's ``when_activated`` and ``when_deactivated`` for button ``index``.

        Closures taking no argument: gpiozero passes the device to a callable that accepts one (a default argument
        or a ``functools.partial`` would receive it), and the device is not what we need.
        """

        def pressed() -> None:
            self._edge(index, True)

        def released() -> None:
            self._edge(index, False)

        return pressed, released

    def press(self, button: int = 0) -> None:
        """Act as if bell button ``button`` (its index; 0, the first, by default) was pressed (the service's control
        socket, a demo): the same flash, then ``on_press(button)``, in the caller's thread. No debouncing: every
        call is one press. Does nothing once closed.

        :raises ValueError: if the panel has no such button.
        """
        if not 0 <= button < self.button_count:
            raise ValueError(
                f"there is no button {button!r}: the panel has {self.button_count} (0 to {self.button_count - 1})"
            )
        self._press(button, counts=lambda: True)

    def _edge(self, index: int, pressed: bool) -> None:
        """Every raw edge of button ``index``, in gpiozero's callback thread."""
        self._press(index, counts=lambda: self._debouncers[index].edge(pressed, self._clock()))

    def _press(self, index: int, counts: Callable[[], bool]) -> None:
        """Flash the call LED and call ``on_press(index)`` if ``counts()``. Never raises: gpiozero's thread must
        survive.

        Whatever the LEDs show (a call rung by another button too), a counted press flashes: nothing here looks at
        the call state. The flash then hands back to the pattern the LED was showing.
        """
        with self._lock:
            if self._closed or not counts():
                return
            # Light up before anything else runs: the visitor's feedback must not wait for the rest of the program.
            try:
                self._flip(self._call)
            except Exception:
                logger.exception("front panel: could not flash the call LED for a press")
        try:
            self._on_press(index)
        except Exception:
            logger.exception("front panel: the on_press handler failed; the buttons keep working")

    # --- the door relay ---------------------------------------------------------------------------------------

    def pulse_relay(self, seconds: float) -> None:
        """Energise the door opener for ``seconds``, then switch it off (in a gpiozero background thread).

        The relay is on when this returns. A pulse while one runs extends it to whichever ends later: pulses never
        add up, a short one never cuts a long one short, and the relay never drops in between.

        :raises ValueError: if ``seconds`` is not a positive, finite number.
        :raises PanelError: after :meth:`close`: the door cannot be opened, and the caller should know.
        """
        if not (seconds > 0 and math.isfinite(seconds)):
            raise ValueError(f"a relay pulse must last a positive number of seconds, not {seconds!r}")
        with self._lock:
            if self._closed:
                raise PanelError("the front panel is closed; the door relay cannot be pulsed")
            now = time.monotonic()
            self._relay_until = max(self._relay_until, now + seconds)
            self._relay.on()  # on now, not when the blink thread gets going
            # blink() first stops the running pulse's thread (which leaves the relay on), so there is one timer.
            self._relay.blink(on_time=self._relay_until - now, off_time=0, n=1, background=True)

    @property
    def relay_active(self) -> bool:
        """True while the door opener is energised (whatever the wiring's polarity). False once closed."""
        with self._lock:
            return not self._closed and bool(self._relay.is_active)

    # --- shutting down ----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Switch the relay and the LEDs off and release every pin, every button's included. Idempotent; safe after
        a failed ``__init__``."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        # Outside the lock: a button callback waiting for it must not hold up closing the button.
        for device in self._devices:
            try:
                if isinstance(device, OutputDevice):
                    device.source = None
                    device.off()
                device.close()
            except Exception:
                logger.exception("front panel: closing %r failed", device)

    def __enter__(self) -> FrontPanel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
