"""Room commands from the owner: ``!open`` (pulse the door relay), ``!snapshot`` (post a fresh picture) and
``!trust DEVICE`` (trust another device of the owner's, sent from a device the door trusts).

A command is a text message whose first word is the command (case-insensitive), so ``!open`` and ``!Open please``
both count, while a sentence that merely mentions ``!open`` does not.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Command(enum.Enum):
    OPEN = "open"
    SNAPSHOT = "snapshot"
    TRUST = "trust"


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandSettings:
    open_command: str = "!open"
    snapshot_command: str = "!snapshot"
    trust_command: str = "!trust"
    #: The door opens only while a visitor's ring (the door's own call) rings or runs, or within this many seconds
    #: after it ended.
    open_window: float = 60.0
    #: Whether the owner's own calls to the door open that window too (off: a commercial intercom's rule, the
    #: door is opened for someone who rang).
    open_after_owner_call: bool = False
    #: How many times one ring may open the door.
    openings_per_ring: int = 3
    #: How long the relay is energised.
    relay_pulse: float = 3.0
    #: Commands older than this are ignored: a replayed ``!open`` from history must never open the door.
    max_age: float = 30.0


def parse_command(body: object, settings: CommandSettings) -> Command | None:
    """The command in a message body, or None."""
    if not isinstance(body, str) or len(body) > 1000:
        return None
    words = body.strip().split(maxsplit=1)
    if not words:
        return None
    first = words[0].casefold()
    for command, word in ((Command.OPEN, settings.open_command), (Command.SNAPSHOT, settings.snapshot_command),
                          (Command.TRUST, settings.trust_command)):
        if first == word.casefold():
            return command
    return None


def argument(body: object) -> str | None:
    """The command's first argument (``!trust ABCDEF`` → ``ABCDEF``), or None."""
    if not isinstance(body, str) or len(body) > 1000:
        return None
    words = body.strip().split()
    return words[1] if len(words) > 1 else None
