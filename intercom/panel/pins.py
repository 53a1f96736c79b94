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

    :param button: the doorbell button's GPIO.
    :param button_pull_up: True when the button connects the pin to ground (the internal pull-up holds it high);
        False when it connects the pin to 3.3 V (the internal pull-down holds it low).
    :param debounce_ms: how long the button must have been released before another press counts.
    :param call_led: the call LED's GPIO (lit by a high pin).
    :param status_led: the status LED's GPIO (lit by a high pin).
    :param relay: the door-opener relay's GPIO.
    :param relay_active_high: True when a high pin energises the relay; False for "active-low" relay modules.
    """

    button: int
    button_pull_up: bool
    debounce_ms: int
    call_led: int
    status_led: int
    relay: int
    relay_active_high: bool


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
