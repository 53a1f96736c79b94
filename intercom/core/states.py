"""The states of the door's call slot, and the one table of allowed transitions.

The door has one call slot: at most one call is being set up or running at a time (glare briefly involves two
call IDs, but only one of them ever owns the slot). :data:`TRANSITIONS` lists every move the slot may make;
:class:`~intercom.core.door.DoorCore` refuses (as a bug, :class:`~intercom.core.errors.LocalCallError`) any move
not in it, so this table is the whole shape of a call. Glare never needs a move of its own: the call that gives
way ends (back to ``IDLE``) and the winning call starts from ``IDLE``, within the same input.
"""

from __future__ import annotations

import enum


class CallState(enum.Enum):
    """Where the call slot is."""

    IDLE = "idle"
    #: Outgoing: the button was pressed; local media and the offer are being prepared. Nothing sent yet.
    PREPARING = "preparing"
    #: Outgoing: our invite is out; waiting for the owner to answer.
    RINGING = "ringing"
    #: Incoming: we accepted the owner's invite; our answer is being prepared. Nothing sent yet.
    ANSWERING = "answering"
    #: Offer and answer are exchanged; waiting for the media (ICE/DTLS) to connect.
    CONNECTING = "connecting"
    #: Media is flowing.
    CONNECTED = "connected"


TRANSITIONS: dict[CallState, frozenset[CallState]] = {
    CallState.IDLE: frozenset({CallState.PREPARING, CallState.ANSWERING}),
    CallState.PREPARING: frozenset({CallState.RINGING, CallState.IDLE}),
    CallState.RINGING: frozenset({CallState.CONNECTING, CallState.IDLE}),
    CallState.ANSWERING: frozenset({CallState.CONNECTING, CallState.IDLE}),
    CallState.CONNECTING: frozenset({CallState.CONNECTED, CallState.IDLE}),
    CallState.CONNECTED: frozenset({CallState.IDLE}),
}


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
    # A refused call never owned the slot, so it leaves the panel alone; listed for completeness.
    Outcome.REFUSED: LedState.IDLE,
}

#: The LED shown while a call is in each state.
CALL_LEDS: dict[CallState, dict[Direction, LedState]] = {
    CallState.PREPARING: {Direction.OUTGOING: LedState.CALLING},
    CallState.RINGING: {Direction.OUTGOING: LedState.CALLING},
    CallState.ANSWERING: {Direction.INCOMING: LedState.ANSWERING},
    CallState.CONNECTING: {Direction.OUTGOING: LedState.IN_CALL, Direction.INCOMING: LedState.ANSWERING},
    CallState.CONNECTED: {Direction.OUTGOING: LedState.IN_CALL, Direction.INCOMING: LedState.IN_CALL},
}
