"""What the core is configured with: who the door serves, and how long things may take.

The config file's ``[calls]`` defaults come from :class:`CallTimings` (``intercom.service.config``), so each timing
and its default is defined here once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .commands import CommandSettings
from .household import Button, Resident


@dataclass(frozen=True, slots=True, kw_only=True)
class CallTimings:
    """Timeouts in seconds. Defaults are what a commercial intercom would choose."""

    #: How long our call rings before we give up (``m.call.hangup`` reason ``invite_timeout``).
    ring_timeout: float = 60.0
    #: The ``lifetime`` of our invites. The spec recommends at least 90 s.
    invite_lifetime: float = 90.0
    #: From answer to connected media; far below aiortc's own 64 s ICE failure.
    connect_timeout: float = 15.0
    #: Longest call; a door conversation is short, and an open call is a live camera.
    max_call_duration: float = 300.0
    #: Longest wait for the media side to prepare an offer or answer (camera, microphone, ICE gathering), and
    #: for it to answer a renegotiation.
    prepare_timeout: float = 10.0
    #: How long the ended/missed/declined LED pattern stays before the panel returns to idle.
    ended_display: float = 10.0
    #: How long media may stay disconnected in a call before we hang up (``ice_timeout``).
    reconnect_grace: float = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class CoreSettings:
    """Who we are and who we serve. Built from the config file, which checks that no resident is the door and
    that every button names residents.

    Either ``residents`` (a household, with ``buttons``), or the single ``owner`` in ``room_id`` (a household of one
    with every right, rung by one button). ``owner`` and ``room_id`` are then filled in from the first resident,
    so code that serves one person keeps working.
    """

    user_id: str  #: the door's Matrix user
    party_id: str  #: our ``party_id`` (stable per device)
    owner: str = ""  #: the first resident (the only one in a household of one)
    room_id: str = ""  #: the first resident's configured room ("" when the door makes it)
    residents: tuple[Resident, ...] = ()
    #: The bell buttons, in the order of their ``ButtonPressed.button`` index. Default: one that rings everybody.
    buttons: tuple[Button, ...] = ()
    #: Refuse to work in a room without end-to-end encryption (there, any session of the owner's account counts as
    #: the owner, and the homeserver reads every message).
    require_encryption: bool = False
    timings: CallTimings = field(default_factory=CallTimings)
    commands: CommandSettings = field(default_factory=CommandSettings)

    def __post_init__(self) -> None:
        residents = self.residents
        if not residents:
            if not self.owner:
                raise ValueError("the door needs at least one resident (or an owner)")
            residents = (Resident(user_id=self.owner, room_id=self.room_id or None),)
            object.__setattr__(self, "residents", residents)
        ids = [r.user_id for r in residents]
        if len(set(ids)) != len(ids):
            raise ValueError("each resident is listed once")
        if self.user_id in ids:
            raise ValueError("the door cannot be its own resident")
        object.__setattr__(self, "owner", residents[0].user_id)
        object.__setattr__(self, "room_id", residents[0].room_id or "")
        if not self.buttons:
            object.__setattr__(self, "buttons", (Button(residents=tuple(ids)),))
        for button in self.buttons:
            unknown = set(button.residents) - set(ids)
            if unknown:
                raise ValueError(f"button {button.name!r} rings {sorted(unknown)}, who are not residents")

    def resident(self, user_id: str) -> Resident | None:
        return next((r for r in self.residents if r.user_id == user_id), None)
