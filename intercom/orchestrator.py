"""The one asyncio loop: adapter events into the core, the core's actions out to the adapters.

This is the only place that knows all the edges, and it knows them only through the small :class:`Signalling`,
:class:`Media` and :class:`Panel` protocols below; the composition (which concrete adapter, built from which
config) is in :mod:`intercom.app`. The orchestrator holds no call rules: every decision is the core's.

Ordering guarantees it gives the core:

- Room events of one room are sent one at a time, in the order the core produced them (an invite before its
  candidates; our ``replaced`` hangup before the answer to the owner's call). Rooms do not wait for each other: a
  ring group's invites to five residents go out side by side.
- A picture (:class:`PostSnapshot`) is started once every event before it in its room has been sent (the ring's
  picture follows its call's invite), and never holds up the events after it.
- Media actions of one call run one at a time, in order; different calls do not wait for each other.
- The core is woken at :meth:`DoorCore.next_deadline` (re-armed after every input).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from intercom.core import notices
from intercom.core.states import Direction
from intercom.core import (
    Action,
    AddRemoteCandidates,
    ApplyAnswer,
    ButtonPressed,
    CallEnded,
    CallSummary,
    CloseMedia,
    DoorCore,
    Event,
    Ignored,
    LedState,
    LocalAnswerReady,
    LocalCandidatesGathered,
    LocalOfferReady,
    MediaFailed,
    MediaState,
    MediaStateChanged,
    NegotiationAnswerReady,
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
    TimerDue,
    TrustUpdated,
)

log = logging.getLogger("intercom")

#: Room sends that may wait for the homeserver at once, per room.
SEND_QUEUE = 256
#: Rooms with sends waiting at once (the residents' rooms, and rooms of refused strangers, which the core limits).
SEND_ROOMS = 64


class Signalling(Protocol):
    """The Matrix side, as the orchestrator uses it."""

    async def send(self, action: SendCallEvent) -> bool: ...
    async def send_notice(self, room_id: str, text: str) -> bool: ...
    def apply_trust(self, update: TrustUpdated) -> None: ...


class Media(Protocol):
    """The media side (see :class:`intercom.media.MediaEngine`)."""

    async def create_offer(self, call_id: str, ice_servers: Sequence[Any]) -> Any: ...
    async def create_answer(self, call_id: str, offer_sdp: str, ice_servers: Sequence[Any]) -> Any: ...
    async def apply_answer(self, call_id: str, answer_sdp: str) -> None: ...
    async def add_remote_candidates(self, call_id: str, candidates: Sequence[dict]) -> None: ...
    async def answer_renegotiation(self, call_id: str, offer_sdp: str) -> Any: ...
    async def close(self, call_id: str) -> None: ...


class RtcCalls(Protocol):
    """MatrixRTC calls (see :class:`intercom.rtccalls.RtcCalls`)."""

    def owns(self, call_id: str) -> bool: ...
    async def connect(self, action: RtcConnect) -> None: ...
    async def announce(self, action: RtcAnnounce) -> None: ...
    async def answered(self, call_id: str) -> None: ...
    async def close(self, call_id: str) -> None: ...


class Panel(Protocol):
    """The front panel (see :class:`intercom.panel.FrontPanel`)."""

    def show(self, state: LedState) -> None: ...
    def feedback(self, accepted: bool) -> None: ...
    def pulse_relay(self, seconds: float) -> None: ...


#: Gives the ICE server list for a new peer connection (from the homeserver's TURN endpoint; never None).
IceServerSource = Callable[[], Awaitable[Sequence[Any]]]


class Pictures(Protocol):
    """The visitor's pictures in the room (see :class:`intercom.snapshots.Snapshots`)."""

    async def post(self, room_id: str, reason: str, *, label: str = "", mention: str = "",
                   ring_id: str = "") -> Any: ...
    async def reply_to_ring(self, room_id: str, text: str, no_picture: str) -> None: ...


class Orchestrator:
    """Feeds events into a :class:`DoorCore` and carries out its actions."""

    def __init__(self, core: DoorCore, *, on_action: Callable[[Action], None] | None = None) -> None:
        """Made first, so that the adapters can be given its input methods; :meth:`attach` then gives it the
        adapters. Input that arrives before that is dropped (the door is not up yet)."""
        self.core = core
        self._attached = False
        self._signalling: Signalling
        self._media: Media
        self._panel: Panel
        self._ice_servers: IceServerSource
        self._snapshots: Pictures | None = None
        self._rtc: RtcCalls | None = None
        self._on_action = on_action
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        #: Room sends waiting, per room; each room's sender task ends when its queue is empty.
        self._sends: dict[str, asyncio.Queue[Callable[[], Awaitable[Any]]]] = {}
        self._sent = asyncio.Event()  #: set while no room send is waiting
        self._sent.set()
        self._media_queues: dict[str, asyncio.Queue] = {}
        self._tasks: set[asyncio.Task] = set()
        self.last_call: CallSummary | None = None
        #: The last time the door was opened, for ``intercom status``: when (wall clock), by whom, for which ring.
        self.last_opening: dict[str, Any] | None = None
        self.started_at = time.time()

    def attach(self, *, signalling: Signalling, media: Media, panel: Panel, ice_servers: IceServerSource,
               snapshots: Pictures | None = None, rtc: RtcCalls | None = None) -> None:
        """The adapters the core's actions go to; from now on input is fed to the core. Without ``rtc``, a
        MatrixRTC call fails at once (its media cannot be made)."""
        self._signalling, self._media, self._panel = signalling, media, panel
        self._ice_servers, self._snapshots, self._rtc = ice_servers, snapshots, rtc
        self._attached = True

    # --- input ---------------------------------------------------------------------------------------------------

    def feed(self, event: Event) -> list[Action]:
        """Give the core one event (call on the loop thread) and carry out what it says; returns the actions."""
        if not self._attached:
            log.info("%s before the door was up: dropped", type(event).__name__)
            return []
        actions = self.core.handle(event, self._loop.time())
        for action in actions:
            try:
                self._carry_out(action)
            except Exception:  # one failed action must not lose the others, nor the loop
                log.exception("could not carry out %s", type(action).__name__)
            if self._on_action is not None:
                self._on_action(action)
        self._rearm()
        return actions

    def feed_threadsafe(self, event: Event) -> None:
        """Like :meth:`feed`, from another thread (gpiozero's callbacks)."""
        self._loop.call_soon_threadsafe(self.feed, event)

    def button_pressed_threadsafe(self, button: int = 0) -> None:
        """The front panel's ``on_press`` callback (gpiozero's thread): bell button ``button`` was pressed, now (the
        local clock time goes with it, for quiet hours)."""
        local = time.localtime()
        self.feed_threadsafe(ButtonPressed(button=button, minute_of_day=local.tm_hour * 60 + local.tm_min))

    def local_candidates(self, call_id: str, entries: Sequence[Mapping[str, Any]], complete: bool) -> None:
        """The media side's ``on_candidates`` callback: candidates gathered after the offer or answer."""
        self.feed(LocalCandidatesGathered(call_id=call_id, candidates=tuple(entries), complete=complete))

    def media_state(self, call_id: str, state: str) -> None:
        """The media side's ``on_state`` callback."""
        try:
            self.feed(MediaStateChanged(call_id=call_id, state=MediaState(state)))
        except ValueError:
            pass  # "closed" and other states the core does not need

    def _rearm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.core.next_deadline()
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self.feed, TimerDue())

    # --- output --------------------------------------------------------------------------------------------------

    def _carry_out(self, action: Action) -> None:
        match action:
            case SendCallEvent():
                self._queue_send(action.room_id, lambda: self._send_call_event(action), action.event_type)
            case SendNotice(room_id=room_id, no_picture=no_picture):
                text = action.text.replace(notices.TIME, time.strftime("%H:%M"))
                log.info("notice: %s", text)
                pictures = self._snapshots
                if action.reply_to_ring and pictures is not None:
                    # Queued behind the ring's picture; waits for it beside the queue, not in it.
                    self._queue_send(room_id, lambda: self._start(pictures.reply_to_ring(room_id, text, no_picture)),
                                     "notice")
                else:
                    text += no_picture if action.reply_to_ring else ""
                    self._queue_send(room_id, lambda: self._signalling.send_notice(room_id, text), "notice")
            case SetLeds(state=state):
                log.info("LEDs: %s", state.value)
                self._panel.show(state)
            case PressFeedback(accepted=accepted, reason=reason):
                log.info("button pressed%s", "" if accepted and not reason else f" ({reason})")
                self._panel.feedback(accepted)
            case OpenDoor(seconds=seconds, by=by, call_id=call_id):
                log.warning("door opened for %g s by %s, for the ring of call %s", seconds, by or "-", call_id or "-")
                self.last_opening = {"at": time.time(), "by": by, "call_id": call_id, "seconds": seconds}
                self._panel.pulse_relay(seconds)
            case PostSnapshot(room_id=room_id, reason=reason):
                pictures = self._snapshots
                if pictures is not None:
                    self._queue_send(room_id, lambda: self._start(pictures.post(
                        room_id, reason, label=action.label, mention=action.mention, ring_id=action.ring_id)),
                        "picture")
            case CallEnded(summary=summary):
                self.last_call = summary
                log.info("%s", describe_call(summary))
            case TrustUpdated(reason=reason):
                log.info("trust: %s; trusted sessions of the owner: %s; not trusted: %s", reason,
                         ", ".join(sorted(action.trusted)) or "none", ", ".join(sorted(action.untrusted)) or "none")
                self._signalling.apply_trust(action)
            case Ignored(reason=reason, event_type=event_type, sender=sender):
                log.debug("ignored %s from %s: %s", event_type or "input", sender or "-", reason)
            case PrepareOffer() | PrepareAnswer() | ApplyAnswer() | AddRemoteCandidates() | \
                    PrepareNegotiationAnswer() | CloseMedia() | RtcConnect() | RtcAnnounce():
                self._queue_media(action)

    def _queue_send(self, room_id: str, send: Callable[[], Awaitable[Any]], what: str) -> None:
        """Queue a send to a room; a full queue (the homeserver far behind) drops it, loudly, rather than grow
        without bound (the core already limits what a peer can make it send)."""
        queue = self._sends.get(room_id)
        if queue is None:
            if len(self._sends) >= SEND_ROOMS:
                log.error("sends to %d rooms are waiting for the homeserver: dropped a %s to %s", len(self._sends),
                          what, room_id)
                return
            queue = self._sends[room_id] = asyncio.Queue(maxsize=SEND_QUEUE)
            self._sent.clear()
            self._spawn(self._run_sender(room_id, queue))
        try:
            queue.put_nowait(send)
        except asyncio.QueueFull:
            log.error("%d sends to %s are waiting for the homeserver: dropped a %s", queue.qsize(), room_id, what)

    async def _send_call_event(self, action: SendCallEvent) -> None:
        await self._signalling.send(action)

    async def _start(self, coro: Awaitable[Any]) -> None:
        """Run ``coro`` beside the send queue, from this point of it on."""
        self._spawn(coro)

    # --- room sends, in order ------------------------------------------------------------------------------------

    async def _run_sender(self, room_id: str, queue: asyncio.Queue) -> None:
        """Send one room's events in order; ends (and forgets the queue) once it is empty."""
        try:
            while True:
                try:
                    send = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    await send()
                except Exception:  # the Matrix adapter retries itself; a failure here is logged, not fatal
                    log.exception("sending a room event to %s failed", room_id)
        finally:
            if self._sends.get(room_id) is queue:
                del self._sends[room_id]
            if not self._sends:
                self._sent.set()

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until queued room events are sent (used at shutdown, after the last hangup)."""
        try:
            await asyncio.wait_for(self._sent.wait(), timeout)
        except asyncio.TimeoutError:
            log.warning("gave up waiting for %d room events to be sent",
                        sum(q.qsize() for q in self._sends.values()))

    # --- media, in order per call --------------------------------------------------------------------------------

    def _queue_media(self, action: Action) -> None:
        call_id = action.call_id
        queue = self._media_queues.get(call_id)
        if queue is None:
            if isinstance(action, CloseMedia):
                # Nothing was started for this call (or it is already closed): closing is idempotent anyway.
                self._spawn(self._close_media(call_id))
                return
            queue = self._media_queues[call_id] = asyncio.Queue()
            self._spawn(self._run_media(call_id, queue))
        queue.put_nowait(action)

    async def _run_media(self, call_id: str, queue: asyncio.Queue) -> None:
        while True:
            action = await queue.get()
            if isinstance(action, CloseMedia):
                self._media_queues.pop(call_id, None)
                await self._close_media(call_id)
                return
            event = await self._media_step(action)
            if event is not None:
                self.feed(event)

    async def _close_media(self, call_id: str) -> None:
        try:
            if self._rtc is not None and self._rtc.owns(call_id):
                return await self._rtc.close(call_id)
            await self._media.close(call_id)
        except Exception as exc:
            log.warning("closing media of call %s: %s", call_id, exc)

    async def _media_step(self, action: Action) -> Event | None:
        call_id = action.call_id
        try:
            match action:
                case PrepareOffer():
                    desc = await self._media.create_offer(call_id, await self._ice_servers())
                    return LocalOfferReady(call_id=call_id, sdp=desc.sdp, stream_id=desc.stream_id,
                                           candidates_complete=desc.candidates_complete)
                case PrepareAnswer(offer_sdp=sdp):
                    desc = await self._media.create_answer(call_id, sdp, await self._ice_servers())
                    return LocalAnswerReady(call_id=call_id, sdp=desc.sdp, stream_id=desc.stream_id,
                                            candidates_complete=desc.candidates_complete)
                case PrepareNegotiationAnswer(offer_sdp=sdp):
                    desc = await self._media.answer_renegotiation(call_id, sdp)
                    return NegotiationAnswerReady(call_id=call_id, sdp=desc.sdp, stream_id=desc.stream_id)
                case RtcConnect(direction=direction):
                    if self._rtc is None:
                        raise RuntimeError("this door makes no MatrixRTC calls")
                    await self._rtc.connect(action)
                    ready = LocalOfferReady if direction is Direction.OUTGOING else LocalAnswerReady
                    return ready(call_id=call_id, sdp="")
                case RtcAnnounce():
                    assert self._rtc is not None
                    await self._rtc.announce(action)
                case ApplyAnswer() if self._rtc is not None and self._rtc.owns(call_id):
                    await self._rtc.answered(call_id)  # MatrixRTC: the resident joined; their tracks connect it
                case ApplyAnswer(answer_sdp=sdp):
                    await self._media.apply_answer(call_id, sdp)
                case AddRemoteCandidates(candidates=candidates):
                    await self._media.add_remote_candidates(call_id, [
                        {"candidate": c.candidate, "sdpMid": c.sdp_mid, "sdpMLineIndex": c.sdp_mline_index}
                        for c in candidates])
        except Exception as exc:  # MediaError, or anything else the media side could not do
            log.warning("media for call %s: %s failed: %s", call_id, type(action).__name__, exc)
            return MediaFailed(call_id=call_id, detail=str(exc))
        return None

    # --- lifecycle -----------------------------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def close(self) -> None:
        """Close every call's media and stop the background tasks. The caller hangs up first."""
        if self._timer is not None:
            self._timer.cancel()
        for call_id in list(self._media_queues):
            self._media_queues[call_id].put_nowait(CloseMedia(call_id=call_id))
        pending = list(self._tasks)
        if pending:
            await asyncio.wait(pending, timeout=5)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def describe_call(s: CallSummary) -> str:
    """The per-call log line: who, direction, duration, how it ended."""
    who = f"to {s.peer}" if s.direction.value == "outgoing" else f"from {s.peer}"
    return (f"call {s.direction.value} {who}: {s.outcome.value}, {s.duration:.0f} s in call, "
            f"reason {s.reason} ({s.detail}) [{s.call_id}]")
