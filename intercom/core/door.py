"""The door: a small coordinator that owns its calls, the front panel's state and the policy.

Theory of operation
-------------------
:meth:`DoorCore.handle` takes one :mod:`event <intercom.core.events>` and the current time and returns the
:mod:`actions <intercom.core.actions>` to carry out, in order. The core owns no timers: it reports the next moment
it wants to be woken at through :meth:`DoorCore.next_deadline`, and every call to ``handle`` first acts on the
deadlines that have passed (so a late :class:`~intercom.core.events.TimerDue` changes nothing).

What a call does is the table in :mod:`intercom.core.call`; this module decides whose input an event is: it
routes each event to a call (or to none), applies the policy (who may call, in which room:
:mod:`~intercom.core.policy`), settles glare between a call and the owner's invite (:mod:`~intercom.core.glare`),
holds candidates for calls not seen yet, runs the room commands and chooses what the LEDs show. Calls are kept by
call ID.

A household (:mod:`~intercom.core.household`) is several residents, each in a room of two with the door. A press
rings every resident of its button who may be rung now, all at once, each in their own room (a *ring group*): the
first to answer gets the call and every other call of the group ends at once (``GROUP_ANSWERED``, with a notice
saying who answered); a resident who declines stops only their own ringing; each call rings out on its own
``ring_timeout``. With one camera and one microphone, one conversation runs at a time: a press on another button
meanwhile posts the picture and a notice to that button's residents, and a resident's call while the door is busy
is refused as busy. Trust (:mod:`~intercom.core.trust`) is per resident: their pins, keys and verdict.

Nothing a peer sends raises: malformed or unwelcome input becomes an :class:`~intercom.core.actions.Ignored` with
the reason. An exception inside the core (a bug) ends the current call through the table's ``INTERNAL_ERROR``
rows and is reported the same way, so the service never stops because of what a peer sent.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping

from . import glare, legacy, messages, notices, policy, rtc, trust
from .actions import (
    Action,
    CallEnded,
    CallSummary,
    CloseMedia,
    IceCandidate,
    Ignored,
    OpenDoor,
    PostSnapshot,
    PressFeedback,
    SendNotice,
    SetLeds,
    TrustUpdated,
)
from .call import HELD_CANDIDATES, Call, CallInput, Details
from .commands import Command, argument, parse_command
from .errors import MalformedCallEvent
from .household import LEGACY, MATRIXRTC, Resident
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
from .settings import CallTimings, CoreSettings
from .states import CALL_LEDS, CallState, Direction, LedState, Outcome

__all__ = ["CallTimings", "CoreSettings", "DoorCore"]

#: How many call IDs of finished calls we remember, to ignore their late events and replays.
FINISHED_MEMORY = 256
#: How many event IDs we remember, to act on each event once (a sync retried, a decryption retried later).
SEEN_EVENTS = 512
#: Bounds on candidates held for calls we have not seen (yet): a hostile peer cannot grow memory.
PENDING_CALLS = 16
#: Refusals sent per minute at most (the rest of a flood of unwelcome invites is ignored without a reply).
REFUSALS_PER_MINUTE = 10
#: How often one session is told why the door refused it (a hostile session cannot flood the room).
REFUSAL_NOTICE_INTERVAL = 300.0

#: What an unencrypted room means, said once in the log and always in ``intercom status``.
UNENCRYPTED_WARNING = (
    "the door's room is not end-to-end encrypted: the homeserver (and its admins) can read every message and "
    "picture, and any session signed in to the owner's account counts as the owner, so it can be answered by the "
    "door and open it. Turn on encryption in the room's settings (it cannot be turned off again), or set "
    "matrix.require_encryption = true to refuse to work without it")

_MEDIA_INPUTS = {MediaState.CONNECTED: CallInput.MEDIA_CONNECTED, MediaState.DISCONNECTED: CallInput.MEDIA_DISCONNECTED,
                 MediaState.FAILED: CallInput.MEDIA_LOST}


@dataclass(slots=True)
class _OpenWindow:
    """The ring that may open the door (see :class:`~intercom.core.commands.CommandSettings`): its calls, the
    residents who may open for it, when it ended (None while a call of it runs) and how often it opened."""

    ring_id: str  #: the first call of the ring (named in the log line of an opening)
    call_ids: set[str]
    residents: frozenset[str]
    ended_at: float | None = None
    openings: int = 0


@dataclass(slots=True)
class _Ring:
    """What the last press did, for the panel, ``intercom status`` and the demo."""

    button: int
    label: str
    rung: tuple[str, ...]  #: residents called, in the order of the button
    quiet: tuple[str, ...] = ()  #: residents in quiet hours (picture and notice only)
    unreachable: dict[str, str] = dataclasses.field(default_factory=dict)  #: resident -> why not rung
    answered_by: str | None = None
    declined: list[str] = dataclasses.field(default_factory=list)
    ringing: set[str] = dataclasses.field(default_factory=set)  #: call IDs still ringing or being prepared
    calls: dict[str, str] = dataclasses.field(default_factory=dict)  #: call ID -> resident


@dataclass(slots=True)
class _Person:
    """One resident as the door knows them now: their room, and trust in their devices."""

    resident: Resident
    room_id: str | None
    waiting: str = ""  #: what the door waits for before it can use their room (a room it made, a join)
    #: Trust in their devices (see :mod:`intercom.core.trust`): the pins, the keys the Matrix side last observed
    #: and the verdict on them (None until it has read them).
    pins: trust.Pins | None = None
    observed: trust.ObservedKeys | None = None
    verdict: trust.Verdict | None = None
    #: How they last called the door (``calls = "auto"`` rings them that way).
    last_technology: str = ""

    @property
    def user_id(self) -> str:
        return self.resident.user_id


#: MatrixRTC memberships the door keeps per resident room (a hostile client cannot grow memory).
RTC_MEMBERS = 32

#: Facts about rooms the door keeps (the residents' rooms, and rooms that may become one).
ROOM_FACTS = 64


class DoorCore:
    """The call logic of one door. See the module docstring for how to drive it."""

    def __init__(self, settings: CoreSettings, *, new_token: Callable[[], str] = glare.random_token,
                 pins: trust.Pins | None | Mapping[str, trust.Pins | None] = None) -> None:
        """``pins``: what the door pinned of the residents' keys before (from its state directory): by user ID, or
        (a household of one) the owner's; None at first use."""
        self.settings = settings
        self._new_token = new_token
        self._wire = legacy.LegacyWire(settings.party_id)
        self._rtc_wire = rtc.RtcWire()
        #: Whether the homeserver offers a MatrixRTC focus.
        self._rtc = False
        #: Live MatrixRTC memberships in the residents' rooms: room ID -> state key -> membership.
        self._rtc_members: dict[str, OrderedDict[str, rtc.Membership]] = {}
        by_user = pins if isinstance(pins, Mapping) else {settings.owner: pins}
        #: The residents, by user ID, in the order of the config.
        self._people: dict[str, _Person] = {
            r.user_id: _Person(r, r.room_id, pins=by_user.get(r.user_id)) for r in settings.residents}
        #: The calls in progress, by call ID (ended calls leave at once).
        self._calls: dict[str, Call] = {}
        self._online = False
        #: What the Matrix side told us about rooms, by room ID.
        self._rooms: OrderedDict[str, policy.RoomFacts] = OrderedDict()
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._seen: OrderedDict[str, None] = OrderedDict()
        #: call_id -> [(party_id, candidate)] for candidates of calls we have not seen (yet).
        self._pending: OrderedDict[str, list[tuple[str | None, IceCandidate]]] = OrderedDict()
        self._result: tuple[LedState, float] | None = None
        self._shown_led: LedState | None = None
        #: The ring that may open the door: while it runs and for ``open_window`` after it ended.
        self._opener: _OpenWindow | None = None
        #: The last press's ring group.
        self._ring: _Ring | None = None
        #: What needs attention on the device, by source (see FaultChanged).
        self._faults: dict[str, str] = {}
        self._turn = False
        #: When each session was last told why it was refused.
        self._told: OrderedDict[str, float] = OrderedDict()
        #: When the last refusals were sent (see REFUSALS_PER_MINUTE).
        self._refusals: deque[float] = deque()

    # --- public view ---------------------------------------------------------------------------------------------

    @property
    def _call(self) -> Call | None:
        """The call the panel shows: the one answered or talking, else the first still ringing."""
        talking = [c for c in self._calls.values() if c.state not in (CallState.PREPARING, CallState.RINGING)]
        return talking[0] if talking else next(iter(self._calls.values()), None)

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
        """What needs the owner's attention on the device (see :class:`FaultChanged`): every source's fault, in
        the order they arose, or None."""
        return "; ".join(self._faults.values()) or None

    @property
    def led(self) -> LedState:
        """What the panel shows now (as last emitted by :class:`SetLeds`)."""
        return self._shown_led if self._shown_led is not None else self._wanted_led()

    def room_problem(self, user_id: str | None = None) -> str | None:
        """Why a resident's room (default: the first resident's) cannot carry a call now, or None."""
        person = self._people.get(user_id or self.settings.owner)
        return self._room_problem(person) if person is not None else f"{user_id} is not a resident"

    def _room_problem(self, person: _Person) -> str | None:
        if person.room_id is None:
            return person.waiting or f"the door has no room with {person.user_id} yet"
        problem = policy.room_problem(self._rooms.get(person.room_id), user_id=self.settings.user_id,
                                      owner=person.user_id, require_encryption=self.settings.require_encryption)
        if problem is not None and person.waiting:
            return f"{person.waiting} ({problem})"
        return problem

    def household_status(self) -> list[dict[str, object]]:
        """Each resident: their room, whether a call can go there, their rights, and the call with them now."""
        calls = {call.peer: call for call in self._calls.values()}
        status = []
        for person in self._people.values():
            r, call = person.resident, calls.get(person.user_id)
            status.append({
                "user_id": r.user_id, "room_id": person.room_id, "room_problem": self._room_problem(person),
                "answer_calls": r.answer_calls, "open_door": r.open_door,
                "quiet_hours": str(r.quiet_hours) if r.quiet_hours else None,
                "calls": r.calls, "rung_by": self.technology(r),
                "call": call.state.value if call is not None else None,
            })
        return status

    def ring_status(self) -> dict[str, object] | None:
        """The last press: which button, who was rung, who answered or declined, who is still ringing."""
        ring = self._ring
        if ring is None:
            return None
        return {"button": ring.button, "label": ring.label, "rung": list(ring.rung), "quiet": list(ring.quiet),
                "not_rung": dict(ring.unreachable), "ringing": sorted(ring.calls[c] for c in ring.ringing),
                "answered_by": ring.answered_by, "declined": list(ring.declined)}

    def trust_status(self, user_id: str | None = None) -> dict[str, object]:
        """What the door trusts of a resident's devices (default: the first resident), for ``intercom status``."""
        person = self._people.get(user_id or self.settings.owner)
        if person is None:
            return {"error": f"{user_id} is not a resident"}
        facts = self._rooms.get(person.room_id) if person.room_id else None
        verdict = person.verdict
        encrypted = None if facts is None else facts.encrypted
        status: dict[str, object] = {
            "room_encrypted": encrypted,
            "owner_keys_read": verdict is not None,
            "trusted_devices": sorted(verdict.trusted) if verdict else [],
            "untrusted_devices": dict(sorted(verdict.untrusted.items())) if verdict else {},
            "identity_problem": verdict.identity_problem if verdict else (person.pins.identity_problem
                                                                          if person.pins else None),
            "identity_pending": bool(verdict and verdict.identity_pending),
        }
        if encrypted is False:
            status["warning"] = UNENCRYPTED_WARNING
        return status

    def next_deadline(self) -> float | None:
        """When the core wants :class:`TimerDue` (loop time), or None."""
        times = [call.next_deadline() for call in self._calls.values()]
        times.append(self._result[1] if self._result is not None else None)
        times = [t for t in times if t is not None]
        return min(times) if times else None

    # --- entry point ---------------------------------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Action]:
        """Feed one event; returns the actions to carry out, in order. Never raises."""
        out: list[Action] = []
        try:
            self._expire(now, out)
            self._dispatch(event, now, out)
            self._update_leds(now, out)
        except Exception as exc:  # a bug in the core: end the calls through the table, keep the service
            what = f"internal error handling {type(event).__name__}"
            out.append(Ignored(reason=f"{what}: {exc!r}"))
            for call in list(self._calls.values()):
                self._end_after_error(call, now, out, what)
            try:
                self._update_leds(now, out)
            except Exception as again:  # the panel state itself is broken: say so, keep the service
                out.append(Ignored(reason=f"internal error choosing the LEDs: {again!r}"))
        return out

    def _dispatch(self, event: Event, now: float, out: list[Action]) -> None:
        match event:
            case ButtonPressed():
                self._on_press(event, now, out)
            case CallEventReceived():
                self._on_call_event(event, now, out)
            case RtcMembershipChanged():
                self._on_rtc_member(event, now, out)
            case RtcDeclineReceived():
                self._on_rtc_decline(event, now, out)
            case RtcAvailabilityChanged(available=available):
                self._rtc = available
            case TextMessageReceived():
                self._on_text(event, now, out)
            case RoomMembersChanged():
                self._on_members(event, now, out)
            case ResidentRoomChanged():
                self._on_resident_room(event, now, out)
            case OwnerKeysObserved(keys=keys, user_id=user_id):
                person = self._people.get(user_id or self.settings.owner)
                if person is None:
                    out.append(Ignored(reason=f"keys of {user_id[:255]}, who is not a resident"))
                else:
                    self._on_keys(person, keys, now, out)
            case TrustRequested(device_id=device_id, identity=identity, user_id=user_id):
                self.trust_on_door(device_id, identity, user_id, now, out)
            case HomeserverConnectionChanged(online=online):
                self._online = online
            case FaultChanged(fault=None, source=source):
                self._faults.pop(source, None)
            case FaultChanged(fault=fault, source=source):
                self._faults[source] = fault
            case TurnAvailabilityChanged(available=available):
                self._turn = available
                for call in self._calls.values():
                    call.turn = available
            case LocalOfferReady() | LocalAnswerReady():
                self._on_description_ready(event, now, out)
            case NegotiationAnswerReady():
                self._to_call(event.call_id, CallInput.NEGOTIATION_ANSWER_READY, now, out,
                              Details(sdp=event.sdp, stream_id=event.stream_id))
            case LocalCandidatesGathered():
                self._to_call(event.call_id, CallInput.LOCAL_CANDIDATES, now, out,
                              Details(local=event.candidates, complete=event.complete))
            case MediaStateChanged():
                self._on_media_state(event, now, out)
            case MediaFailed():
                detail = f"media failed: {event.detail}" if event.detail else "media failed"
                self._to_call(event.call_id, CallInput.MEDIA_ERROR, now, out, Details(detail=detail),
                              close_unknown=True)
            case TimerDue():
                pass  # _expire already acted on everything due
            case HangupRequested(reason=reason):
                self._on_local_hangup(reason, now, out)
            case _:
                out.append(Ignored(reason=f"unknown input {type(event).__name__}"))

    # --- calls ---------------------------------------------------------------------------------------------------

    def _new_call(self, call_id: str, direction: Direction, now: float, person: _Person, *,
                  technology: str = LEGACY, **peer: object) -> Call:
        s = self.settings
        assert person.room_id is not None  # only a resident whose room can carry a call is called or answered
        wire = self._rtc_wire if technology == MATRIXRTC else self._wire
        call = Call(call_id=call_id, direction=direction, peer=person.user_id, room_id=person.room_id,
                    wire=wire, timings=s.timings, started_at=now, turn=self._turn, **peer)
        self._calls[call_id] = call
        self._result = None
        return call

    def _step(self, call: Call, what: CallInput, now: float, out: list[Action], details: Details = Details()) -> None:
        """One input to one call, through its table; a call that ended leaves the door. The first answer to a
        ring group ends the group's other calls (never two conversations)."""
        before = call.state
        out.extend(call.step(what, now, details))
        if call.state is CallState.ENDED:
            self._leave(call, now)
        elif before is CallState.RINGING and call.state is not CallState.RINGING:
            ring = self._ring
            if ring is not None and call.call_id in ring.calls:
                ring.answered_by = call.peer
                ring.ringing.discard(call.call_id)
            self._end_others(call, call.peer, now, out)

    def _end_others(self, keep: Call, by: str, now: float, out: list[Action]) -> None:
        """``by`` took the ring (answered it, or called the door): every other call stops ringing."""
        for other in list(self._calls.values()):
            if other is not keep:
                self._step(other, CallInput.GROUP_ANSWERED, now, out,
                           Details(by=by, detail=f"{by} took the ring"))

    def _leave(self, call: Call, now: float) -> None:
        self._calls.pop(call.call_id, None)
        opener = self._opener
        if opener is not None and call.call_id in opener.call_ids:
            opener.call_ids.discard(call.call_id)
            if not opener.call_ids:
                opener.ended_at = now
        ring = self._ring
        if ring is not None and call.call_id in ring.calls:
            ring.ringing.discard(call.call_id)
            if call.summary is not None and call.summary.outcome is Outcome.DECLINED:
                ring.declined.append(call.peer)
        self._remember_finished(call.call_id)
        self._result = (call.result_led or LedState.ERROR, now + self.settings.timings.ended_display)

    def _to_call(self, call_id: str, what: CallInput, now: float, out: list[Action], details: Details = Details(),
                 *, close_unknown: bool = False) -> None:
        """A media report about ``call_id``; about a call we no longer have, it is ignored (and with
        ``close_unknown``, closed again: the media side may have finished building it after we asked to close it)."""
        call = self._calls.get(call_id)
        if call is not None:
            return self._step(call, what, now, out, details)
        out.extend(Call.refusal(what, call_id))
        if close_unknown:
            out.append(CloseMedia(call_id=call_id))

    def _end_after_error(self, call: Call, now: float, out: list[Action], what: str) -> None:
        try:
            self._step(call, CallInput.INTERNAL_ERROR, now, out, Details(detail=what))
        except Exception as exc:  # the table's own end failed: drop the call, but still say that it ended
            out.append(Ignored(reason=f"internal error ending {call.call_id}: {exc!r}"))
            out.append(CloseMedia(call_id=call.call_id))
            out.append(CallEnded(summary=CallSummary(
                call_id=call.call_id, direction=call.direction, peer=call.peer, outcome=Outcome.FAILED,
                reason="unknown_error", detail=what, started_at=call.started_at, connected_at=call.connected_at,
                ended_at=now)))
            call.state = CallState.ENDED
            self._leave(call, now)

    # --- local inputs --------------------------------------------------------------------------------------------

    def _on_press(self, event: ButtonPressed, now: float, out: list[Action]) -> None:
        buttons = self.settings.buttons
        if not isinstance(event.button, int) or not 0 <= event.button < len(buttons):
            out.append(PressFeedback(accepted=False, reason=f"no button {event.button!r} is configured"))
            return out.append(Ignored(reason=f"press of unknown button {event.button!r}"))
        button = buttons[event.button]
        people = [self._people[user_id] for user_id in button.residents]
        usable = [p for p in people if self._room_problem(p) is None]
        if self._calls:
            ring = self._ring
            if ring is not None and ring.button == event.button and not ring.calls.keys().isdisjoint(self._calls):
                # This button's ring is ringing or talking already: acknowledge the press, start nothing.
                return out.append(PressFeedback(accepted=True, reason=f"a call is already {self.state.value}"))
            # One camera, one microphone: this button's residents who are not in the call get the picture and a
            # notice (another button's visitor, or a visitor while a resident looks at the door).
            in_call = {c.peer for c in self._calls.values()}
            told = [p for p in usable if p.user_id not in in_call]
            out.append(PressFeedback(accepted=True, reason=f"a call is already {self.state.value}; told "
                                                           f"{len(told)} resident(s) of the ring"))
            ring_id = f"busy-{now:.6f}"
            for person in told:
                self._ring_picture(person, button.name, ring_id, out)
                out.append(notices.busy_ring(person.room_id, button.name))
            return
        if not self._online:
            out.append(PressFeedback(accepted=False, reason="the homeserver cannot be reached"))
            return out.append(Ignored(reason="press not turned into a call: the homeserver cannot be reached"))
        unreachable = {p.user_id: self._room_problem(p) or "" for p in people if p not in usable}
        quiet = [p for p in usable if p.resident.quiet_at(event.minute_of_day)]
        rung = [p for p in usable if p not in quiet]
        ring = self._ring = _Ring(button=event.button, label=button.name, rung=tuple(p.user_id for p in rung),
                                  quiet=tuple(p.user_id for p in quiet), unreachable=unreachable)
        if not usable:
            problem = "; ".join(unreachable.values()) or "the button rings nobody"
            out.append(PressFeedback(accepted=False, reason=problem))
            return out.append(Ignored(reason=f"press not turned into a call: {problem}"))
        calls = [self._new_call(glare.new_call_id(self._new_token()), Direction.OUTGOING, now, p, label=button.name,
                                technology=self.technology(p.resident))
                 for p in rung]
        # Every picture of this ring is the same still: named after its first call (or a token of its own).
        ring_id = calls[0].call_id if calls else glare.new_call_id(self._new_token())
        for person in quiet:
            self._ring_picture(person, button.name, ring_id, out)
            out.append(notices.quiet(person.room_id, button.name))
        openers = frozenset(p.user_id for p in usable if p.resident.open_door)
        if not calls:
            out.append(PressFeedback(accepted=True, reason="quiet hours: pictures posted, nobody called"))
            self._opener = _OpenWindow("", set(), openers, ended_at=now)
            self._result = (LedState.MISSED, now + self.settings.timings.ended_display)
            return
        out.append(PressFeedback(accepted=True))
        for call in calls:
            call.ring_id = ring_id
        ring.calls = {c.call_id: c.peer for c in calls}
        ring.ringing = set(ring.calls)
        self._opener = _OpenWindow(calls[0].call_id, set(ring.calls), openers)
        for call in calls:
            if call.call_id in self._calls:  # (an earlier one cannot end the others before they start: defensive)
                self._step(call, CallInput.PLACE, now, out)

    def _ring_picture(self, person: _Person, label: str, ring_id: str, out: list[Action]) -> None:
        assert person.room_id is not None
        out.append(PostSnapshot(room_id=person.room_id, reason="ring", label=label, mention=person.user_id,
                                ring_id=ring_id))

    def _on_local_hangup(self, reason: str, now: float, out: list[Action]) -> None:
        if not self._calls:
            out.append(Ignored(reason="hangup requested with no call"))
        for call in list(self._calls.values()):
            self._step(call, CallInput.LOCAL_HANGUP, now, out, Details(reason=reason))

    def _on_members(self, event: RoomMembersChanged, now: float, out: list[Action]) -> None:
        self._rooms[event.room_id] = policy.RoomFacts(joined=frozenset(event.joined), join_rule=event.join_rule,
                                                      encrypted=bool(event.encrypted),
                                                      rtc_allowed=bool(event.rtc_allowed))
        self._rooms.move_to_end(event.room_id)
        self._forget_rooms()
        self._check_calls_in(event.room_id, now, out)

    def _on_resident_room(self, event: ResidentRoomChanged, now: float, out: list[Action]) -> None:
        person = self._people.get(event.user_id)
        if person is None:
            return out.append(Ignored(reason=f"a room for {str(event.user_id)[:255]}, who is not a resident"))
        old = person.room_id
        person.room_id, person.waiting = event.room_id, str(event.waiting)[:300]
        if old is not None and old != event.room_id:
            for call in [c for c in self._calls.values() if c.room_id == old]:
                self._step(call, CallInput.ROOM_UNUSABLE, now, out,
                           Details(detail=f"the door no longer uses the room {old} with {person.user_id}"))
        if event.room_id is not None:
            self._check_calls_in(event.room_id, now, out)

    def _check_calls_in(self, room_id: str, now: float, out: list[Action]) -> None:
        """End the calls in a room that can no longer carry them (a third member joined, the resident left)."""
        for call in [c for c in self._calls.values() if c.room_id == room_id]:
            person = self._people.get(call.peer)
            problem = self._room_problem(person) if person is not None else "not a resident"
            if problem is not None:
                self._step(call, CallInput.ROOM_UNUSABLE, now, out, Details(detail=problem))

    def _forget_rooms(self) -> None:
        """Keep the facts of every resident's room, and of at most ROOM_FACTS others."""
        ours = {p.room_id for p in self._people.values()}
        others = [room for room in self._rooms if room not in ours]
        for room in others[: max(len(others) - ROOM_FACTS, 0)]:
            del self._rooms[room]

    def _resident_in_room(self, sender: str, room_id: str) -> _Person | None:
        """The resident who sent this in their own room, or None."""
        person = self._people.get(sender)
        return person if person is not None and person.room_id == room_id else None

    def _on_text(self, event: TextMessageReceived, now: float, out: list[Action]) -> None:
        cmds = self.settings.commands
        command = None if event.sender == self.settings.user_id else parse_command(event.body, cmds)
        if command is None:
            return
        if self._seen_before(event.event_id):
            return out.append(Ignored(reason=f"{command.value} command was handled already",
                                      event_type="m.room.message", sender=str(event.sender)[:255]))
        person = self._resident_in_room(event.sender, event.room_id)
        if person is None:
            return out.append(Ignored(reason=f"{command.value} command not from a resident in their room",
                                      event_type="m.room.message", sender=str(event.sender)[:255]))
        if event.age_ms is None or event.age_ms > cmds.max_age * 1000:
            return out.append(Ignored(reason=f"{command.value} command is too old to act on (or of unknown age)",
                                      event_type="m.room.message", sender=event.sender))
        room = event.room_id
        problem = self._room_problem(person)
        if problem is not None:  # the camera's picture goes only where a call may go: the door's private room
            return out.append(Ignored(reason=f"{command.value} command refused: {problem}",
                                      event_type="m.room.message", sender=event.sender))
        problem = self._device_problem(person, event)
        if problem is not None:
            if not event.encrypted:
                out.append(notices.unencrypted_command(room, str(event.body).split()[0][:32]))
            else:
                self._tell_refused(person, event.device_id, problem, now, out)
            return out.append(Ignored(reason=f"{command.value} command refused: {problem}",
                                      event_type="m.room.message", sender=event.sender))
        if command is Command.SNAPSHOT:
            return out.append(PostSnapshot(room_id=room, reason="request", mention=person.user_id))
        if command is Command.TRUST:
            return self._trust_from_room(person, argument(event.body), event.device_id, now, out)
        if not person.resident.open_door:
            out.append(SendNotice(room_id=room, text=(
                "Not opened: you may see and talk to the door, but not open it (ask whoever set up the door to "
                "give you the open_door right).")))
            return out.append(Ignored(reason="open command from a resident without the open_door right",
                                      event_type="m.room.message", sender=event.sender))
        window = self._opener
        if (window is None or person.user_id not in window.residents
                or (window.ended_at is not None and now - window.ended_at > cmds.open_window)):
            out.append(SendNotice(room_id=room, text=(
                "Not opened: the door opens only during a call from the door (someone rang for you) or within "
                f"{cmds.open_window:g} s after one.")))
            return out.append(Ignored(reason="open command without a visitor's ring", event_type="m.room.message",
                                      sender=event.sender))
        if window.openings >= cmds.openings_per_ring:
            out.append(SendNotice(room_id=room, text=(
                f"Not opened: the door was already opened {window.openings} times for this ring.")))
            return out.append(Ignored(reason="open command over the limit of openings per ring",
                                      event_type="m.room.message", sender=event.sender))
        window.openings += 1
        out.append(OpenDoor(seconds=cmds.relay_pulse, by=event.sender, call_id=window.ring_id or None))
        out.append(SendNotice(room_id=room, text=f"Door opened for {cmds.relay_pulse:g} s."))

    # --- media inputs --------------------------------------------------------------------------------------------

    def _on_description_ready(self, event: LocalOfferReady | LocalAnswerReady, now: float, out: list[Action]) -> None:
        what = CallInput.OFFER_READY if isinstance(event, LocalOfferReady) else CallInput.ANSWER_READY
        self._to_call(event.call_id, what, now, out,
                      Details(sdp=event.sdp, stream_id=event.stream_id, complete=event.candidates_complete),
                      close_unknown=True)
        call = self._calls.get(event.call_id)
        if call is not None and call.wire is self._rtc_wire and call.state is CallState.RINGING:
            # The resident may have joined the room's call already (before our ring went out): that answers it.
            for key, member in self._rtc_members.get(call.room_id, {}).items():
                if member.user_id == call.peer and self._rtc_device_problem(self._people[call.peer],
                                                                            member.device_id) is None:
                    return self._step(call, CallInput.ANSWER, now, out,
                                      Details(party=key, detail=f"{member.device_id} was in the call already"))

    def _on_media_state(self, event: MediaStateChanged, now: float, out: list[Action]) -> None:
        self._to_call(event.call_id, _MEDIA_INPUTS[event.state], now, out)

    # --- timers --------------------------------------------------------------------------------------------------

    def _expire(self, now: float, out: list[Action]) -> None:
        for call in list(self._calls.values()):
            due = call.due(now)
            if due is not None:
                self._step(call, due, now, out)
        if self._result is not None and self._result[1] <= now:
            self._result = None

    # --- received call events ------------------------------------------------------------------------------------

    def _on_call_event(self, event: CallEventReceived, now: float, out: list[Action]) -> None:
        logged = Details(event_type=str(event.event_type)[:64], sender=str(event.sender)[:255])

        def ignore(reason: str) -> None:
            out.append(Ignored(reason=reason, event_type=logged.event_type, sender=logged.sender))

        if event.sender == self.settings.user_id:
            return ignore("our own event (remote echo)")
        if self._seen_before(event.event_id):
            return ignore(f"event {str(event.event_id)[:80]} was handled already")
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
        call = self._calls.get(msg.call_id)
        if call is None:
            if isinstance(msg, messages.Candidates) and self._may_hold(event):
                return self._hold_pending(msg)
            if isinstance(msg, (messages.Hangup, messages.Reject)) and self._may_hold(event):
                # The end of a call whose invite has not arrived (yet): when it does, it is a dead call.
                self._remember_finished(msg.call_id)
                return ignore(f"call {msg.call_id} ended before its invite arrived; its invite will be ignored")
            return ignore(f"not about a current call ({msg.call_id})")
        if event.sender != call.peer or event.room_id != call.room_id:
            return ignore("not from the call's resident in their room")
        problem = self._device_problem(self._people[call.peer], event)
        if problem is not None:
            return ignore(f"not from a session the door trusts: {problem}")
        if (isinstance(msg, messages.Negotiate) and msg.lifetime_ms is not None and event.age_ms is not None
                and event.age_ms >= msg.lifetime_ms):
            return ignore(f"negotiate is older ({event.age_ms} ms) than its lifetime ({msg.lifetime_ms} ms)")
        found = legacy.classify(call, msg, party_id=self.settings.party_id)
        if isinstance(found, str):
            return ignore(found)
        what, details = found
        self._step(call, what, now, out, dataclasses.replace(
            details, event_type=logged.event_type, sender=logged.sender))

    def _on_invite(self, msg: messages.Invite, event: CallEventReceived, now: float, out: list[Action],
                   ignore: Callable[[str], None]) -> None:
        s = self.settings
        if policy.invite_expired(age_ms=event.age_ms, lifetime_ms=msg.lifetime_ms):
            return ignore(f"invite {msg.call_id} has expired" if event.age_ms is not None
                          else f"invite {msg.call_id} has no age, so it may be a replay: treated as expired")
        if msg.invitee is not None and msg.invitee != s.user_id:
            return ignore(f"invite {msg.call_id} is for {msg.invitee}")
        if msg.call_id in self._finished or msg.call_id in self._calls:
            return ignore(f"invite {msg.call_id} was already handled")
        person = self._people.get(event.sender)
        ours = any(p.room_id == event.room_id for p in self._people.values())
        if (person is None and not ours and msg.invitee != s.user_id
                and (event.room_members is None or event.room_members > 2)):
            # A call in some other room of several people, for whoever is there: not ours to answer, nor to
            # refuse (a reject there would end it for the one it was meant for). In a room of two, the door is
            # the only one it can be for: it is refused so the caller's phone stops ringing.
            return ignore(f"invite {msg.call_id} in another room, not for the door")

        problem = policy.caller_problem(sender=event.sender, room_id=event.room_id, owner=s.owner,
                                        configured_room=person.room_id if person else None,
                                        room=self._room_problem(person) if person else None,
                                        resident=person is not None)
        if problem is not None:
            return self._refuse_invite(msg, event, now, out, "user_hangup", f"refused: {problem}")
        assert person is not None
        problem = self._device_problem(person, event)
        if problem is not None:
            self._tell_refused(person, event.device_id if event.encrypted else None, problem, now, out)
            return self._refuse_invite(msg, event, now, out, "user_hangup", f"refused: {problem}")

        crossing = next((c for c in self._calls.values() if c.peer == person.user_id), None)
        if crossing is not None:
            # Glare with our call to this resident, or busy: the table of that call says which.
            what = (CallInput.RIVAL_WINS if glare.incoming_wins(crossing.call_id, msg.call_id)
                    else CallInput.RIVAL_LOSES)
            if not crossing.takes(what):
                return self._refuse_invite(msg, event, now, out, "user_busy", "refused: busy with another call")
            self._step(crossing, what, now, out, Details(detail=f"glare: the resident's call {msg.call_id} wins",
                                                         rival_call_id=msg.call_id, v1=msg.v1))
            if crossing.state is not CallState.ENDED:
                self._remember_finished(msg.call_id)
                return ignore(f"glare: our call {crossing.call_id} wins over {msg.call_id}")
            # Their call replaces ours: it takes the ring, the group's other calls stop.
            ring = self._ring
            if ring is not None and crossing.call_id in ring.calls:
                ring.answered_by = person.user_id
            self._end_others(crossing, person.user_id, now, out)
        elif self._calls:
            return self._refuse_invite(msg, event, now, out, "user_busy", "refused: busy with another call")
        elif not person.resident.answer_calls:
            return self._refuse_invite(msg, event, now, out, "user_hangup", (
                f"refused: the door does not answer calls of {person.user_id} (answer_calls is off for them)"))

        person.last_technology = LEGACY
        call = self._new_call(msg.call_id, Direction.INCOMING, now, person, peer_party=msg.party_id,
                              peer_chosen=True, peer_v1=msg.v1, held=self._pending.pop(msg.call_id, []))
        if s.commands.open_after_owner_call and person.resident.open_door:
            self._opener = _OpenWindow(call.call_id, {call.call_id}, frozenset({person.user_id}))
        self._step(call, CallInput.TAKE, now, out, Details(sdp=msg.offer_sdp))
        # No answer may go out after the caller gave up: the preparation must finish within the invite's life.
        prepare = call.timers.get(CallInput.PREPARE_TIMEOUT)
        if prepare is not None and event.age_ms is not None:
            live_until = now + max(0, msg.lifetime_ms - event.age_ms - policy.RING_GRACE_MS) / 1000
            call.timers[CallInput.PREPARE_TIMEOUT] = min(prepare, live_until)

    def _refuse_invite(self, msg: messages.Invite, event: CallEventReceived, now: float, out: list[Action],
                       v0_reason: str, detail: str) -> None:
        """Refuse an invite we will not take: ``m.call.reject`` for v1, ``m.call.hangup`` for v0. At most
        REFUSALS_PER_MINUTE are sent: a flood of hostile invites gets no reply beyond that, so its replies never
        queue in front of a real ring."""
        self._remember_finished(msg.call_id)
        while self._refusals and now - self._refusals[0] >= 60.0:
            self._refusals.popleft()
        if len(self._refusals) >= REFUSALS_PER_MINUTE:
            return out.append(Ignored(reason=f"invite {msg.call_id} {detail}; not replied to (over "
                                             f"{REFUSALS_PER_MINUTE} refusals a minute)", event_type=messages.INVITE,
                                      sender=str(event.sender)[:255]))
        self._refusals.append(now)
        out.append(legacy.refusal(msg.call_id, self.settings.party_id, v1=msg.v1, v0_reason=v0_reason,
                                  room_id=event.room_id))
        out.append(CallEnded(summary=CallSummary(
            call_id=msg.call_id, direction=Direction.INCOMING, peer=event.sender, outcome=Outcome.REFUSED,
            reason="reject" if msg.v1 else v0_reason, detail=detail, started_at=now, connected_at=None, ended_at=now)))

    # --- MatrixRTC (Element Call) ----------------------------------------------------------------------------------

    def technology(self, resident: Resident) -> str:
        """How a press rings ``resident`` now (see :attr:`Resident.calls`)."""
        if resident.calls != "auto":
            return resident.calls
        person = self._people.get(resident.user_id)
        if person is not None and person.last_technology:
            return person.last_technology
        room = self._rooms.get(person.room_id) if person is not None and person.room_id else None
        if room is not None and not room.rtc_allowed:
            return LEGACY  # the door may not join calls there (power levels): ring the way it can
        return MATRIXRTC if self._rtc else LEGACY

    def _on_rtc_member(self, event: RtcMembershipChanged, now: float, out: list[Action]) -> None:
        sender = str(event.sender)[:255]

        def ignore(reason: str) -> None:
            out.append(Ignored(reason=reason, event_type=rtc.MEMBER, sender=sender))

        if event.sender == self.settings.user_id:
            return ignore("our own membership")
        if self._seen_before(event.event_id):
            return ignore(f"event {str(event.event_id)[:80]} was handled already")
        person = self._people.get(event.sender) if isinstance(event.sender, str) else None
        if person is None or person.room_id is None or person.room_id != event.room_id:
            # A stranger's call, or a resident's elsewhere: never joined.
            return ignore("a call membership of someone who is not a resident, or not in their room with the door")
        try:
            found = rtc.parse_membership(event.state_key, event.sender, event.content, age_ms=event.age_ms)
        except MalformedCallEvent as exc:
            return ignore(f"malformed: {exc}")
        members = self._rtc_members.setdefault(person.room_id, OrderedDict())
        was_member = event.state_key in members
        member = found if isinstance(found, rtc.Membership) else None
        if member is not None:
            members[event.state_key] = member
            while len(members) > RTC_MEMBERS:
                members.popitem(last=False)
        elif found == "left":
            members.pop(event.state_key, None)
        call = next((c for c in self._calls.values() if c.peer == person.user_id), None)
        if call is not None and call.wire is self._rtc_wire:
            if member is None and found != "left":
                return ignore(found)
            if member is not None:
                problem = self._rtc_device_problem(person, member.device_id)
                if problem is not None:
                    self._tell_refused(person, member.device_id, problem, now, out)
                    return ignore(f"not a session the door trusts: {problem}")
            moved = rtc.membership_input(call, member, event.state_key)
            if isinstance(moved, str):
                return ignore(moved)
            what, details = moved
            return self._step(call, what, now, out, dataclasses.replace(details, event_type=rtc.MEMBER,
                                                                        sender=sender))
        if member is None:
            return ignore(found)
        if was_member:
            return ignore(f"{member.device_id} was in the call already (the door does not join it again)")
        self._take_rtc_call(person, member, event, now, out, ignore)

    def _take_rtc_call(self, person: _Person, member: rtc.Membership, event: RtcMembershipChanged, now: float,
                       out: list[Action], ignore: Callable[[str], None]) -> None:
        """A resident started (or joined) the call of their room: the door joins when it may answer them."""
        assert person.room_id is not None
        lifetime_ms = int(self.settings.timings.invite_lifetime * 1000)
        if event.age_ms is not None and event.age_ms >= lifetime_ms:
            return ignore(f"membership is older ({event.age_ms} ms) than a call invite lives; not joined")

        def refuse(why: str) -> None:
            while self._refusals and now - self._refusals[0] >= 60.0:
                self._refusals.popleft()
            if len(self._refusals) >= REFUSALS_PER_MINUTE:
                return ignore(f"not joined: {why}; not told (over {REFUSALS_PER_MINUTE} refusals a minute)")
            self._refusals.append(now)
            assert person.room_id is not None
            out.append(notices.rtc_not_joined(person.room_id, why))
            ignore(f"not joined: {why}")

        problem = self._room_problem(person)
        if problem is not None:
            return ignore(f"not joined: {problem}")
        problem = self._rtc_device_problem(person, member.device_id)
        if problem is not None:
            self._tell_refused(person, member.device_id, problem, now, out)
            return ignore(f"not joined: {problem}")
        crossing = next((c for c in self._calls.values() if c.peer == person.user_id), None)
        if crossing is not None:
            # Our legacy call to them is still ringing: their own call replaces it.
            if not crossing.takes(CallInput.RIVAL_WINS):
                return refuse("the door is busy with another call")
            self._step(crossing, CallInput.RIVAL_WINS, now, out,
                       Details(detail=f"{person.user_id} started a call in the room", v1=True))
            ring = self._ring
            if ring is not None and crossing.call_id in ring.calls:
                ring.answered_by = person.user_id
            self._end_others(crossing, person.user_id, now, out)
        elif self._calls:
            return refuse("the door is busy with another call")
        elif not person.resident.answer_calls:
            return refuse(f"the door does not answer calls of {person.user_id} (answer_calls is off for them)")
        person.last_technology = MATRIXRTC
        call = self._new_call(f"rtc-{self._new_token()}", Direction.INCOMING, now, person, technology=MATRIXRTC,
                              peer_party=member.state_key, peer_chosen=True, focus=member.focus_url)
        s = self.settings
        if s.commands.open_after_owner_call and person.resident.open_door:
            self._opener = _OpenWindow(call.call_id, {call.call_id}, frozenset({person.user_id}))
        self._step(call, CallInput.TAKE, now, out, Details(detail=f"{member.device_id} started a call"))

    def _on_rtc_decline(self, event: RtcDeclineReceived, now: float, out: list[Action]) -> None:
        sender = str(event.sender)[:255]

        def ignore(reason: str) -> None:
            out.append(Ignored(reason=reason, event_type=rtc.DECLINE, sender=sender))

        if self._seen_before(event.event_id):
            return ignore(f"event {str(event.event_id)[:80]} was handled already")
        call = next((c for c in self._calls.values()
                     if c.peer == event.sender and c.room_id == event.room_id and c.wire is self._rtc_wire), None)
        if call is None:
            return ignore("not about a current MatrixRTC call")
        problem = self._device_problem(self._people[call.peer], event)
        if problem is not None:
            return ignore(f"not from a session the door trusts: {problem}")
        moved = rtc.decline_input(call)
        if isinstance(moved, str):
            return ignore(moved)
        what, details = moved
        self._step(call, what, now, out, dataclasses.replace(details, event_type=rtc.DECLINE, sender=sender))

    # --- trust in the residents' devices -------------------------------------------------------------------------

    def _device_problem(self, person: _Person,
                        event: CallEventReceived | TextMessageReceived | RtcDeclineReceived) -> str | None:
        """Why an event from a resident in their room does not count as theirs, or None.

        In an encrypted room only encrypted events from a device the door trusts count (see
        :mod:`intercom.core.trust`); in an unencrypted room there is no device to go by, and every event of the
        resident's account counts (``intercom status`` warns, and ``require_encryption`` refuses such a room)."""
        room = self._rooms.get(person.room_id) if person.room_id else None
        if room is None or not room.encrypted:
            return None
        if not event.encrypted:
            return "it was not encrypted, in an encrypted room"
        return self._session_problem(person, event.device_id)

    def _session_problem(self, person: _Person, device_id: str | None) -> str | None:
        """Why ``device_id`` of the resident is not trusted, or None."""
        verdict = person.verdict
        if verdict is None:
            return "the door has not read your device keys yet"
        if verdict.identity_problem is not None:
            return f"{verdict.identity_problem} and this is not confirmed on the door yet"
        if device_id is None:
            return "the session that sent it could not be identified"
        if device_id not in verdict.trusted:
            return f"the door does not trust the session {str(device_id)[:64]}"
        return None

    def _rtc_device_problem(self, person: _Person, device_id: str) -> str | None:
        """Why a MatrixRTC membership of ``device_id`` does not count as the resident's, or None: in an encrypted
        room only a trusted device's does (the media keys then come Olm-encrypted from that very device)."""
        room = self._rooms.get(person.room_id) if person.room_id else None
        if room is None or not room.encrypted:
            return None
        return self._session_problem(person, device_id)

    def _tell_refused(self, person: _Person, device_id: str | None, why: str, now: float, out: list[Action]) -> None:
        """Tell a resident why a session of theirs was refused: at most every REFUSAL_NOTICE_INTERVAL per session."""
        key = f"{person.user_id} {device_id or ''}"
        last = self._told.get(key)
        if last is not None and now - last < REFUSAL_NOTICE_INTERVAL:
            return
        self._told[key] = now
        self._told.move_to_end(key)
        while len(self._told) > PENDING_CALLS:
            self._told.popitem(last=False)
        verdict = person.verdict
        name = verdict.untrusted.get(device_id, "") if verdict and device_id else ""
        known = device_id is not None and trust.DEVICE_ID.fullmatch(device_id) is not None
        if person.room_id is not None:
            out.append(notices.call_refused_untrusted(person.room_id, device_id if known else "", name, why))

    def _on_keys(self, person: _Person, observed: trust.ObservedKeys, now: float, out: list[Action]) -> None:
        self._apply_verdict(person, trust.assess(person.pins, observed), observed, now, out,
                            f"the keys of {person.user_id} were read")

    def _apply_verdict(self, person: _Person, verdict: trust.Verdict, observed: trust.ObservedKeys, now: float,
                       out: list[Action], reason: str) -> None:
        before, old_pins, old_observed = person.verdict, person.pins, person.observed
        if verdict.pins is None:  # no keys at all yet: nothing is trusted, nothing pinned
            person.verdict, person.observed = verdict, observed
            return
        person.verdict, person.pins, person.observed = verdict, verdict.pins, observed
        room = person.room_id
        problem = verdict.identity_problem
        if problem is not None and (old_pins is None or old_pins.identity_problem != problem or before is None):
            if room is not None:
                out.append(notices.identity_changed(room, problem))
            for call in [c for c in self._calls.values() if c.peer == person.user_id]:
                # whoever is on the call may not be the resident
                self._step(call, CallInput.LOCAL_HANGUP, now, out, Details(reason="user_hangup"))
        if problem is None and room is not None:
            for device_id in verdict.new_untrusted:
                out.append(notices.untrusted_device(room, device_id, verdict.untrusted.get(device_id, "")))
            if verdict.identity_pending and not (before and before.identity_pending):
                out.append(notices.identity_pending(room))
        holders = verdict.trusted
        if problem is not None and before is not None and old_observed is not None:
            # The resident's sessions trusted until now still get the door's messages (the warning among them), as
            # long as their keys did not change; they count as the resident again only once confirmed on the door.
            old = {d.device_id: d.ed25519 for d in old_observed.devices}
            now_keys = {d.device_id: d.ed25519 for d in observed.devices}
            holders = frozenset(d for d in (before.trusted | set(before.pins.devices if before.pins else ()))
                                if d in now_keys and old.get(d) == now_keys[d])
        elif problem is not None:
            holders = frozenset(d.device_id for d in observed.devices if verdict.pins.devices.get(d.device_id) ==
                                d.ed25519)
        if (before is None or before.trusted != verdict.trusted or old_pins != verdict.pins
                or set(before.untrusted) != set(verdict.untrusted)):
            out.append(TrustUpdated(pins=verdict.pins, trusted=verdict.trusted, key_holders=holders,
                                    untrusted=frozenset(verdict.untrusted), reason=reason, user_id=person.user_id))

    def trust_on_door(self, device_id: str | None, identity: bool, user_id: str, now: float,
                      out: list[Action]) -> str | None:
        """``intercom trust``: confirm a resident's device or changed identity; returns why not, or None when done.
        Without ``user_id``: the resident who has that device, or the only one whose identity changed."""
        person = self._people.get(user_id) if user_id else None
        if user_id and person is None:
            why = f"{user_id} is not a resident"
            out.append(Ignored(reason=f"trust not changed: {why}"))
            return why
        if person is None and len(self._people) == 1:
            person = next(iter(self._people.values()))
        if person is None and identity:
            changed = [p for p in self._people.values() if p.verdict and p.verdict.identity_problem
                       or p.pins and p.pins.identity_problem]
            person = changed[0] if len(changed) == 1 else None
        elif person is None:
            having = [p for p in self._people.values()
                      if p.observed and any(d.device_id == device_id for d in p.observed.devices)]
            person = having[0] if len(having) == 1 else None
        if person is None:
            why = "name the resident too (intercom trust --resident @name:example.org ...)"
            out.append(Ignored(reason=f"trust not changed: {why}"))
            return why
        return self._on_trust_request(person, device_id, identity, "on the door", now, out)

    def _on_trust_request(self, person: _Person, device_id: str | None, identity: bool, by: str, now: float,
                          out: list[Action]) -> str | None:
        """Confirm a resident's device or changed identity; returns why not, or None when done."""
        observed = person.observed
        room = person.room_id
        why: str | None = None
        if observed is None:
            why = f"the door has not read the device keys of {person.user_id} yet; try again in a minute"
        elif identity:
            pins = trust.accept_identity(person.pins, observed)
            self._apply_verdict(person, trust.assess(pins, observed), observed, now, out, f"identity confirmed {by}")
            if room is not None:
                out.append(SendNotice(room_id=room, text=(
                    f"The door now trusts your account's current identity (confirmed {by}).")))
            return None
        elif device_id is None or trust.DEVICE_ID.fullmatch(device_id) is None:
            why = "name the session to trust by its device ID (shown in your app's session list)"
        else:
            device = next((d for d in observed.devices if d.device_id == device_id), None)
            verdict = person.verdict
            if device is None:
                why = f"the account {person.user_id} has no session {device_id}"
            elif verdict is not None and verdict.identity_problem is not None:
                why = (f"{verdict.identity_problem}: confirm the identity on the door first "
                       "(intercom trust --identity)")
            elif verdict is not None and device_id in verdict.trusted:
                why = f"the session {device_id} is trusted already"
            else:
                pins = trust.confirm_device(person.pins or trust.Pins(), device)
                self._apply_verdict(person, trust.assess(pins, observed), observed, now, out,
                                    f"{device_id} confirmed {by}")
                if room is not None:
                    out.append(notices.trusted(room, device_id, device.name[:80], by))
                return None
        out.append(Ignored(reason=f"trust not changed: {why}"))
        return why

    def _trust_from_room(self, person: _Person, device_id: str | None, by_device: str | None, now: float,
                         out: list[Action]) -> None:
        """``!trust DEVICE`` from a trusted session: it may vouch for another session of the same resident, never
        for a new identity (a trusted session cannot undo an identity warning; only the door can)."""
        why = self._on_trust_request(person, device_id, False, f"from the session {by_device}", now, out)
        if why is not None and person.room_id is not None:
            out.append(SendNotice(room_id=person.room_id, text=f"Not trusted: {why}."))

    # --- candidates of calls not seen yet ------------------------------------------------------------------------

    def _may_hold(self, event: CallEventReceived) -> bool:
        """Candidates for an unknown call are kept only from a resident in their room (the invite may follow)."""
        person = self._resident_in_room(event.sender, event.room_id)
        return person is not None and self._device_problem(person, event) is None

    def _hold_pending(self, msg: messages.Candidates) -> None:
        held = self._pending.get(msg.call_id)
        if held is None:
            held = self._pending[msg.call_id] = []
            while len(self._pending) > PENDING_CALLS:
                self._pending.popitem(last=False)
        room = HELD_CANDIDATES - len(held)
        held.extend((msg.party_id, c) for c in msg.candidates[: max(room, 0)])

    def _seen_before(self, event_id: str | None) -> bool:
        """Whether the event with this ID was handled already (and remember it if not); None: no ID to go by."""
        if not isinstance(event_id, str):
            return False
        if event_id in self._seen:
            return True
        self._seen[event_id] = None
        while len(self._seen) > SEEN_EVENTS:
            self._seen.popitem(last=False)
        return False

    def _remember_finished(self, call_id: str) -> None:
        self._finished[call_id] = None
        self._finished.move_to_end(call_id)
        while len(self._finished) > FINISHED_MEMORY:
            self._finished.popitem(last=False)
        self._pending.pop(call_id, None)

    # --- the front panel -----------------------------------------------------------------------------------------

    def _wanted_led(self) -> LedState:
        call = self._call
        if call is not None and call.state in CALL_LEDS:
            return CALL_LEDS[call.state][call.direction]
        if self._result is not None:
            return self._result[0]
        if self._faults:
            return LedState.ERROR
        if not self._online:
            return LedState.OFFLINE
        if all(self._room_problem(p) is not None for p in self._people.values()):
            return LedState.ERROR  # nobody can be rung (one unusable room shows in status, not as an error)
        return LedState.IDLE

    def _update_leds(self, now: float, out: list[Action]) -> None:
        wanted = self._wanted_led()
        if wanted is not self._shown_led:
            self._shown_led = wanted
            out.append(SetLeds(state=wanted))
