"""The debouncer on its own: edges with explicit times, no pins, no sleeping."""

from __future__ import annotations

import pytest

from intercom.panel import Debouncer

WINDOW = 0.050


def presses(debouncer: Debouncer, edges: list[tuple[float, bool]]) -> list[float]:
    """Feed ``(time, pressed)`` edges; return the times that counted as presses."""
    return [now for now, pressed in edges if debouncer.edge(pressed, now)]


def chatter(start: float, levels: str) -> list[tuple[float, bool]]:
    """Edges 8 ms apart from ``start``: ``levels`` is one letter per edge, ``d`` down (pressed) or ``u`` up."""
    return [(start + index * 0.008, letter == "d") for index, letter in enumerate(levels)]


def test_the_first_edge_of_a_push_counts_at_once() -> None:
    assert presses(Debouncer(WINDOW), [(1.0, True)]) == [1.0]


def test_contact_bounce_on_the_way_down_counts_once() -> None:
    """5 toggles within 40 ms (debounce 50 ms), ending pressed: one press, at the first edge."""
    edges = chatter(1.0, "dudud")
    assert edges[-1][0] - edges[0][0] < 0.040
    assert presses(Debouncer(WINDOW), edges) == [1.0]


def test_contact_bounce_on_the_way_up_adds_nothing() -> None:
    edges = [(1.0, True), *chatter(2.0, "ududu")]
    assert presses(Debouncer(WINDOW), edges) == [1.0]


def test_a_held_button_counts_once() -> None:
    """Holding makes no edges; letting go much later does not count either."""
    assert presses(Debouncer(WINDOW), [(1.0, True), (61.0, False)]) == [1.0]


def test_press_release_press_after_the_window_counts_twice() -> None:
    edges = [(1.0, True), (1.2, False), (1.2 + WINDOW, True)]
    assert presses(Debouncer(WINDOW), edges) == [1.0, 1.2 + WINDOW]


def test_a_release_shorter_than_the_window_is_bounce() -> None:
    """A press needs a real release first: up for less than the window, then down again, is not a new press."""
    assert presses(Debouncer(WINDOW), [(1.0, True), (1.2, False), (1.23, True)]) == [1.0]


def test_a_window_of_zero_counts_every_press_after_a_release() -> None:
    assert presses(Debouncer(0), [(1.0, True), (1.001, False), (1.002, True)]) == [1.0, 1.002]


def test_a_button_held_at_start_counts_only_after_release() -> None:
    debouncer = Debouncer(WINDOW, pressed=True)
    assert presses(debouncer, [(1.0, False), (1.01, True), (1.02, False), (2.0, True)]) == [2.0]


def test_a_repeated_report_of_the_same_level_is_not_an_edge() -> None:
    assert presses(Debouncer(WINDOW), [(1.0, True), (5.0, True)]) == [1.0]


@pytest.mark.parametrize("window", [-0.001, float("nan")])
def test_a_negative_window_is_refused(window: float) -> None:
    with pytest.raises(ValueError):
        Debouncer(window)
