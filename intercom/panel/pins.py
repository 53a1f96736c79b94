"""Which GPIO pins the panel uses, and which gpiozero pin library drives them.

Pins are BCM GPIO numbers (GPIO17), as in the config file, not physical header pin numbers (pin 11);
``hardware/README.md`` maps one to the other.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from .errors import PanelError


@dataclass(frozen=True, slots=True, kw_only=True)
class PanelPins:
    """The panel's wiring, built from the config file's ``[panel]`` section, which holds the defaults (the pin map
    in ``hardware/README.md``) and checks the values (every pin a different GPIO, the debounce time in range).

    :param button: the (first) bell button's GPIO: button 0, the one of a house with a single bell.
    :param button_pull_up: True when the buttons connect their pins to ground (the internal pull-up holds them
        high); False when they connect them to 3.3 V (the internal pull-down holds them low). The same for every
        button.
    :param debounce_ms: how long a button must have been released before another press of it counts (each button
        is debounced on its own, with this time).
    :param call_led: the call LED's GPIO (lit by a high pin).
    :param status_led: the status LED's GPIO (lit by a high pin).
    :param relay: the door-opener relay's GPIO.
    :param relay_active_high: True when a high pin energises the relay; False for "active-low" relay modules.
    :param extra_buttons: the GPIOs of the further bell buttons of an apartment panel, in order: buttons 1, 2, ...
        (:attr:`buttons` lists them all). The only field with a default: ``()``, one button, the wiring every
        panel had before there could be more, so that constructors written for one button keep working.

    The button numbers are the indices :class:`~intercom.panel.FrontPanel` passes to ``on_press`` and the core's
    ``ButtonPressed.button``: 0 is ``button``, 1 is ``extra_buttons[0]``, and so on.

    :raises PanelError: when two roles share a GPIO (the config refuses that first; this is the last line).
    """

    button: int
    button_pull_up: bool
    debounce_ms: int
    call_led: int
    status_led: int
    relay: int
    relay_active_high: bool
    extra_buttons: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        # A list would make the frozen dataclass unhashable and let the wiring change under the panel.
        object.__setattr__(self, "extra_buttons", tuple(self.extra_buttons))
        seen: dict[int, str] = {}
        for role, pin in self.roles():
            if pin in seen:
                raise PanelError(f"GPIO{pin} is wired to both {seen[pin]} and {role}; every role needs its own pin")
            seen[pin] = role

    @property
    def buttons(self) -> tuple[int, ...]:
        """Every bell button's GPIO, in order: ``button`` first, then ``extra_buttons``."""
        return (self.button, *self.extra_buttons)

    def roles(self) -> list[tuple[str, int]]:
        """``(role, GPIO)`` of every pin, as error messages name them: the relay, the LEDs, then the buttons."""
        return [("the door relay", self.relay), ("the call LED", self.call_led), ("the status LED", self.status_led),
                *((button_role(index, len(self.buttons)), pin) for index, pin in enumerate(self.buttons))]


def button_role(index: int, count: int) -> str:
    """How messages name button ``index`` of ``count``: "the button" when there is one, else "button #1" etc.

    The number is the button's index (what ``on_press`` receives): "button #0" is ``PanelPins.button``.
    """
    return "the button" if count == 1 else f"button #{index}"


# name -> (module, class, what to install when the module cannot be imported)
_BACKENDS: dict[str, tuple[str, str, str]] = {
    "lgpio": (
        "gpiozero.pins.lgpio",
        "LGPIOFactory",
        "the lgpio library (on Raspberry Pi OS: sudo apt install python3-lgpio); it is the one that works on every Pi, "
        "including the Pi 5",
    ),
    "rpigpio": (
        "gpiozero.pins.rpigpio",
        "RPiGPIOFactory",
        "RPi.GPIO (on Raspberry Pi OS: sudo apt install python3-rpi.gpio); it does not work on a Pi 5, use lgpio there",
    ),
    "pigpio": (
        "gpiozero.pins.pigpio",
        "PiGPIOFactory",
        "the pigpio Python module, with the pigpiod daemon running; it does not work on a Pi 5, use lgpio there",
    ),
    "native": ("gpiozero.pins.native", "NativeFactory", "gpiozero itself (pip install gpiozero)"),
    "mock": ("gpiozero.pins.mock", "MockFactory", "gpiozero itself (pip install gpiozero)"),
}

PIN_FACTORY_NAMES = ("auto", *_BACKENDS)


def make_pin_factory(name: str) -> Any:
    """The gpiozero pin factory for the config's ``panel.pin_factory`` name.

    ``"auto"`` returns None: every device then uses gpiozero's default (``GPIOZERO_PIN_FACTORY`` if set, else
    the first library that loads). ``"mock"`` returns a ``MockFactory`` whose pins also do PWM
    (``MockPWMPin``), so that any LED class works on it. The others return that library's factory.

    :raises PanelError: for an unknown name, a library that is not installed (the message says what to install),
        or one that loads but cannot start (not a Raspberry Pi, no access to the GPIO device, no pigpiod).
    """
    if name == "auto":
        return None
    try:
        module_name, class_name, install = _BACKENDS[name]
    except KeyError:
        raise PanelError(
            f"unknown pin factory {name!r}; use one of: {', '.join(PIN_FACTORY_NAMES)}"
        ) from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PanelError(f"the {name!r} pin factory needs {install} ({exc})") from exc
    factory_class = getattr(module, class_name)
    if name == "mock":
        return factory_class(pin_class=module.MockPWMPin)
    try:
        return factory_class()
    except Exception as exc:  # each library fails its own way (OSError, lgpio.error, gpiozero errors...)
        raise PanelError(
            f"the {name!r} pin factory could not start: {exc}. Is this a Raspberry Pi, and may this user use the "
            "GPIO pins (on Raspberry Pi OS: a member of the gpio group)?"
        ) from exc
