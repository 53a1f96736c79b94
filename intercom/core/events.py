"""Inputs to the call core: facts that happened, named in the past tense.

Each event is a small immutable value. The core never receives nio, aiortc or gpiozero objects: the adapters
translate their world into these. Wire content (``CallEventReceived.content``) is passed through as the JSON the
peer sent, because deciding what is malformed is the core's job (see :mod:`intercom.core.messages`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .trust import ObservedKeys


@dataclass(frozen=True, slots=True, kw_only=True)
class ButtonPressed:
    """A bell button was pressed (already debounced by the front panel).

    ``button``: its index in ``CoreSettings.buttons`` (0 for the one button of a house). ``minute_of_day``: the
    local clock time of the press in minutes after midnight, for quiet hours (None: unknown, nobody is quiet).
    """

    button: int = 0
    minute_of_day: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEventReceived:
    """An ``m.call.*`` room event arrived (decrypted if the room is encrypted).

    ``age_ms`` is the event's age when it was received (``unsigned.age``); ``None`` when the server gave none.
    ``content`` is the event content exactly as sent: anything may be in it.
    ``encrypted``: it arrived Megolm-encrypted; ``device_id``: the sender's device that encrypted it, as the
    Matrix side authenticated it (the session's keys match that device's keys), or None when it could not.
    ``room_members``: how many members the room has (joined or invited), when the Matrix side knows; a call in
    a room of two that holds the door can only be meant for the door.
    """

    room_id: str
    sender: str
    event_type: str
    content: Mapping[str, Any]
    age_ms: int | None = None
    event_id: str | None = None
    encrypted: bool = False
    device_id: str | None = None
    room_members: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RtcMembershipChanged:
    """An ``org.matrix.msc3401.call.member`` state event arrived (MatrixRTC: a device joined or left the room's
    call). State events are never encrypted, so nothing in it is authenticated beyond its sender. ``age_ms`` as
    for :class:`CallEventReceived`; ``content`` exactly as sent."""

    room_id: str
    sender: str
    state_key: str
    content: Mapping[str, Any]
    age_ms: int | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RtcDeclineReceived:
    """An ``org.matrix.msc4310.rtc.decline`` room event arrived: someone declined a MatrixRTC ring.
    ``encrypted``/``device_id`` as for :class:`CallEventReceived`."""

    room_id: str
    sender: str
    age_ms: int | None = None
    event_id: str | None = None
    encrypted: bool = False
    device_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RtcAvailabilityChanged:
    """Whether the homeserver offers a MatrixRTC focus (LiveKit and its token service) the door can use."""

    available: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class TextMessageReceived:
    """A text message arrived in a room the door is in (a possible command such as ``!open``)."""

    room_id: str
    sender: str
    body: Any
    age_ms: int | None = None
    event_id: str | None = None
    encrypted: bool = False  #: see :class:`CallEventReceived`
    device_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomMembersChanged:
    """The joined members (and join rule, and whether it is encrypted) of a room are now these."""

    room_id: str
    joined: frozenset[str]
    join_rule: str | None = None
    encrypted: bool = False
    #: Whether the door may send MatrixRTC call memberships there (the room's power levels).
    rtc_allowed: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class ResidentRoomChanged:
    """The room the door uses with a resident is now ``room_id`` (a room the door made, or one the resident
    invited it to), or there is none yet (None); ``waiting`` says for what, for the log and ``intercom status``
    ("waiting for @bob:example.org to join the room the door made")."""

    user_id: str
    room_id: str | None
    waiting: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class OwnerKeysObserved:
    """A resident's cross-signing identity and devices, as the homeserver gave them and the Matrix side checked
    them (signatures verified); the core decides what to trust (:mod:`intercom.core.trust`). ``user_id`` empty:
    the first resident (the owner of a household of one)."""

    keys: ObservedKeys
    user_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class TrustRequested:
    """Someone on the door itself (``intercom trust``) confirmed one of a resident's devices (``device_id``) or
    a resident's changed identity (``identity``). ``user_id`` empty: the resident who has that device (for a
    device), or the only resident with an identity problem (for an identity)."""

    device_id: str | None = None
    identity: bool = False
    user_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class HomeserverConnectionChanged:
    """The Matrix side reached (``online=True``) or lost the homeserver."""

    online: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnAvailabilityChanged:
    """Whether the homeserver offers a TURN server (the notice of a call that found no network path says why)."""

    available: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultChanged:
    """Something on the device needs the owner's attention (``fault``), or no longer does (None).

    Each ``source`` (``boot-config``, ``matrix``...) has at most one fault; a new one replaces it, None clears it.
    Example: the SD card's ``intercom.toml`` was rejected at boot. The door keeps working on its previous config;
    the panel shows the error pattern while idle, so the installer notices.
    """

    fault: str | None
    source: str = "device"


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalOfferReady:
    """The media side prepared our offer for ``call_id`` (answers :class:`~intercom.core.actions.PrepareOffer`).

    ``stream_id`` is the msid stream id in the SDP, used as the ``sdp_stream_metadata`` key; ``None`` omits it.
    ``candidates_complete`` False: more local candidates follow in :class:`LocalCandidatesGathered` (trickle), so
    end-of-candidates is sent only then.
    """

    call_id: str
    sdp: str
    stream_id: str | None = None
    candidates_complete: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalAnswerReady:
    """The media side prepared our answer (answers :class:`~intercom.core.actions.PrepareAnswer`); see
    :class:`LocalOfferReady` for ``candidates_complete``."""

    call_id: str
    sdp: str
    stream_id: str | None = None
    candidates_complete: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalCandidatesGathered:
    """Local ICE candidates found after the offer or answer went out (server-reflexive, relay), as Matrix
    ``m.call.candidates`` entries; ``complete``: gathering has finished (send end-of-candidates)."""

    call_id: str
    candidates: tuple[dict[str, Any], ...] = ()
    complete: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class NegotiationAnswerReady:
    """The media side answered a renegotiation offer (answers :class:`~intercom.core.actions.PrepareNegotiationAnswer`)."""

    call_id: str
    sdp: str
    stream_id: str | None = None


class MediaState(enum.Enum):
    """Connection state of a call's media, as the peer connection reports it."""

    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    FAILED = "failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaStateChanged:
    """The call's media connection changed state."""

    call_id: str
    state: MediaState


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaFailed:
    """A media operation for ``call_id`` failed (camera, microphone, SDP the media side could not use...)."""

    call_id: str
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerDue:
    """The deadline the core asked for (:meth:`DoorCore.next_deadline`) has passed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HangupRequested:
    """Something local wants the current call ended (service shutdown, an operator command)."""

    reason: str = "user_hangup"


Event = (
    ButtonPressed
    | CallEventReceived
    | RtcMembershipChanged
    | RtcDeclineReceived
    | RtcAvailabilityChanged
    | TextMessageReceived
    | RoomMembersChanged
    | ResidentRoomChanged
    | OwnerKeysObserved
    | TrustRequested
    | HomeserverConnectionChanged
    | TurnAvailabilityChanged
    | FaultChanged
    | LocalOfferReady
    | LocalAnswerReady
    | NegotiationAnswerReady
    | LocalCandidatesGathered
    | MediaStateChanged
    | MediaFailed
    | TimerDue
    | HangupRequested
)
