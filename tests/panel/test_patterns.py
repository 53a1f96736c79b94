"""The LED pattern table: complete, every state distinguishable, and documented where it says it is."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

import intercom.panel.patterns as patterns_module
from intercom.core.states import LedState
from intercom.panel import PATTERNS, TICK, Pattern
from intercom.panel.patterns import ACCEPTED_FLASH, OFF, ON, PRESS_FLASH, PRESS_FLASH_LIT, REFUSED_FLASH

HARDWARE_README = Path(__file__).resolve().parents[2] / "hardware" / "README.md"

#: Long enough to see every pattern's full cycle (the slowest repeats every 2 s).
WINDOW_TICKS = round(2.2 / TICK)


def levels(pattern: Pattern, ticks: int = WINDOW_TICKS) -> tuple[bool, ...]:
    """The pattern's level at each tick, the last level held once a finite pattern ends."""
    frames = list(itertools.islice(pattern.frames(), ticks))
    return tuple(frames + [frames[-1]] * (ticks - len(frames)))


def test_every_led_state_has_a_pattern() -> None:
    assert set(PATTERNS) == set(LedState)


def test_every_state_looks_different_from_every_other() -> None:
    looks = {state: (levels(ind.call), levels(ind.status)) for state, ind in PATTERNS.items()}
    for (a, look_a), (b, look_b) in itertools.combinations(looks.items(), 2):
        assert look_a != look_b, f"{a.name} and {b.name} look the same"


def test_accepted_and_refused_presses_look_different() -> None:
    assert levels(ACCEPTED_FLASH, 20) != levels(REFUSED_FLASH, 20)


def test_the_press_flash_lights_at_once_and_shows_even_over_a_steady_led() -> None:
    frames = list(PRESS_FLASH.frames())
    assert frames[0] is True
    assert False in frames  # a dark moment, so a press during a call (call LED steady on) is still seen


def test_the_press_flash_over_a_lit_led_darkens_it_at_once_and_is_the_same_flash_inverted() -> None:
    """A press during another button's call (call LED lit): the change must show at once, not after 0.3 s."""
    assert list(PRESS_FLASH_LIT.frames()) == [not level for level in PRESS_FLASH.frames()]
    assert list(PRESS_FLASH_LIT.frames())[0] is False
    assert PRESS_FLASH_LIT.describe() in _row(patterns_module.__doc__, "press (lit)")


def test_frames_follow_the_steps() -> None:
    assert list(ON.frames()) == [True]
    assert list(OFF.frames()) == [False]
    assert list(Pattern(((True, 0.1), (False, 0.05)), times=2, then=True).frames()) == [
        True, True, False, True, True, False, True]
    assert list(Pattern(((True, 0.05), (False, 0.05)), times=1).frames()) == [True, False]
    assert list(itertools.islice(Pattern(((True, 0.1), (False, 0.05))).frames(), 7)) == [
        True, True, False, True, True, False, True]


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({}, "steady"),
        ({"steps": ((True, 0.5),), "then": False}, "never reaches"),
        ({"steps": ((True, 0.5),), "times": 0}, "1 or more"),
        ({"steps": ((True, 0.07),)}, "ticks"),
        ({"steps": ((True, 0.0),)}, "ticks"),
    ],
)
def test_invalid_patterns_are_refused(arguments: dict, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Pattern(**arguments)


def test_describe_says_the_pattern_in_words() -> None:
    assert ON.describe() == "on"
    assert PATTERNS[LedState.CALLING].call.describe() == "on 0.5 s, off 0.5 s, repeating"
    assert PATTERNS[LedState.ENDED].call.describe() == "3 × (on 0.1 s, off 0.1 s), then off"
    assert PRESS_FLASH.describe() == "on 0.3 s, off 0.1 s"


def _row(text: str, name: str) -> str:
    """The table row (reST or Markdown) whose first cell is ``name``."""
    for line in text.splitlines():
        cells = line.strip().strip("|").split("|") if line.lstrip().startswith("|") else line.split("  ")
        if cells and cells[0].strip().strip("`*") == name:
            return line
    raise AssertionError(f"no table row for {name}")


@pytest.mark.parametrize("where", ["module docstring", "hardware/README.md"])
def test_the_documented_tables_match_the_code(where: str) -> None:
    """The tables people read (module docstring, hardware guide) say exactly what the code does."""
    text = patterns_module.__doc__ if where == "module docstring" else HARDWARE_README.read_text(encoding="utf-8")
    for state, indication in PATTERNS.items():
        row = _row(text, state.name)
        call_at = row.find(indication.call.describe())
        status_at = row.find(indication.status.describe(), call_at + len(indication.call.describe()))
        assert call_at >= 0 and status_at >= 0, f"{where}: the {state.name} row disagrees with PATTERNS: {row!r}"
        assert indication.meaning in row, f"{where}: the {state.name} row lacks {indication.meaning!r}"
    for name, flash in [("press", PRESS_FLASH), ("accepted", ACCEPTED_FLASH), ("refused", REFUSED_FLASH)]:
        assert flash.describe() in _row(text, name), f"{where}: the {name} flash row disagrees"
