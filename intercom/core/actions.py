"""Outputs of the call core: things to do, named as imperatives.

The orchestrator carries them out in the order given. Media actions for one call must be carried out in order
(an :class:`AddRemoteCandidates` never overtakes the :class:`ApplyAnswer` before it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .states import Direction, LedState, Outcome
from .trust import Pins


@dataclass(frozen=True, slots=True, kw_only=True)
class SendCallEvent:
    """Send a room event. ``content`` is a fresh JSON-ready dict owned by this action."""

    room_id: str
    event_type: str
    content: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class PrepareOffer:
    """Create the peer connection with local media and an offer; report :class:`LocalOfferReady` or :class:`MediaFailed`."""

    call_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PrepareAnswer:
    """Create the peer connection for an incoming offer and answer it; report :class:`LocalAnswerReady` or :class:`MediaFailed`."""

    call_id: str
    offer_sdp: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PrepareNegotiationAnswer:
    """Apply a renegotiation offer and answer it; report :class:`NegotiationAnswerReady` or :class:`MediaFailed`."""

    call_id: str
    offer_sdp: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplyAnswer:
    """Set the chosen remote answer on our outgoing call's peer connection."""

    call_id: str
    answer_sdp: str


@dataclass(frozen=True, slots=True, kw_only=True)
class IceCandidate:
    """One remote candidate as Matrix carries it; ``candidate == ""`` marks the end of candidates."""

    candidate: str
    sdp_mid: str | None = None
    sdp_mline_index: int | None = None

    @property
    def is_end(self) -> bool:
        return self.candidate == ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AddRemoteCandidates:
    """Add the peer's ICE candidates to the call's peer connection."""

    call_id: str
    candidates: tuple[IceCandidate, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseMedia:
    """Tear down the call's peer connection and local media. Idempotent."""

    call_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RtcConnect:
    """Join the LiveKit room of ``room_id``'s call (token from the focus) and publish the door's camera and
    microphone; report :class:`~intercom.core.events.LocalOfferReady` (outgoing) or
    :class:`~intercom.core.events.LocalAnswerReady` (incoming), or :class:`~intercom.core.events.MediaFailed`.
    Media counts as connected once the tracks of ``peer`` (a user ID) arrive."""

    call_id: str
    room_id: str
    peer: str
    direction: Direction
    focus_url: str = ""  #: the token service of the peer's call ("": the homeserver's focus)


@dataclass(frozen=True, slots=True, kw_only=True)
class RtcAnnounce:
    """Publish the door's membership of ``room_id``'s call (with a delayed leave that the homeserver sends if the
    door stops renewing it); with ``ring``, then send the ring notification mentioning that user, live for
    ``lifetime_ms``. Leaving again is part of closing the call's media."""

    call_id: str
    room_id: str
    ring: str = ""
    lifetime_ms: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenDoor:
    """Pulse the door-opener relay for ``seconds``: ``by`` asked for it, for the ring of ``call_id``."""

    seconds: float
    by: str = ""
    call_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SendNotice:
    """Post a short text notice into a room (acknowledgements, refusals, how a call ended).

    ``{time}`` in ``text`` stands for the local time (HH:MM) at which the notice is sent: the core has no wall
    clock. With ``reply_to_ring`` the notice replies to the picture of the ring that started the call (waiting a
    little for it to be posted); when there is no such picture, ``no_picture`` is added to the text instead.
    """

    room_id: str
    text: str
    reply_to_ring: bool = False
    no_picture: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PostSnapshot:
    """Take a still from the camera and post it into the room, once the room events before this action have been
    sent (a ring's picture follows its call's invite). Never delays the call it accompanies."""

    room_id: str
    reason: str  #: ``ring`` (a visitor pressed) or ``request`` (the owner asked)
    label: str = ""  #: which bell button was pressed ("" for the one button of a house)
    mention: str = ""  #: the resident the picture is for (mentioned, so their phone notifies)
    ring_id: str = ""  #: pictures of one ring (a ring group's rooms) share one still; "" takes a new one


@dataclass(frozen=True, slots=True, kw_only=True)
class SetLeds:
    """Show this call state on the front panel."""

    state: LedState


@dataclass(frozen=True, slots=True, kw_only=True)
class PressFeedback:
    """Acknowledge a button press at once: ``accepted`` is False when the press cannot start a call."""

    accepted: bool
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallSummary:
    """What a finished call was, for the log line, notices and status."""

    call_id: str
    direction: Direction
    peer: str
    outcome: Outcome
    reason: str  #: the hangup reason sent or received (or ``reject``)
    detail: str  #: why, in words for the log
    started_at: float
    connected_at: float | None
    ended_at: float

    @property
    def duration(self) -> float:
        """Seconds in call (0 if media never connected)."""
        return 0.0 if self.connected_at is None else max(0.0, self.ended_at - self.connected_at)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEnded:
    """A call finished; its summary is for logs and notices."""

    summary: CallSummary


@dataclass(frozen=True, slots=True, kw_only=True)
class TrustUpdated:
    """Keep these pins (in the state directory) and give the room keys only to the ``key_holders`` among the
    owner's devices: every other device of every member is withheld. ``trusted``: the devices whose events count as
    the owner's (the same as ``key_holders``, except while an identity change waits for confirmation: then the
    sessions trusted before still read the door's messages, but none counts as the owner). ``reason`` says what
    changed, for the log."""

    pins: Pins
    trusted: frozenset[str]
    key_holders: frozenset[str]
    untrusted: frozenset[str]
    reason: str = ""
    user_id: str = ""  #: whose devices these are (the resident); empty in a household of one: the owner


@dataclass(frozen=True, slots=True, kw_only=True)
class Ignored:
    """An input was not acted on, and why. Log it; nothing else needs doing."""

    reason: str
    event_type: str = ""
    sender: str = ""


Action = (
    SendCallEvent
    | PrepareOffer
    | PrepareAnswer
    | PrepareNegotiationAnswer
    | ApplyAnswer
    | AddRemoteCandidates
    | CloseMedia
    | RtcConnect
    | RtcAnnounce
    | OpenDoor
    | SendNotice
    | PostSnapshot
    | SetLeds
    | PressFeedback
    | CallEnded
    | TrustUpdated
    | Ignored
)
