"""The states a call goes through, how calls end, and what the front panel shows.

A call's behaviour is the table in :mod:`intercom.core.call`; this module only names things. ``IDLE`` is a call
that has not started (and, for the door as a whole, "no call"); ``ENDED`` is final.
"""

from __future__ import annotations

import enum


class CallState(enum.Enum):
    """Where one call is."""

    #: Not started yet. The door reports ``IDLE`` when it has no call at all.
    IDLE = "idle"
    #: Outgoing: the button was pressed; local media and the offer are being prepared. Nothing sent yet.
    PREPARING = "preparing"
    #: Outgoing: our invite is out; waiting for the owner to answer.
    RINGING = "ringing"
    #: Incoming: we accepted the owner's invite; our answer is being prepared. Nothing sent yet.
    ANSWERING = "answering"
    #: Offer and answer are exchanged; waiting for the media (ICE/DTLS) to connect.
    CONNECTING = "connecting"
    #: Still connecting, and answering the peer's new offer (``m.call.negotiate``).
    CONNECTING_RENEGOTIATING = "connecting_renegotiating"
    #: Media is flowing.
    CONNECTED = "connected"
    #: Media is flowing; the peer's new offer is being answered.
    RENEGOTIATING = "renegotiating"
    #: Media was lost after it had connected; the reconnect grace runs.
    RECONNECTING = "reconnecting"
    #: Media is lost and the peer's new offer is being answered: usually the peer restarting ICE.
    RESTARTING = "restarting"
    #: Over. Nothing moves a call out of here.
    ENDED = "ended"


#: The states in which media has connected at least once: a call ended from here was a conversation.
TALKED = frozenset({CallState.CONNECTED, CallState.RENEGOTIATING, CallState.RECONNECTING, CallState.RESTARTING})
#: The states in which the peer's new offer is being answered.
RENEGOTIATING = frozenset({CallState.CONNECTING_RENEGOTIATING, CallState.RENEGOTIATING, CallState.RESTARTING})


class Direction(enum.Enum):
    OUTGOING = "outgoing"  # the door called the owner
    INCOMING = "incoming"  # the owner called the door


class Outcome(enum.Enum):
    """How a call ended, in the words a log line or a notice uses."""

    COMPLETED = "completed"  # media connected, then someone hung up
    MISSED = "missed"  # our call rang out unanswered
    DECLINED = "declined"  # the owner rejected our call
    CANCELLED = "cancelled"  # ended before media connected, by the peer or by us (shutdown)
    FAILED = "failed"  # media could not be prepared or did not connect
    REPLACED = "replaced"  # glare: this call gave way to the other side's
    ANSWERED_ELSEWHERE = "answered_elsewhere"  # the caller picked another device's answer
    REFUSED = "refused"  # an incoming call we would not take (not the owner, wrong room, busy)


class LedState(enum.Enum):
    """What the front panel shows. The panel maps each to a pattern a visitor can read."""

    IDLE = "idle"
    CALLING = "calling"  # ringing out to the owner
    ANSWERING = "answering"  # the owner is calling in; we are picking up
    IN_CALL = "in_call"
    ENDED = "ended"
    MISSED = "missed"
    DECLINED = "declined"
    ERROR = "error"  # a call failed, or the room is not usable
    OFFLINE = "offline"  # the homeserver cannot be reached


#: The LED a finished call leaves on the panel for a while (``ended_display``).
OUTCOME_LEDS: dict[Outcome, LedState] = {
    Outcome.COMPLETED: LedState.ENDED,
    Outcome.MISSED: LedState.MISSED,
    Outcome.DECLINED: LedState.DECLINED,
    Outcome.CANCELLED: LedState.ENDED,
    Outcome.FAILED: LedState.ERROR,
    Outcome.REPLACED: LedState.ENDED,
    Outcome.ANSWERED_ELSEWHERE: LedState.ENDED,
    # A refused call never started, so it leaves the panel alone; listed for completeness.
    Outcome.REFUSED: LedState.IDLE,
}

_CONNECTING = {Direction.OUTGOING: LedState.IN_CALL, Direction.INCOMING: LedState.ANSWERING}
_IN_CALL = {Direction.OUTGOING: LedState.IN_CALL, Direction.INCOMING: LedState.IN_CALL}

#: The LED shown while a call is in each state.
CALL_LEDS: dict[CallState, dict[Direction, LedState]] = {
    CallState.PREPARING: {Direction.OUTGOING: LedState.CALLING},
    CallState.RINGING: {Direction.OUTGOING: LedState.CALLING},
    CallState.ANSWERING: {Direction.INCOMING: LedState.ANSWERING},
    CallState.CONNECTING: _CONNECTING,
    CallState.CONNECTING_RENEGOTIATING: _CONNECTING,
    **{state: _IN_CALL for state in TALKED},
}
