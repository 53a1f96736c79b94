"""The door's call core: one sans-I/O state machine for 1:1 legacy Matrix calls.

Theory of operation
-------------------
:meth:`DoorCore.handle` takes one :mod:`event <intercom.core.events>` and the current time and returns the
:mod:`actions <intercom.core.actions>` to carry out, in order. The core owns no timers: it reports the next moment
it wants to be woken at through :meth:`DoorCore.next_deadline`, and every call to ``handle`` first acts on the
deadlines that have passed (so a late :class:`~intercom.core.events.TimerDue` changes nothing).

The door has one call slot (:class:`~intercom.core.states.CallState`); its transitions are listed in
:data:`~intercom.core.states.TRANSITIONS` and nowhere else. Who may call is :mod:`~intercom.core.policy`; which call
survives glare is :mod:`~intercom.core.glare`; the wire format is :mod:`~intercom.core.messages`.

Nothing a peer sends raises: malformed or unwelcome input becomes an :class:`~intercom.core.actions.Ignored` with
the reason. An exception inside the core (a bug) ends the current call cleanly and is reported the same way, so the
service never stops because of what a peer sent.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from . import glare, messages, policy
from .commands import Command, CommandSettings, parse_command
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
    SendCallEvent,
    SendNotice,
    SetLeds,
)
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
    RoomMembersChanged,
    TextMessageReceived,
    TimerDue,
)
from .states import CALL_LEDS, OUTCOME_LEDS, TRANSITIONS, CallState, Direction, LedState, Outcome

#: How many call IDs of finished calls we remember, to ignore their late events and replays.
FINISHED_MEMORY = 256
#: Bounds on candidates held for calls we have not seen (yet): a hostile peer cannot grow memory.
PENDING_CALLS = 16
PENDING_PER_CALL = 200


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
    #: Longest wait for the media side to prepare an offer or answer (camera, microphone, ICE gathering).
    prepare_timeout: float = 10.0
    #: How long the ended/missed/declined LED pattern stays before the panel returns to idle.
    ended_display: float = 10.0
    #: How long media may stay disconnected in a call before we hang up (``ice_timeout``).
    reconnect_grace: float = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class CoreSettings:
    """Who we are and who we serve."""

    user_id: str  #: the door's Matrix user
    owner: str  #: the only user whose calls are answered and who is called
    room_id: str  #: the two-person room calls happen in
    party_id: str  #: our ``party_id`` (stable per device)
    timings: CallTimings = field(default_factory=CallTimings)
    commands: CommandSettings = field(default_factory=CommandSettings)

    def __post_init__(self) -> None:
        if self.user_id == self.owner:
            raise LocalCallError("the owner must be another user than the door")


class _Notify(enum.Enum):
    """What the peer is told when a call ends."""

    NOTHING = "nothing"  # nothing was sent yet, or the peer ended it
    HANGUP = "hangup"  # m.call.hangup
    REFUSE = "refuse"  # an invite we never answered: m.call.reject (v1) or m.call.hangup (v0)


@dataclass(slots=True, kw_only=True)
class _Call:
    """The call in the slot. Mutable, private to the core."""

    call_id: str
    direction: Direction
    state: CallState
    started_at: float
    deadline: float | None = None
    #: The party we talk to: the invite's party (incoming) or the chosen answer's (outgoing); None until chosen.
    peer_party: str | None = None
    peer_chosen: bool = False
    peer_v1: bool = True
    #: Remote description applied on the media side, so candidates may be passed on.
    remote_ready: bool = False
    remote_candidates_ended: bool = False
    connected_at: float | None = None
    disconnected_since: float | None = None
    renegotiating_until: float | None = None


def _ended_by_someone(call: _Call) -> Outcome:
    """A call someone ended on purpose: completed if media had connected, else cancelled."""
    return Outcome.COMPLETED if call.connected_at is not None else Outcome.CANCELLED


class DoorCore:
    """The call logic of one door. See the module docstring for how to drive it."""

    def __init__(self, settings: CoreSettings, *, new_token: Callable[[], str] = glare.random_token) -> None:
        self.settings = settings
        self._new_token = new_token
        self._call: _Call | None = None
        self._online = False
        self._room: policy.RoomFacts | None = None
        self._finished: OrderedDict[str, None] = OrderedDict()
        #: call_id -> [(sender, party_id, candidate)] for candidates we cannot pass on yet.
        self._pending: OrderedDict[str, list[tuple[str, str | None, IceCandidate]]] = OrderedDict()
        self._result: tuple[LedState, float] | None = None
        self._shown_led: LedState | None = None
        #: When the last call (rung or connected) ended: the door may be opened for a while after it.
        self._last_call_ended: float | None = None
        self._fault: str | None = None

    # --- public view ---------------------------------------------------------------------------------------------

    @property
    def state(self) -> CallState:
        return self._call.state if self._call else CallState.IDLE

    @property
    def call_id(self) -> str | None:
        return self._call.call_id if self._call else None

    @property
    def direction(self) -> Direction | None:
        return self._call.direction if self._call else None

    @property
    def online(self) -> bool:
        return self._online

    @property
    def fault(self) -> str | None:
        """What needs the owner's attention on the device (see :class:`FaultChanged`), or None."""
        return self._fault

    @property
    def led(self) -> LedState:
        """What the panel shows now (as last emitted by :class:`SetLeds`)."""
        return self._shown_led if self._shown_led is not None else self._wanted_led()

    def room_problem(self) -> str | None:
        """Why the configured room cannot carry a call now, or None."""
        return policy.room_problem(self._room, user_id=self.settings.user_id, owner=self.settings.owner)

    def next_deadline(self) -> float | None:
        """When the core wants :class:`TimerDue` (loop time), or None."""
        times = []
        if self._call is not None:
            times.append(self._call_deadline(self._call))
        if self._result is not None:
            times.append(self._result[1])
        times = [t for t in times if t is not None]
        return min(times) if times else None

    # --- entry point ---------------------------------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Action]:
        """Feed one event; returns the actions to carry out, in order. Never raises."""
        out: list[Action] = []
        try:
            self._expire(now, out)
            self._dispatch(event, now, out)
        except Exception as exc:  # a bug in the core: end the call, keep the service
            out.append(Ignored(reason=f"internal error handling {type(event).__name__}: {exc!r}"))
            if self._call is not None:
                self._force_end(now, out, f"internal error handling {type(event).__name__}")
        self._update_leds(now, out)
        return out

    def _dispatch(self, event: Event, now: float, out: list[Action]) -> None:
        match event:
            case ButtonPressed():
                self._on_press(now, out)
            case CallEventReceived():
                self._on_call_event(event, now, out)
            case TextMessageReceived():
                self._on_text(event, now, out)
            case RoomMembersChanged():
                self._on_members(event, now, out)
            case HomeserverConnectionChanged(online=online):
                self._online = online
            case FaultChanged(fault=fault):
                self._fault = fault
            case LocalOfferReady():
                self._on_offer_ready(event, now, out)
            case LocalAnswerReady():
                self._on_answer_ready(event, now, out)
            case NegotiationAnswerReady():
                self._on_negotiation_ready(event, out)
            case LocalCandidatesGathered():
                self._on_local_candidates(event, out)
            case MediaStateChanged():
                self._on_media_state(event, now, out)
            case MediaFailed():
                self._on_media_failed(event, now, out)
            case TimerDue():
                pass  # _expire already acted on everything due
            case HangupRequested(reason=reason):
                self._on_local_hangup(reason, now, out)
            case _:
                out.append(Ignored(reason=f"unknown input {type(event).__name__}"))

    # --- local inputs --------------------------------------------------------------------------------------------

    def _on_press(self, now: float, out: list[Action]) -> None:
        if self._call is not None:
            # Ringing or talking already: acknowledge the press, start nothing (one call at a time).
            out.append(PressFeedback(accepted=True, reason=f"a call is already {self._call.state.value}"))
            return
        problem = "the homeserver cannot be reached" if not self._online else self.room_problem()
        if problem is not None:
            out.append(PressFeedback(accepted=False, reason=problem))
            out.append(Ignored(reason=f"press not turned into a call: {problem}"))
            return
        call_id = glare.new_call_id(self._new_token())
        self._call = _Call(call_id=call_id, direction=Direction.OUTGOING, state=CallState.IDLE, started_at=now)
        self._result = None
        self._move(CallState.PREPARING, now, self.settings.timings.prepare_timeout)
        out.append(PressFeedback(accepted=True))
        out.append(PrepareOffer(call_id=call_id))

    def _on_local_hangup(self, reason: str, now: float, out: list[Action]) -> None:
        call = self._call
        if call is None:
            out.append(Ignored(reason="hangup requested with no call"))
            return
        self._end(now, out, _ended_by_someone(call), reason, self._notify_for(call), detail="ended locally")

    def _on_members(self, event: RoomMembersChanged, now: float, out: list[Action]) -> None:
        if event.room_id != self.settings.room_id:
            return
        self._room = policy.RoomFacts(joined=frozenset(event.joined), join_rule=event.join_rule)
        problem = self.room_problem()
        if self._call is not None and problem is not None:
            self._end(now, out, _ended_by_someone(self._call), "user_hangup", self._notify_for(self._call),
                      detail=problem)

    def _on_text(self, event: TextMessageReceived, now: float, out: list[Action]) -> None:
        cmds = self.settings.commands
        command = None if event.sender == self.settings.user_id else parse_command(event.body, cmds)
        if command is None:
            return
        if event.sender != self.settings.owner or event.room_id != self.settings.room_id:
            return out.append(Ignored(reason=f"{command.value} command not from the owner in the configured room",
                                      event_type="m.room.message", sender=str(event.sender)[:255]))
        if (event.age_ms or 0) > cmds.max_age * 1000:
            return out.append(Ignored(reason=f"{command.value} command is too old to act on",
                                      event_type="m.room.message", sender=event.sender))
        room = self.settings.room_id
        if command is Command.SNAPSHOT:
            return out.append(PostSnapshot(room_id=room, reason="request"))
        in_window = self._call is not None or (
            self._last_call_ended is not None and now - self._last_call_ended <= cmds.open_window)
        if in_window:
            out.append(OpenDoor(seconds=cmds.relay_pulse))
            out.append(SendNotice(room_id=room, text=f"Door opened for {cmds.relay_pulse:g} s."))
        else:
            out.append(SendNotice(room_id=room, text=(
                f"Not opened: the door opens only during a call or within {cmds.open_window:g} s after one.")))
            out.append(Ignored(reason="open command outside a call", event_type="m.room.message",
                               sender=event.sender))

    # --- media inputs --------------------------------------------------------------------------------------------

    def _current(self, call_id: str, state: CallState) -> _Call | None:
        call = self._call
        return call if call is not None and call.call_id == call_id and call.state is state else None

    def _stale(self, what: str, call_id: str, out: list[Action]) -> None:
        out.append(Ignored(reason=f"{what} for {call_id}, which is not the call being set up"))
        if self.call_id != call_id:
            # The media side may have finished building it after we asked to close it: close it again.
            out.append(CloseMedia(call_id=call_id))

    def _on_offer_ready(self, event: LocalOfferReady, now: float, out: list[Action]) -> None:
        call = self._current(event.call_id, CallState.PREPARING)
        if call is None:
            return self._stale("local offer", event.call_id, out)
        s = self.settings
        self._move(CallState.RINGING, now, s.timings.ring_timeout)
        self._send(out, messages.INVITE, messages.invite_content(
            call.call_id, s.party_id, sdp=event.sdp, stream_id=event.stream_id,
            lifetime_ms=int(s.timings.invite_lifetime * 1000), invitee=s.owner))
        # The visitor's picture comes after the invite, so that taking and uploading it never slows the call.
        out.append(PostSnapshot(room_id=s.room_id, reason="ring"))
        if event.candidates_complete:
            self._send(out, messages.CANDIDATES, messages.end_of_candidates_content(call.call_id, s.party_id))

    def _on_answer_ready(self, event: LocalAnswerReady, now: float, out: list[Action]) -> None:
        call = self._current(event.call_id, CallState.ANSWERING)
        if call is None:
            return self._stale("local answer", event.call_id, out)
        s = self.settings
        self._move(CallState.CONNECTING, now, s.timings.connect_timeout)
        self._send(out, messages.ANSWER, messages.answer_content(
            call.call_id, s.party_id, sdp=event.sdp, stream_id=event.stream_id))
        if event.candidates_complete:
            self._send(out, messages.CANDIDATES, messages.end_of_candidates_content(call.call_id, s.party_id))
        call.remote_ready = True
        self._flush_candidates(call, out)

    def _on_local_candidates(self, event: LocalCandidatesGathered, out: list[Action]) -> None:
        """Trickle: candidates found after our offer or answer went out follow it in ``m.call.candidates``."""
        call = self._call
        if call is None or call.call_id != event.call_id or call.state not in (
                CallState.RINGING, CallState.CONNECTING, CallState.CONNECTED):
            return out.append(Ignored(reason=f"local candidates for {event.call_id}, which is not a call in progress"))
        if not event.candidates and not event.complete:
            return
        self._send(out, messages.CANDIDATES, messages.candidates_content(
            call.call_id, self.settings.party_id, list(event.candidates), end=event.complete))

    def _on_negotiation_ready(self, event: NegotiationAnswerReady, out: list[Action]) -> None:
        call = self._call
        if call is None or call.call_id != event.call_id or call.renegotiating_until is None:
            return out.append(Ignored(reason=f"renegotiation answer for {event.call_id} that nobody asked for"))
        call.renegotiating_until = None
        self._send(out, messages.NEGOTIATE, messages.negotiate_answer_content(
            call.call_id, self.settings.party_id, sdp=event.sdp, stream_id=event.stream_id,
            lifetime_ms=int(self.settings.timings.prepare_timeout * 1000)))

    def _on_media_state(self, event: MediaStateChanged, now: float, out: list[Action]) -> None:
        call = self._call
        if call is None or call.call_id != event.call_id or call.state not in (CallState.CONNECTING, CallState.CONNECTED):
            return out.append(Ignored(reason=f"media {event.state.value} for {event.call_id}, not a call in progress"))
        if event.state is MediaState.CONNECTED:
            call.disconnected_since = None
            if call.state is CallState.CONNECTING:
                call.connected_at = now
                self._move(CallState.CONNECTED, now, self.settings.timings.max_call_duration)
        elif event.state is MediaState.DISCONNECTED:
            if call.state is CallState.CONNECTED and call.disconnected_since is None:
                call.disconnected_since = now
        else:
            reason = "ice_timeout" if call.connected_at is not None else "ice_failed"
            outcome = Outcome.COMPLETED if call.connected_at is not None else Outcome.FAILED
            self._end(now, out, outcome, reason, _Notify.HANGUP, detail="media connection failed")

    def _on_media_failed(self, event: MediaFailed, now: float, out: list[Action]) -> None:
        call = self._call
        if call is None or call.call_id != event.call_id:
            return self._stale("media failure", event.call_id, out)
        detail = f"media failed: {event.detail}" if event.detail else "media failed"
        reason = "unknown_error" if call.renegotiating_until is not None else "user_media_failed"
        outcome = Outcome.COMPLETED if call.connected_at is not None else Outcome.FAILED
        self._end(now, out, outcome, reason, self._notify_for(call), detail=detail)

    # --- timers --------------------------------------------------------------------------------------------------

    def _call_deadline(self, call: _Call) -> float | None:
        times = [call.deadline, call.renegotiating_until]
        if call.disconnected_since is not None:
            times.append(call.disconnected_since + self.settings.timings.reconnect_grace)
        times = [t for t in times if t is not None]
        return min(times) if times else None

    def _expire(self, now: float, out: list[Action]) -> None:
        call = self._call
        if call is not None:
            due = self._call_deadline(call)
            if due is not None and due <= now:
                self._on_call_timeout(call, now, out)
        if self._result is not None and self._result[1] <= now:
            self._result = None

    def _on_call_timeout(self, call: _Call, now: float, out: list[Action]) -> None:
        if call.renegotiating_until is not None and call.renegotiating_until <= now:
            return self._end(now, out, Outcome.COMPLETED, "unknown_error", _Notify.HANGUP,
                             detail="renegotiation was not answered in time")
        grace = self.settings.timings.reconnect_grace
        if call.disconnected_since is not None and call.disconnected_since + grace <= now:
            return self._end(now, out, Outcome.COMPLETED, "ice_timeout", _Notify.HANGUP,
                             detail="media stayed disconnected")
        match call.state:
            case CallState.PREPARING | CallState.ANSWERING:
                self._end(now, out, Outcome.FAILED, "user_media_failed", self._notify_for(call),
                          detail="local media took too long to prepare")
            case CallState.RINGING:
                self._end(now, out, Outcome.MISSED, "invite_timeout", _Notify.HANGUP, detail="nobody answered")
            case CallState.CONNECTING:
                self._end(now, out, Outcome.FAILED, "ice_failed", _Notify.HANGUP, detail="media did not connect")
            case CallState.CONNECTED:
                self._end(now, out, Outcome.COMPLETED, "user_hangup", _Notify.HANGUP,
                          detail="longest call duration reached")

    # --- received call events ------------------------------------------------------------------------------------

    def _on_call_event(self, event: CallEventReceived, now: float, out: list[Action]) -> None:
        def ignore(reason: str) -> None:
            out.append(Ignored(reason=reason, event_type=str(event.event_type)[:64], sender=str(event.sender)[:255]))

        if event.sender == self.settings.user_id:
            return ignore("our own event (remote echo)")
        if not isinstance(event.event_type, str) or not event.event_type.startswith("m.call."):
            return ignore("not a call event")
        try:
            msg = messages.parse_call_event(event.event_type, event.content)
        except MalformedCallEvent as exc:
            return ignore(f"malformed: {exc}")

        if isinstance(msg, messages.Invite):
            return self._on_invite(msg, event, now, out, ignore)
        if msg.call_id in self._finished:
            return ignore(f"call {msg.call_id} has already ended")
        call = self._call
        if call is None or msg.call_id != call.call_id:
            if isinstance(msg, messages.Candidates) and self._may_hold(event):
                return self._hold_candidates(msg, event.sender)
            return ignore(f"not about the current call ({msg.call_id})")
        if event.sender != self.settings.owner or event.room_id != self.settings.room_id:
            return ignore("not from the owner in the configured room")

        match msg:
            case messages.Candidates():
                self._hold_candidates(msg, event.sender)
                self._flush_candidates(call, out)
            case messages.Answer():
                self._on_answer(call, msg, now, out, ignore)
            case messages.SelectAnswer():
                self._on_select_answer(call, msg, now, out, ignore)
            case messages.Reject():
                self._on_reject(call, msg, now, out, ignore)
            case messages.Hangup():
                self._on_hangup(call, msg, now, out, ignore)
            case messages.Negotiate():
                self._on_negotiate(call, msg, now, out, ignore)
            case _:
                ignore(f"{event.event_type} does not change the call")

    def _on_invite(self, msg: messages.Invite, event: CallEventReceived, now: float, out: list[Action],
                   ignore: Callable[[str], None]) -> None:
        s = self.settings
        if policy.invite_expired(age_ms=event.age_ms, lifetime_ms=msg.lifetime_ms):
            return ignore(f"invite {msg.call_id} has expired")
        if msg.invitee is not None and msg.invitee != s.user_id:
            return ignore(f"invite {msg.call_id} is for {msg.invitee}")
        if msg.call_id in self._finished or (self._call is not None and msg.call_id == self._call.call_id):
            return ignore(f"invite {msg.call_id} was already handled")

        problem = policy.caller_problem(sender=event.sender, room_id=event.room_id, owner=s.owner,
                                        configured_room=s.room_id, room=self.room_problem())
        if problem is not None:
            return self._refuse_invite(msg, event, now, out, "user_hangup", f"refused: {problem}")

        call = self._call
        if call is not None:
            if call.state is CallState.PREPARING:
                # Spec glare, first case: ours was not sent yet, so theirs simply wins.
                self._end(now, out, Outcome.REPLACED, "replaced", _Notify.NOTHING,
                          detail="the owner called while we were preparing our call")
            elif call.state is CallState.RINGING and glare.incoming_wins(call.call_id, msg.call_id):
                self._end(now, out, Outcome.REPLACED, "replaced", _Notify.HANGUP,
                          detail=f"glare: the owner's call {msg.call_id} wins")
            elif call.state is CallState.RINGING:
                # Our call wins; the owner's side drops theirs by the same rule. Tell it, as matrix-js-sdk does.
                self._send(out, messages.HANGUP, messages.hangup_content(
                    msg.call_id, s.party_id, reason="replaced"), room_id=event.room_id)
                self._remember_finished(msg.call_id)
                return ignore(f"glare: our call {call.call_id} wins over {msg.call_id}")
            else:
                return self._refuse_invite(msg, event, now, out, "user_busy", "refused: busy with another call")

        self._call = _Call(call_id=msg.call_id, direction=Direction.INCOMING, state=CallState.IDLE, started_at=now,
                           peer_party=msg.party_id, peer_chosen=True, peer_v1=msg.v1)
        self._result = None
        self._move(CallState.ANSWERING, now, s.timings.prepare_timeout)
        out.append(PrepareAnswer(call_id=msg.call_id, offer_sdp=msg.offer_sdp))

    def _refuse_invite(self, msg: messages.Invite, event: CallEventReceived, now: float, out: list[Action],
                       v0_reason: str, detail: str) -> None:
        """Refuse an invite we will not take: ``m.call.reject`` for v1, ``m.call.hangup`` for v0."""
        self._send_refusal(msg.call_id, msg.v1, v0_reason, out, room_id=event.room_id)
        self._remember_finished(msg.call_id)
        out.append(CallEnded(summary=CallSummary(
            call_id=msg.call_id, direction=Direction.INCOMING, peer=event.sender, outcome=Outcome.REFUSED,
            reason="reject" if msg.v1 else v0_reason, detail=detail, started_at=now, connected_at=None, ended_at=now)))

    def _on_answer(self, call: _Call, msg: messages.Answer, now: float, out: list[Action],
                   ignore: Callable[[str], None]) -> None:
        if call.direction is not Direction.OUTGOING or call.state is not CallState.RINGING:
            return ignore("an answer was already chosen" if call.peer_chosen else "answer to a call we did not place")
        # First answer wins.
        call.peer_party, call.peer_v1, call.peer_chosen = msg.party_id, msg.v1, True
        self._move(CallState.CONNECTING, now, self.settings.timings.connect_timeout)
        out.append(ApplyAnswer(call_id=call.call_id, answer_sdp=msg.answer_sdp))
        call.remote_ready = True
        self._flush_candidates(call, out)
        if msg.v1 and msg.party_id is not None:
            self._send(out, messages.SELECT_ANSWER, messages.select_answer_content(
                call.call_id, self.settings.party_id, selected_party_id=msg.party_id))

    def _on_select_answer(self, call: _Call, msg: messages.SelectAnswer, now: float, out: list[Action],
                          ignore: Callable[[str], None]) -> None:
        if call.direction is not Direction.INCOMING or not self._from_peer(call, msg):
            return ignore("select_answer that does not concern our answer")
        if msg.selected_party_id != self.settings.party_id:
            return self._end(now, out, Outcome.ANSWERED_ELSEWHERE, "answered_elsewhere", _Notify.NOTHING,
                             detail=f"the caller chose party {msg.selected_party_id}")
        ignore("select_answer confirms our answer")

    def _on_reject(self, call: _Call, msg: messages.Reject, now: float, out: list[Action],
                   ignore: Callable[[str], None]) -> None:
        if call.direction is not Direction.OUTGOING or call.state is not CallState.RINGING:
            return ignore("reject after the call was answered")
        if msg.party_id is not None:
            # The caller selects a reject like an answer, so the owner's other devices stop ringing.
            self._send(out, messages.SELECT_ANSWER, messages.select_answer_content(
                call.call_id, self.settings.party_id, selected_party_id=msg.party_id))
        self._end(now, out, Outcome.DECLINED, "reject", _Notify.NOTHING, detail="the owner declined")

    def _on_hangup(self, call: _Call, msg: messages.Hangup, now: float, out: list[Action],
                   ignore: Callable[[str], None]) -> None:
        if not call.peer_chosen:
            # Ringing out: a v1 device hanging up only stops that device (matrix-js-sdk ignores it too); the
            # owner declines with m.call.reject. A v0 peer has no reject, so its hangup is the decline.
            if msg.v1:
                return ignore("hangup from a device that did not answer")
            return self._end(now, out, Outcome.DECLINED, msg.reason, _Notify.NOTHING, detail="the owner declined")
        if not self._from_peer(call, msg):
            return ignore("hangup from a party that is not in this call")
        self._end(now, out, _ended_by_someone(call), msg.reason, _Notify.NOTHING, detail="the owner hung up")

    def _on_negotiate(self, call: _Call, msg: messages.Negotiate, now: float, out: list[Action],
                      ignore: Callable[[str], None]) -> None:
        if call.state not in (CallState.CONNECTING, CallState.CONNECTED) or not call.peer_v1:
            return ignore("negotiate outside a version 1 call in progress")
        if not self._from_peer(call, msg):
            return ignore("negotiate from a party that is not in this call")
        if msg.description_type != "offer":
            return ignore("negotiate answer, but we sent no offer")
        if call.renegotiating_until is not None:
            return ignore("negotiate while the previous one is still being answered")
        call.renegotiating_until = now + self.settings.timings.prepare_timeout
        # An ICE restart brings new candidates: start collecting them again.
        call.remote_candidates_ended = False
        out.append(PrepareNegotiationAnswer(call_id=call.call_id, offer_sdp=msg.sdp))

    # --- candidates ----------------------------------------------------------------------------------------------

    def _may_hold(self, event: CallEventReceived) -> bool:
        """Candidates for an unknown call are kept only from the owner in our room (the invite may follow)."""
        return event.sender == self.settings.owner and event.room_id == self.settings.room_id

    def _hold_candidates(self, msg: messages.Candidates, sender: str) -> None:
        held = self._pending.get(msg.call_id)
        if held is None:
            held = self._pending[msg.call_id] = []
            while len(self._pending) > PENDING_CALLS:
                self._pending.popitem(last=False)
        room = PENDING_PER_CALL - len(held)
        held.extend((sender, msg.party_id, c) for c in msg.candidates[: max(room, 0)])

    def _flush_candidates(self, call: _Call, out: list[Action]) -> None:
        """Pass held candidates of the chosen party on, once the media side has the remote description."""
        if not (call.remote_ready and call.peer_chosen):
            return
        held = self._pending.pop(call.call_id, [])
        chosen: list[IceCandidate] = []
        for sender, party, cand in held:
            if sender != self.settings.owner or party != call.peer_party or call.remote_candidates_ended:
                continue
            chosen.append(cand)
            call.remote_candidates_ended = cand.is_end
        if chosen:
            out.append(AddRemoteCandidates(call_id=call.call_id, candidates=tuple(chosen)))

    # --- ending --------------------------------------------------------------------------------------------------

    def _from_peer(self, call: _Call, msg: messages.Message) -> bool:
        return call.peer_chosen and msg.party_id == call.peer_party

    @staticmethod
    def _notify_for(call: _Call) -> _Notify:
        if call.state is CallState.PREPARING:
            return _Notify.NOTHING
        if call.state is CallState.ANSWERING:
            return _Notify.REFUSE
        return _Notify.HANGUP

    def _end(self, now: float, out: list[Action], outcome: Outcome, reason: str, notify: _Notify, *,
             detail: str) -> None:
        call = self._call
        if call is None:
            raise LocalCallError("no call to end")
        s = self.settings
        if call.state is CallState.PREPARING:
            # The visitor rang, but the call never got to its invite: the picture still goes to the room.
            out.append(PostSnapshot(room_id=s.room_id, reason="ring"))
        if notify is _Notify.HANGUP:
            self._send(out, messages.HANGUP, messages.hangup_content(call.call_id, s.party_id, reason=reason))
        elif notify is _Notify.REFUSE:
            self._send_refusal(call.call_id, call.peer_v1, reason, out)
        out.append(CloseMedia(call_id=call.call_id))
        out.append(CallEnded(summary=CallSummary(
            call_id=call.call_id, direction=call.direction, peer=s.owner, outcome=outcome, reason=reason,
            detail=detail, started_at=call.started_at, connected_at=call.connected_at, ended_at=now)))
        self._move(CallState.IDLE, now, None)
        self._call = None
        self._last_call_ended = now
        self._remember_finished(call.call_id)
        self._result = (OUTCOME_LEDS[outcome], now + s.timings.ended_display)

    def _force_end(self, now: float, out: list[Action], detail: str) -> None:
        """End the call after an internal error, without trusting the state it was left in (no transition
        check), but with everything a normal end has: hangup, media closed, ``CallEnded`` for the last-call record
        and the notices, the error pattern."""
        call, self._call = self._call, None
        if call is None:
            return
        self._send(out, messages.HANGUP, messages.hangup_content(call.call_id, self.settings.party_id,
                                                                 reason="unknown_error"))
        out.append(CloseMedia(call_id=call.call_id))
        out.append(CallEnded(summary=CallSummary(
            call_id=call.call_id, direction=call.direction, peer=self.settings.owner,
            outcome=Outcome.COMPLETED if call.connected_at is not None else Outcome.FAILED, reason="unknown_error",
            detail=detail, started_at=call.started_at, connected_at=call.connected_at, ended_at=now)))
        self._last_call_ended = now
        self._remember_finished(call.call_id)
        self._result = (LedState.ERROR, now + self.settings.timings.ended_display)

    def _send_refusal(self, call_id: str, v1: bool, v0_reason: str, out: list[Action], *,
                      room_id: str | None = None) -> None:
        party = self.settings.party_id
        if v1:
            self._send(out, messages.REJECT, messages.reject_content(call_id, party), room_id=room_id)
        else:
            # Never reject/select_answer/negotiate towards a version 0 peer.
            self._send(out, messages.HANGUP, messages.hangup_content(call_id, party, reason=v0_reason),
                       room_id=room_id)

    def _remember_finished(self, call_id: str) -> None:
        self._finished[call_id] = None
        self._finished.move_to_end(call_id)
        while len(self._finished) > FINISHED_MEMORY:
            self._finished.popitem(last=False)
        self._pending.pop(call_id, None)

    # --- helpers -------------------------------------------------------------------------------------------------

    def _send(self, out: list[Action], event_type: str, content: dict, *, room_id: str | None = None) -> None:
        out.append(SendCallEvent(room_id=room_id or self.settings.room_id, event_type=event_type, content=content))

    def _move(self, new: CallState, now: float, timeout: float | None) -> None:
        call = self._call
        if call is None:
            raise LocalCallError(f"no call to move to {new.value}")
        if new not in TRANSITIONS[call.state]:
            raise LocalCallError(f"a call cannot go from {call.state.value} to {new.value}")
        call.state = new
        call.deadline = None if timeout is None else now + timeout

    def _wanted_led(self) -> LedState:
        if self._call is not None and self._call.state is not CallState.IDLE:
            return CALL_LEDS[self._call.state][self._call.direction]
        if self._result is not None:
            return self._result[0]
        if self._fault is not None:
            return LedState.ERROR
        if not self._online:
            return LedState.OFFLINE
        if self.room_problem() is not None:
            return LedState.ERROR
        return LedState.IDLE

    def _update_leds(self, now: float, out: list[Action]) -> None:
        wanted = self._wanted_led()
        if wanted is not self._shown_led:
            self._shown_led = wanted
            out.append(SetLeds(state=wanted))
