"""What the core is configured with: who the door serves, and how long things may take.

The config file's ``[calls]`` defaults come from :class:`CallTimings` (``intercom.service.config``), so each timing
and its default is defined here once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .commands import CommandSettings


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
    """Who we are and who we serve. Built from the config file, which checks that the owner is another user than
    the door."""

    user_id: str  #: the door's Matrix user
    owner: str  #: the only user whose calls are answered and who is called
    room_id: str  #: the two-person room calls happen in
    party_id: str  #: our ``party_id`` (stable per device)
    #: Refuse to work in a room without end-to-end encryption (there, any session of the owner's account counts as
    #: the owner, and the homeserver reads every message).
    require_encryption: bool = False
    timings: CallTimings = field(default_factory=CallTimings)
    commands: CommandSettings = field(default_factory=CommandSettings)
