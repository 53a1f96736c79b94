"""Who lives behind the door: the residents it rings and answers, and the buttons that ring them.

Legacy Matrix calls are 1:1 in a room of two, so a household is several rooms: one per resident, the door in each.
Each resident has rights (:class:`Resident`); each button rings a list of residents (:class:`Button`). The old
single ``matrix.owner`` + ``matrix.room_id`` is a household of one resident with every right, rung by one button.

Quiet hours are a pure function of the local clock time, which the front panel's press carries in
(:class:`~intercom.core.events.ButtonPressed`): the core has no wall clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MINUTES_PER_DAY = 24 * 60
_CLOCK = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily span of local clock time, ``start`` inclusive to ``end`` exclusive, in minutes after midnight. A
    span whose end is before its start runs over midnight (``22:00-07:00``); equal ends mean no quiet time."""

    start: int
    end: int

    def __post_init__(self) -> None:
        for value in (self.start, self.end):
            if not isinstance(value, int) or not 0 <= value < MINUTES_PER_DAY:
                raise ValueError(f"a time of day is a minute from 0 to {MINUTES_PER_DAY - 1}, not {value!r}")

    @classmethod
    def parse(cls, text: str) -> QuietHours:
        """``"HH:MM-HH:MM"`` (24-hour clock). Raises ValueError with what is wrong."""
        parts = text.split("-") if isinstance(text, str) else []
        if len(parts) != 2:
            raise ValueError('write quiet hours as "HH:MM-HH:MM", for example "22:00-07:00"')
        minutes = []
        for part in parts:
            match = _CLOCK.fullmatch(part.strip())
            if match is None:
                raise ValueError(f'"{part.strip()[:16]}" is not a time of day like "07:00" (24-hour clock)')
            minutes.append(int(match.group(1)) * 60 + int(match.group(2)))
        return cls(minutes[0], minutes[1])

    def covers(self, minute_of_day: int) -> bool:
        """Whether this local time (minutes after midnight) is quiet."""
        minute = minute_of_day % MINUTES_PER_DAY
        if self.start <= self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end

    def __str__(self) -> str:
        return f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"


#: How a resident can be rung (see :attr:`Resident.calls`).
CALL_TECHNOLOGIES = ("auto", "legacy", "matrixrtc")
LEGACY, MATRIXRTC = "legacy", "matrixrtc"


@dataclass(frozen=True, slots=True, kw_only=True)
class Resident:
    """One person the door serves, and what they may do.

    ``room_id`` None: the door makes a private room with them (the Matrix side reports it with
    :class:`~intercom.core.events.ResidentRoomChanged`).
    ``answer_calls``: the door answers this resident's calls by itself (they can look at the door at any time).
    ``open_door``: ``!open`` from them opens the door (during and just after a ring that rang them).
    ``quiet_hours``: during these, a ring posts the picture and a notice to them but does not call.
    ``calls``: how a press rings them: ``"legacy"`` (``m.call.*``: Element Web/Desktop, Element classic, Nheko,
    FluffyChat), ``"matrixrtc"`` (Element Call: Element X, Element Web's Element Call, Cinny), or ``"auto"``: the
    technology of their last call to the door, else MatrixRTC when the homeserver offers a MatrixRTC focus, else
    legacy. Calls from them are taken by either technology whatever this says.
    """

    user_id: str
    room_id: str | None = None
    answer_calls: bool = True
    open_door: bool = True
    quiet_hours: QuietHours | None = None
    calls: str = "auto"

    def __post_init__(self) -> None:
        if self.calls not in CALL_TECHNOLOGIES:
            raise ValueError(f"calls is one of {', '.join(CALL_TECHNOLOGIES)}, not {str(self.calls)[:40]!r}")

    def quiet_at(self, minute_of_day: int | None) -> bool:
        """Whether a ring at this local time calls nobody in this resident's room (None: time unknown, not quiet)."""
        return self.quiet_hours is not None and minute_of_day is not None and self.quiet_hours.covers(minute_of_day)


@dataclass(frozen=True, slots=True, kw_only=True)
class Button:
    """A bell button: ``name`` is what notices say was pressed (empty for the one button of a house);
    ``residents`` are the user IDs it rings."""

    name: str = ""
    residents: tuple[str, ...] = ()
