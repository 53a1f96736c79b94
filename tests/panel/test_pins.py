"""Pin map defaults and pin-factory selection."""

from __future__ import annotations

import dataclasses
import re
import sys
import types
from importlib.resources import files

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from intercom.panel import PIN_FACTORY_NAMES, PanelError, PanelPins, make_pin_factory
from intercom.service.config import PanelConfig, validate_text

from .helpers import PINS

EXAMPLE_TEXT = files("intercom").joinpath("data/intercom.example.toml").read_text(encoding="utf-8")


def test_the_config_holds_the_only_default_wiring_and_it_is_the_documented_pin_map() -> None:
    from intercom.app import panel_pins

    assert panel_pins(PanelConfig()) == PINS
    defaults = {f.name: f.default for f in dataclasses.fields(PanelPins) if f.default is not dataclasses.MISSING}
    # extra_buttons=() is no wiring choice: it says "one button", so that one-button constructors keep working.
    assert defaults == {"extra_buttons": ()}, "a second default"
    assert PINS.buttons == (PINS.button,)
    custom = panel_pins(PanelConfig(button_pin=5, button_pull_up=False, debounce_ms=80, call_led_pin=6,
                                    status_led_pin=13, relay_pin=19, relay_active_high=False))
    assert custom == PanelPins(button=5, button_pull_up=False, debounce_ms=80, call_led=6, status_led=13, relay=19,
                               relay_active_high=False)


def test_the_config_accepts_exactly_the_factory_names_we_know() -> None:
    for name in [*PIN_FACTORY_NAMES, "gpiod"]:
        text = re.sub(r'^pin_factory = "auto"', f'pin_factory = "{name}"', EXAMPLE_TEXT, flags=re.MULTILINE)
        flagged = any(problem.field == "panel.pin_factory" for problem in validate_text(text))
        assert flagged == (name not in PIN_FACTORY_NAMES), name


def test_pins_that_do_not_differ_are_refused_by_the_config_which_is_where_the_panel_gets_them() -> None:
    text = EXAMPLE_TEXT.replace("call_led_pin = 22", "call_led_pin = 17")
    assert "call_led_pin = 17" in text
    assert any(problem.field == "panel.call_led_pin" and "already used" in problem.message
               for problem in validate_text(text))


def test_auto_leaves_the_choice_to_gpiozero() -> None:
    assert make_pin_factory("auto") is None


def test_mock_pins_can_do_pwm() -> None:
    factory = make_pin_factory("mock")
    try:
        assert isinstance(factory, MockFactory)
        assert factory.pin_class is MockPWMPin
    finally:
        factory.reset()


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(PanelError, match="lgpio"):
        make_pin_factory("gpiod")


def test_a_missing_library_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gpiozero.pins.lgpio", None)  # makes the import fail like a missing lgpio
    with pytest.raises(PanelError, match="python3-lgpio") as caught:
        make_pin_factory("lgpio")
    assert isinstance(caught.value.__cause__, ImportError)


def test_a_library_that_cannot_start_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    class LGPIOFactory:
        def __init__(self) -> None:
            raise OSError("can not open gpiochip")

    monkeypatch.setitem(sys.modules, "gpiozero.pins.lgpio", types.SimpleNamespace(LGPIOFactory=LGPIOFactory))
    with pytest.raises(PanelError, match="could not start: can not open gpiochip.*gpio group"):
        make_pin_factory("lgpio")


def test_the_buttons_are_the_first_one_then_the_extra_ones_in_order() -> None:
    pins = dataclasses.replace(PINS, extra_buttons=[5, 6])  # a list from a config is kept as a tuple
    assert pins.buttons == (17, 5, 6)
    assert pins.extra_buttons == (5, 6)
    assert hash(pins) == hash(dataclasses.replace(PINS, extra_buttons=(5, 6)))
    assert [role for role, _ in pins.roles()][-3:] == ["button #0", "button #1", "button #2"]
    assert [role for role, _ in PINS.roles()][-1] == "the button"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"extra_buttons": (5, 5)}, "GPIO5 is wired to both button #1 and button #2"),
        ({"extra_buttons": (17,)}, "GPIO17 is wired to both button #0 and button #1"),
        ({"extra_buttons": (22,)}, "GPIO22 is wired to both the call LED and button #1"),
        ({"relay": 17}, "GPIO17 is wired to both the door relay and the button"),
    ],
)
def test_every_pin_must_differ(change: dict, message: str) -> None:
    with pytest.raises(PanelError, match=message):
        dataclasses.replace(PINS, **change)
