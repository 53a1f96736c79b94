"""Pin map defaults and pin-factory selection."""

from __future__ import annotations

import re
import sys
import types
from importlib.resources import files

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from intercom.panel import PIN_FACTORY_NAMES, PanelError, PanelPins, make_pin_factory
from intercom.service.config import PanelConfig, validate_text

EXAMPLE_TEXT = files("intercom").joinpath("data/intercom.example.toml").read_text(encoding="utf-8")


def test_default_pins_are_the_config_defaults() -> None:
    config = PanelConfig()
    assert PanelPins() == PanelPins(
        button=config.button_pin,
        button_pull_up=config.button_pull_up,
        debounce_ms=config.debounce_ms,
        call_led=config.call_led_pin,
        status_led=config.status_led_pin,
        relay=config.relay_pin,
        relay_active_high=config.relay_active_high,
    )


def test_the_config_accepts_exactly_the_factory_names_we_know() -> None:
    for name in [*PIN_FACTORY_NAMES, "gpiod"]:
        text = re.sub(r'^pin_factory = "auto"', f'pin_factory = "{name}"', EXAMPLE_TEXT, flags=re.MULTILINE)
        flagged = any(problem.field == "panel.pin_factory" for problem in validate_text(text))
        assert flagged == (name not in PIN_FACTORY_NAMES), name


def test_pins_must_differ() -> None:
    with pytest.raises(ValueError, match="different"):
        PanelPins(call_led=17)


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
