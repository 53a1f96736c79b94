"""The sans-I/O call core: every rule of the door's calls (legacy ``m.call.*`` and MatrixRTC), with no asyncio,
network or hardware.

Drive it with :meth:`DoorCore.handle(event, now) <DoorCore.handle>` and re-arm a timer at
:meth:`DoorCore.next_deadline`. This package imports only the standard library.
"""

from .actions import (
    Action,
    AddRemoteCandidates,
    ApplyAnswer,
    CallEnded,
    CallSummary,
    CloseMedia,
    IceCandidate,
    Ignored,
    OpenDoor,
    PostSnapshot,
    PrepareAnswer,
    PrepareNegotiationAnswer,
    PrepareOffer,
    PressFeedback,
    RtcAnnounce,
    RtcConnect,
    SendCallEvent,
    SendNotice,
    SetLeds,
    TrustUpdated,
)
from .commands import Command, CommandSettings
from .call import CallInput
from .door import DoorCore
from .settings import CallTimings, CoreSettings
from .household import Button, QuietHours, Resident
from .errors import LocalCallError, MalformedCallEvent
from .events import (
    ButtonPressed,
    CallEventReceived,
    Event,
    FaultChanged,
    HangupRequested,
    HomeserverConnectionChanged,
    LocalAnswerReady,
    LocalCandidatesGathered,
    LocalOfferReady,
    MediaFailed,
    MediaState,
    MediaStateChanged,
    NegotiationAnswerReady,
    OwnerKeysObserved,
    ResidentRoomChanged,
    RoomMembersChanged,
    RtcAvailabilityChanged,
    RtcDeclineReceived,
    RtcMembershipChanged,
    TextMessageReceived,
    TimerDue,
    TrustRequested,
    TurnAvailabilityChanged,
)
from .trust import DeviceKeys, ObservedKeys, Pins, Verdict
from .states import CallState, Direction, LedState, Outcome

__all__ = [name for name in dir() if not name.startswith("_") and name[0].isupper()]
