"""One call as a state machine: :data:`TABLE` maps ``(state, input)`` to ``(effects, next state)``.

The table *is* the behaviour of a call, as h2's stream table is the behaviour of a stream: :meth:`Call.step` looks
the pair up, runs the effects (each a small function below that only appends
:mod:`actions <intercom.core.actions>`) and moves to the next state. A pair that is not in the table is refused: the
call is left exactly as it was and the refusal is reported as :class:`~intercom.core.actions.Ignored`, with the
reason from :data:`REFUSALS`.

Inputs are not wire events. The door (:mod:`intercom.core.door`) decides *whose* input something is (routing,
policy, glare between two calls) and the call technology's classifier turns a wire event into a :class:`CallInput`
with its :class:`Details` (legacy ``m.call.*``: :func:`intercom.core.legacy.classify`). What a call sends goes
through its :class:`Wire`, so a second call technology needs a wire and a classifier, not another table.

Timers are part of the table's world too: :data:`TIMERS` says in which states each one runs. A timer starts when a
call enters one of its states from a state without it, stops when the call leaves them, and its expiry is an input
like any other (``RING_TIMEOUT``...), so "what happens when the ring time is up" is a row of the table.

The state diagram in ``docs/architecture.md`` is generated from this table (by the development tools'
``diagram`` module; a test fails when it is out of date), so the picture cannot drift from the code.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import notices
from .actions import (
    Action,
    AddRemoteCandidates,
    ApplyAnswer,
    CallEnded,
    CallSummary,
    CloseMedia,
    IceCandidate,
    Ignored,
    PostSnapshot,
    PrepareNegotiationAnswer,
)
from .errors import LocalCallError
from .settings import CallTimings
from .states import RENEGOTIATING, TALKED, CallState, Direction, LedState, Outcome, OUTCOME_LEDS

#: Remote candidates a call keeps before it can pass them on (a hostile peer cannot grow memory).
HELD_CANDIDATES = 200


class CallInput(enum.Enum):
    """Everything that can happen to a call."""

    # the door
    PLACE = "the visitor rang"
    TAKE = "the owner's invite is taken"
    RIVAL_WINS = "the owner's invite wins glare"
    RIVAL_LOSES = "the owner's invite loses glare"
    GROUP_ANSWERED = "another resident took the ring"
    LOCAL_HANGUP = "local hangup"
    ROOM_UNUSABLE = "room unusable"
    INTERNAL_ERROR = "internal error"
    # the media side
    OFFER_READY = "offer ready"
    ANSWER_READY = "answer ready"
    NEGOTIATION_ANSWER_READY = "negotiation answer ready"
    LOCAL_CANDIDATES = "local candidates"
    MEDIA_CONNECTED = "media connected"
    MEDIA_DISCONNECTED = "media disconnected"
    MEDIA_LOST = "media failed"
    MEDIA_ERROR = "media error"
    # the peer
    ANSWER = "answer"
    REJECT = "reject"
    HANGUP = "hangup"
    SELECTED_ELSEWHERE = "answered elsewhere"
    NEGOTIATE = "new offer"
    REMOTE_CANDIDATES = "remote candidates"
    # timers (see TIMERS)
    PREPARE_TIMEOUT = "prepare timeout"
    RING_TIMEOUT = "ring timeout"
    CONNECT_TIMEOUT = "connect timeout"
    LONGEST_CALL = "longest call"
    RECONNECT_TIMEOUT = "reconnect timeout"
    NEGOTIATION_TIMEOUT = "negotiation timeout"


@dataclass(frozen=True, slots=True, kw_only=True)
class Details:
    """What an input carries. Each effect reads only the fields its input fills in."""

    sdp: str = ""
    stream_id: str | None = None
    #: Local gathering finished with this offer/answer/batch: send end-of-candidates.
    complete: bool = True
    #: Local candidates to trickle, as Matrix ``m.call.candidates`` entries.
    local: tuple[Mapping[str, Any], ...] = ()
    #: Remote candidates, each with the party that sent it.
    remote: tuple[tuple[str | None, IceCandidate], ...] = ()
    #: The peer party (and its version) of an answer or reject.
    party: str | None = None
    v1: bool = True
    #: A hangup reason: received (``HANGUP``) or wanted (``LOCAL_HANGUP``).
    reason: str = "user_hangup"
    #: Why, in words for the log (a media error, the room's problem, whose answer was picked...).
    detail: str = ""
    #: The owner's call that loses glare to this one (``RIVAL_LOSES``).
    rival_call_id: str = ""
    #: Who took the ring instead (``GROUP_ANSWERED``).
    by: str = ""
    #: For the refusal's log line: what caused the input.
    event_type: str = ""
    sender: str = ""


class Wire(Protocol):
    """How a call technology prepares its media and says things to the peer. Each method returns the action that
    does it, or None where the technology has nothing to say (MatrixRTC has no candidates, nor glare)."""

    def prepare(self, call: Call, *, offer_sdp: str) -> Action: ...
    def invite(self, call: Call, *, sdp: str, stream_id: str | None, lifetime_ms: int) -> Action | None: ...
    def answer(self, call: Call, *, sdp: str, stream_id: str | None) -> Action | None: ...
    def candidates(self, call: Call, candidates: Sequence[Mapping[str, Any]], *, end: bool) -> Action | None: ...
    def select(self, call: Call, party: str) -> Action | None: ...
    def hangup(self, call: Call, reason: str, *, call_id: str | None = None) -> Action | None: ...
    def refuse(self, call: Call, reason: str) -> Action | None: ...
    def refuse_other(self, call: Call, call_id: str, *, v1: bool, reason: str) -> Action | None: ...
    def negotiate_answer(self, call: Call, *, sdp: str, stream_id: str | None,
                         lifetime_ms: int) -> Action | None: ...


def _put(out: list[Action], action: Action | None) -> None:
    if action is not None:
        out.append(action)


@dataclass(slots=True, kw_only=True)
class Call:
    """One call. Mutable; only :meth:`step` and the effects of the table change it."""

    call_id: str
    direction: Direction
    peer: str  #: the peer's user ID
    room_id: str
    wire: Wire
    timings: CallTimings
    started_at: float
    state: CallState = CallState.IDLE
    #: The party we talk to: the invite's (incoming) or the chosen answer's (outgoing).
    peer_party: str | None = None
    peer_chosen: bool = False
    peer_v1: bool = True
    connected_at: float | None = None
    #: Running timers: the input each one becomes, and when it is due.
    timers: dict[CallInput, float] = field(default_factory=dict)
    #: Remote candidates not passed on yet (before the remote description is set), with their party.
    held: list[tuple[str | None, IceCandidate]] = field(default_factory=list)
    #: The chosen party sent end-of-candidates (until its next offer).
    remote_ended: bool = False
    #: Whether the homeserver offers TURN (for the notice of a call that found no network path).
    turn: bool = False
    #: Which bell button started an outgoing call ("" for the one button of a house), for pictures and notices.
    label: str = ""
    #: The press that started an outgoing call: every picture of that ring is the same still.
    ring_id: str = ""
    #: MatrixRTC: the LiveKit token service the peer's membership prefers ("": the homeserver's own focus).
    focus: str = ""
    #: How the call ended, once it has: the summary and the LED it leaves on the panel.
    summary: CallSummary | None = None
    result_led: LedState | None = None

    def step(self, what: CallInput, now: float, details: Details = Details()) -> list[Action]:
        """Apply one input: the table's effects, then its next state. A pair not in the table is refused."""
        row = TABLE.get((self.state, what))
        if row is None:
            return self.refusal(what, self.call_id, self.state, details)
        out: list[Action] = []
        for effect in row.effects:
            effect(self, details, now, out)
        self._enter(row.next, now)
        return out

    def takes(self, what: CallInput) -> bool:
        """Whether the call has a row for ``what`` in its state (else :meth:`step` would refuse it)."""
        return (self.state, what) in TABLE

    @staticmethod
    def refusal(what: CallInput, call_id: str, state: CallState | None = None,
                details: Details = Details()) -> list[Action]:
        """What refusing ``what`` reports: for a call in ``state``, or (None) for a call the door does not have."""
        reason = REFUSALS.get((state, what)) if state is not None else None
        return [Ignored(reason=reason or _REFUSED[what].format(call=call_id), event_type=details.event_type,
                        sender=details.sender)]

    def due(self, now: float) -> CallInput | None:
        """The timer input that is due at ``now`` (the earliest; ties in :data:`TIMERS` order), or None."""
        due = [(at, order, what) for order, (what, at) in enumerate(self._ordered_timers()) if at <= now]
        return min(due)[2] if due else None

    def next_deadline(self) -> float | None:
        return min(self.timers.values(), default=None)

    def _ordered_timers(self) -> list[tuple[CallInput, float]]:
        return [(what, self.timers[what]) for what in TIMERS if what in self.timers]

    def _enter(self, new: CallState, now: float) -> None:
        old, self.state = self.state, new
        for what, (setting, states) in TIMERS.items():
            if new in states and old not in states:
                self.timers[what] = now + getattr(self.timings, setting)
            elif new not in states:
                self.timers.pop(what, None)


# --- effects: each appends the actions of one step of a call ------------------------------------------------------

Effect = Callable[[Call, Details, float, list[Action]], None]


def prepare_offer(call: Call, d: Details, now: float, out: list[Action]) -> None:
    out.append(call.wire.prepare(call, offer_sdp=""))


def prepare_answer(call: Call, d: Details, now: float, out: list[Action]) -> None:
    out.append(call.wire.prepare(call, offer_sdp=d.sdp))


def send_invite(call: Call, d: Details, now: float, out: list[Action]) -> None:
    _put(out, call.wire.invite(call, sdp=d.sdp, stream_id=d.stream_id,
                                lifetime_ms=int(call.timings.invite_lifetime * 1000)))


def post_ring_picture(call: Call, d: Details, now: float, out: list[Action]) -> None:
    """The visitor rang: the picture goes to the room after the invite (or instead of it, if the call never got
    that far), so that taking and uploading it never slows the call."""
    out.append(PostSnapshot(room_id=call.room_id, reason="ring", label=call.label, mention=call.peer,
                            ring_id=call.ring_id or call.call_id))


def end_candidates_if_complete(call: Call, d: Details, now: float, out: list[Action]) -> None:
    if d.complete:
        _put(out, call.wire.candidates(call, [], end=True))


def send_answer(call: Call, d: Details, now: float, out: list[Action]) -> None:
    _put(out, call.wire.answer(call, sdp=d.sdp, stream_id=d.stream_id))
    end_candidates_if_complete(call, d, now, out)
    pass_candidates(call, d, now, out)


def apply_answer(call: Call, d: Details, now: float, out: list[Action]) -> None:
    """The first answer wins: it is the peer from now on, and (version 1) the caller says so."""
    call.peer_party, call.peer_v1, call.peer_chosen = d.party, d.v1, True
    out.append(ApplyAnswer(call_id=call.call_id, answer_sdp=d.sdp))
    pass_candidates(call, Details(), now, out)
    if d.v1 and d.party is not None:
        _put(out, call.wire.select(call, d.party))


def select_rejecting_party(call: Call, d: Details, now: float, out: list[Action]) -> None:
    """The caller selects a reject like an answer, so the owner's other devices stop ringing."""
    if d.party is not None:
        _put(out, call.wire.select(call, d.party))


def hang_up_rival(call: Call, d: Details, now: float, out: list[Action]) -> None:
    """Our call wins glare; the owner's side drops theirs by the same rule. Their invite was never answered, so it
    is declined as any unanswered invite is: ``m.call.reject`` towards v1 (``d.v1``), ``m.call.hangup`` with
    ``replaced`` towards v0."""
    _put(out, call.wire.refuse_other(call, d.rival_call_id, v1=d.v1, reason="replaced"))


def send_local_candidates(call: Call, d: Details, now: float, out: list[Action]) -> None:
    """Trickle: candidates found after our offer or answer went out follow it."""
    if not d.local and not d.complete:
        return
    _put(out, call.wire.candidates(call, list(d.local), end=d.complete))


def hold_candidates(call: Call, d: Details, now: float, out: list[Action]) -> None:
    call.held.extend(d.remote[: max(HELD_CANDIDATES - len(call.held), 0)])


def pass_candidates(call: Call, d: Details, now: float, out: list[Action]) -> None:
    """Pass the chosen party's candidates on (the remote description is set), up to its end-of-candidates."""
    hold_candidates(call, d, now, out)
    chosen: list[IceCandidate] = []
    for party, candidate in call.held:
        if party != call.peer_party or call.remote_ended:
            continue
        chosen.append(candidate)
        call.remote_ended = candidate.is_end
    call.held.clear()
    if chosen:
        out.append(AddRemoteCandidates(call_id=call.call_id, candidates=tuple(chosen)))


def mark_connected(call: Call, d: Details, now: float, out: list[Action]) -> None:
    call.connected_at = now


def prepare_negotiation_answer(call: Call, d: Details, now: float, out: list[Action]) -> None:
    # A new offer (an ICE restart) brings new candidates: start collecting them again.
    call.remote_ended = False
    out.append(PrepareNegotiationAnswer(call_id=call.call_id, offer_sdp=d.sdp))


def send_negotiation_answer(call: Call, d: Details, now: float, out: list[Action]) -> None:
    _put(out, call.wire.negotiate_answer(call, sdp=d.sdp, stream_id=d.stream_id,
                                          lifetime_ms=int(call.timings.prepare_timeout * 1000)))


@dataclass(frozen=True, slots=True)
class End:
    """The effect that ends a call: tell the peer (if ``tell``: how depends on what it was sent so far), close the
    media, report :class:`CallEnded`. ``reason``/``detail`` None take the input's."""

    outcome: Outcome
    reason: str | None = None
    detail: str | None = None
    tell: bool = True
    led: LedState | None = None

    def __call__(self, call: Call, d: Details, now: float, out: list[Action]) -> None:
        reason = d.reason if self.reason is None else self.reason
        if self.tell and call.state is CallState.ANSWERING:
            _put(out, call.wire.refuse(call, reason))  # an invite we never answered
        elif self.tell and call.state is not CallState.PREPARING:  # nothing was sent while preparing
            _put(out, call.wire.hangup(call, reason))
        out.append(CloseMedia(call_id=call.call_id))
        call.summary = CallSummary(
            call_id=call.call_id, direction=call.direction, peer=call.peer, outcome=self.outcome, reason=reason,
            detail=d.detail if self.detail is None else self.detail, started_at=call.started_at,
            connected_at=call.connected_at, ended_at=now)
        call.result_led = self.led or OUTCOME_LEDS[self.outcome]
        out.append(CallEnded(summary=call.summary))


def notice_missed(call: Call, d: Details, now: float, out: list[Action]) -> None:
    out.append(notices.missed(call.room_id, call.label))


def notice_declined(call: Call, d: Details, now: float, out: list[Action]) -> None:
    out.append(notices.declined(call.room_id, call.label))


def notice_answered_by(call: Call, d: Details, now: float, out: list[Action]) -> None:
    out.append(notices.answered_by(call.room_id, d.by, call.label))


def notice_no_path(call: Call, d: Details, now: float, out: list[Action]) -> None:
    out.append(notices.no_path(call.room_id, call.direction, turn=call.turn))


def notice_cut_off(call: Call, d: Details, now: float, out: list[Action]) -> None:
    out.append(notices.cut_off(call.room_id, call.direction))


def effect_name(effect: Effect) -> str:
    """An effect's name, for the diagram and for tests."""
    if isinstance(effect, End):
        told = "" if effect.tell else ", peer not told"
        return f"end {effect.outcome.value} ({effect.reason or 'reason given'}{told})"
    return effect.__name__.replace("_", " ")


# --- the table ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Row:
    effects: tuple[Effect, ...]
    next: CallState


S, I = CallState, CallInput


def _ends(state: CallState) -> dict[tuple[CallState, CallInput], Row]:
    """The ways every started call can end, with the outcome its state implies (a call that had connected was a
    conversation; before that it was cancelled or failed)."""
    talked = state in TALKED
    by_someone = Outcome.COMPLETED if talked else Outcome.CANCELLED
    failure = Outcome.COMPLETED if talked else Outcome.FAILED
    picture = (post_ring_picture,) if state is S.PREPARING else ()
    media_error = "unknown_error" if state in RENEGOTIATING else "user_media_failed"
    rows = {
        I.LOCAL_HANGUP: End(by_someone, detail="ended locally"),
        I.ROOM_UNUSABLE: End(by_someone, "user_hangup"),
        I.INTERNAL_ERROR: End(failure, "unknown_error", led=LedState.ERROR),
        I.MEDIA_ERROR: End(failure, media_error),
    }
    return {(state, what): Row((*picture, end), S.ENDED) for what, end in rows.items()}


def _peer_ends(state: CallState) -> dict[tuple[CallState, CallInput], Row]:
    """The peer ends a call it is in (or, with the caller's choice of another device, tells us we are not)."""
    by_someone = Outcome.COMPLETED if state in TALKED else Outcome.CANCELLED
    return {
        (state, I.HANGUP): Row((End(by_someone, detail="the owner hung up", tell=False),), S.ENDED),
        (state, I.SELECTED_ELSEWHERE): Row((End(Outcome.ANSWERED_ELSEWHERE, "answered_elsewhere", tell=False),),
                                           S.ENDED),
    }


def _in_progress(state: CallState) -> dict[tuple[CallState, CallInput], Row]:
    """Offer and answer are exchanged: candidates flow both ways, the peer may hang up."""
    return {
        **_ends(state),
        **_peer_ends(state),
        (state, I.LOCAL_CANDIDATES): Row((send_local_candidates,), state),
        (state, I.REMOTE_CANDIDATES): Row((pass_candidates,), state),
    }


_ICE_FAILED = (End(Outcome.FAILED, "ice_failed", detail="media connection failed"), notice_no_path)
_NOT_CONNECTED = (End(Outcome.FAILED, "ice_failed", detail="media did not connect"), notice_no_path)
_ICE_LOST = (End(Outcome.COMPLETED, "ice_timeout", detail="media connection failed"), notice_cut_off)
_STAYED_LOST = (End(Outcome.COMPLETED, "ice_timeout", detail="media stayed disconnected"), notice_cut_off)
_LONGEST = End(Outcome.COMPLETED, "user_hangup", detail="longest call duration reached")
_NEGOTIATION_LATE = "renegotiation was not answered in time"
#: A ring group: another resident answered (or called the door), so this resident's ringing stops.
_TAKEN_BY_OTHER = End(Outcome.ANSWERED_ELSEWHERE, "user_hangup", detail="another resident took the ring")

TABLE: dict[tuple[CallState, CallInput], Row] = {
    # Starting: a press places a call, the owner's invite is taken.
    (S.IDLE, I.PLACE): Row((prepare_offer,), S.PREPARING),
    (S.IDLE, I.TAKE): Row((prepare_answer,), S.ANSWERING),

    # Outgoing, preparing our offer: nothing sent yet, so glare simply lets the owner's call win.
    **_ends(S.PREPARING),
    (S.PREPARING, I.OFFER_READY): Row((send_invite, post_ring_picture, end_candidates_if_complete), S.RINGING),
    (S.PREPARING, I.PREPARE_TIMEOUT): Row((post_ring_picture, End(
        Outcome.FAILED, "user_media_failed", detail="local media took too long to prepare")), S.ENDED),
    (S.PREPARING, I.RIVAL_WINS): Row((post_ring_picture, End(
        Outcome.REPLACED, "replaced", detail="the owner called while we were preparing our call")), S.ENDED),
    (S.PREPARING, I.RIVAL_LOSES): Row((post_ring_picture, End(
        Outcome.REPLACED, "replaced", detail="the owner called while we were preparing our call")), S.ENDED),
    (S.PREPARING, I.REMOTE_CANDIDATES): Row((hold_candidates,), S.PREPARING),
    (S.PREPARING, I.GROUP_ANSWERED): Row((post_ring_picture, _TAKEN_BY_OTHER, notice_answered_by), S.ENDED),

    # Outgoing, ringing: the first answer wins; a reject (or a version 0 hangup) declines.
    **_ends(S.RINGING),
    (S.RINGING, I.ANSWER): Row((apply_answer,), S.CONNECTING),
    (S.RINGING, I.REJECT): Row((select_rejecting_party, End(
        Outcome.DECLINED, "reject", detail="the owner declined", tell=False), notice_declined), S.ENDED),
    (S.RINGING, I.HANGUP): Row((End(Outcome.DECLINED, detail="the owner declined", tell=False), notice_declined),
                               S.ENDED),
    (S.RINGING, I.RING_TIMEOUT): Row((End(Outcome.MISSED, "invite_timeout", detail="nobody answered"),
                                      notice_missed), S.ENDED),
    (S.RINGING, I.RIVAL_WINS): Row((End(Outcome.REPLACED, "replaced"),), S.ENDED),
    (S.RINGING, I.RIVAL_LOSES): Row((hang_up_rival,), S.RINGING),
    (S.RINGING, I.GROUP_ANSWERED): Row((_TAKEN_BY_OTHER, notice_answered_by), S.ENDED),
    (S.RINGING, I.LOCAL_CANDIDATES): Row((send_local_candidates,), S.RINGING),
    (S.RINGING, I.REMOTE_CANDIDATES): Row((hold_candidates,), S.RINGING),

    # Incoming, preparing our answer.
    **_ends(S.ANSWERING),
    **_peer_ends(S.ANSWERING),
    (S.ANSWERING, I.ANSWER_READY): Row((send_answer,), S.CONNECTING),
    (S.ANSWERING, I.PREPARE_TIMEOUT): Row((End(
        Outcome.FAILED, "user_media_failed", detail="local media took too long to prepare"),), S.ENDED),
    (S.ANSWERING, I.REMOTE_CANDIDATES): Row((hold_candidates,), S.ANSWERING),

    # Connecting (both directions).
    **_in_progress(S.CONNECTING),
    (S.CONNECTING, I.MEDIA_CONNECTED): Row((mark_connected,), S.CONNECTED),
    (S.CONNECTING, I.MEDIA_DISCONNECTED): Row((), S.CONNECTING),
    (S.CONNECTING, I.MEDIA_LOST): Row(_ICE_FAILED, S.ENDED),
    (S.CONNECTING, I.CONNECT_TIMEOUT): Row(_NOT_CONNECTED, S.ENDED),
    (S.CONNECTING, I.NEGOTIATE): Row((prepare_negotiation_answer,), S.CONNECTING_RENEGOTIATING),

    **_in_progress(S.CONNECTING_RENEGOTIATING),
    (S.CONNECTING_RENEGOTIATING, I.NEGOTIATION_ANSWER_READY): Row((send_negotiation_answer,), S.CONNECTING),
    (S.CONNECTING_RENEGOTIATING, I.MEDIA_CONNECTED): Row((mark_connected,), S.RENEGOTIATING),
    (S.CONNECTING_RENEGOTIATING, I.MEDIA_DISCONNECTED): Row((), S.CONNECTING_RENEGOTIATING),
    (S.CONNECTING_RENEGOTIATING, I.MEDIA_LOST): Row(_ICE_FAILED, S.ENDED),
    (S.CONNECTING_RENEGOTIATING, I.CONNECT_TIMEOUT): Row(_NOT_CONNECTED, S.ENDED),
    (S.CONNECTING_RENEGOTIATING, I.NEGOTIATION_TIMEOUT): Row((End(
        Outcome.FAILED, "unknown_error", detail=_NEGOTIATION_LATE),), S.ENDED),

    # Connected: media flows until someone hangs up, the longest call is reached, or media is lost.
    **_in_progress(S.CONNECTED),
    (S.CONNECTED, I.MEDIA_CONNECTED): Row((), S.CONNECTED),
    (S.CONNECTED, I.MEDIA_DISCONNECTED): Row((), S.RECONNECTING),
    (S.CONNECTED, I.MEDIA_LOST): Row(_ICE_LOST, S.ENDED),
    (S.CONNECTED, I.LONGEST_CALL): Row((_LONGEST,), S.ENDED),
    (S.CONNECTED, I.NEGOTIATE): Row((prepare_negotiation_answer,), S.RENEGOTIATING),

    **_in_progress(S.RENEGOTIATING),
    (S.RENEGOTIATING, I.NEGOTIATION_ANSWER_READY): Row((send_negotiation_answer,), S.CONNECTED),
    (S.RENEGOTIATING, I.MEDIA_CONNECTED): Row((), S.RENEGOTIATING),
    (S.RENEGOTIATING, I.MEDIA_DISCONNECTED): Row((), S.RESTARTING),
    (S.RENEGOTIATING, I.MEDIA_LOST): Row(_ICE_LOST, S.ENDED),
    (S.RENEGOTIATING, I.LONGEST_CALL): Row((_LONGEST,), S.ENDED),
    (S.RENEGOTIATING, I.NEGOTIATION_TIMEOUT): Row((End(
        Outcome.COMPLETED, "unknown_error", detail=_NEGOTIATION_LATE),), S.ENDED),

    # Media lost after connecting: it may come back (or the peer restarts ICE) within the reconnect grace.
    **_in_progress(S.RECONNECTING),
    (S.RECONNECTING, I.MEDIA_CONNECTED): Row((), S.CONNECTED),
    (S.RECONNECTING, I.MEDIA_DISCONNECTED): Row((), S.RECONNECTING),
    (S.RECONNECTING, I.MEDIA_LOST): Row(_ICE_LOST, S.ENDED),
    (S.RECONNECTING, I.LONGEST_CALL): Row((_LONGEST,), S.ENDED),
    (S.RECONNECTING, I.RECONNECT_TIMEOUT): Row(_STAYED_LOST, S.ENDED),
    (S.RECONNECTING, I.NEGOTIATE): Row((prepare_negotiation_answer,), S.RESTARTING),

    **_in_progress(S.RESTARTING),
    (S.RESTARTING, I.NEGOTIATION_ANSWER_READY): Row((send_negotiation_answer,), S.RECONNECTING),
    (S.RESTARTING, I.MEDIA_CONNECTED): Row((), S.RENEGOTIATING),
    (S.RESTARTING, I.MEDIA_DISCONNECTED): Row((), S.RESTARTING),
    (S.RESTARTING, I.MEDIA_LOST): Row(_ICE_LOST, S.ENDED),
    (S.RESTARTING, I.LONGEST_CALL): Row((_LONGEST,), S.ENDED),
    (S.RESTARTING, I.RECONNECT_TIMEOUT): Row(_STAYED_LOST, S.ENDED),
    (S.RESTARTING, I.NEGOTIATION_TIMEOUT): Row((End(
        Outcome.COMPLETED, "unknown_error", detail=_NEGOTIATION_LATE),), S.ENDED),
}

#: Each timer: the setting that gives its length, and the states it runs in.
TIMERS: dict[CallInput, tuple[str, frozenset[CallState]]] = {
    I.NEGOTIATION_TIMEOUT: ("prepare_timeout", RENEGOTIATING),
    I.RECONNECT_TIMEOUT: ("reconnect_grace", frozenset({S.RECONNECTING, S.RESTARTING})),
    I.PREPARE_TIMEOUT: ("prepare_timeout", frozenset({S.PREPARING, S.ANSWERING})),
    I.RING_TIMEOUT: ("ring_timeout", frozenset({S.RINGING})),
    I.CONNECT_TIMEOUT: ("connect_timeout", frozenset({S.CONNECTING, S.CONNECTING_RENEGOTIATING})),
    I.LONGEST_CALL: ("max_call_duration", TALKED),
}

#: Why an input is refused, when its state has no row for it ("{call}" is the call ID).
_REFUSED: dict[CallInput, str] = {
    I.PLACE: "call {call} was placed already",
    I.TAKE: "call {call} was taken already",
    I.RIVAL_WINS: "busy with another call",
    I.RIVAL_LOSES: "busy with another call",
    I.GROUP_ANSWERED: "call {call} is past ringing",
    I.LOCAL_HANGUP: "call {call} has already ended",
    I.ROOM_UNUSABLE: "call {call} has already ended",
    I.INTERNAL_ERROR: "call {call} has already ended",
    I.OFFER_READY: "local offer for {call}, which is not the call being set up",
    I.ANSWER_READY: "local answer for {call}, which is not the call being set up",
    I.NEGOTIATION_ANSWER_READY: "renegotiation answer for {call} that nobody asked for",
    I.LOCAL_CANDIDATES: "local candidates for {call}, which is not a call in progress",
    I.MEDIA_CONNECTED: "media connected for {call}, not a call in progress",
    I.MEDIA_DISCONNECTED: "media disconnected for {call}, not a call in progress",
    I.MEDIA_LOST: "media failed for {call}, not a call in progress",
    I.MEDIA_ERROR: "media failure for {call}, which is not the call being set up",
    I.ANSWER: "an answer was already chosen",
    I.REJECT: "reject after the call was answered",
    I.HANGUP: "call {call} has already ended",
    I.SELECTED_ELSEWHERE: "select_answer that does not concern our answer",
    I.NEGOTIATE: "negotiate outside a version 1 call in progress",
    I.REMOTE_CANDIDATES: "call {call} has already ended",
    **{timer: "no {call} timer is running" for timer in TIMERS},
}
#: Refusals more specific than :data:`_REFUSED`.
REFUSALS: dict[tuple[CallState, CallInput], str] = {
    **{(state, I.NEGOTIATE): "negotiate while the previous one is still being answered"
       for state in CallState if state in RENEGOTIATING},
}


def check_table() -> None:
    """The table's own consistency, checked at import: every input has a refusal, ENDED is final, every row that
    ends a call has exactly one :class:`End`, and every timer's input ends or changes the call where it runs."""
    missing = set(CallInput) - set(_REFUSED)
    if missing:
        raise LocalCallError(f"no refusal for {sorted(m.name for m in missing)}")
    for (state, what), row in TABLE.items():
        ends = sum(isinstance(e, End) for e in row.effects)
        if state is S.ENDED or ends != (row.next is S.ENDED):
            raise LocalCallError(f"row ({state.name}, {what.name}) must end the call exactly when it goes to ENDED")
    for timer, (_, states) in TIMERS.items():
        for state in states:
            if (state, timer) not in TABLE:
                raise LocalCallError(f"timer {timer.name} runs in {state.name}, which has no row for it")


check_table()
