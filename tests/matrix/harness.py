"""Test doubles around the Matrix adapter: the real call core behind it (the door), and a nio client (the phone).

- :class:`Door` feeds the adapter's events into a real :class:`~intercom.core.DoorCore` with ``loop.time()`` and
  carries out its :class:`~intercom.core.SendCallEvent` actions through the adapter. Media actions are answered at
  once with a fixed SDP (media is tested elsewhere); other actions are only recorded.
- :class:`Phone` is the owner's (or a stranger's) Matrix client: matrix-nio with E2EE, as a second device would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nio import BadEvent, CallEvent, LocalProtocolError, MegolmEvent, RoomSendResponse, UnknownEvent

from intercom.core import (
    ButtonPressed,
    CallEventReceived,
    CoreSettings,
    DoorCore,
    HomeserverConnectionChanged,
    LocalAnswerReady,
    LocalOfferReady,
    PrepareAnswer,
    PrepareOffer,
    SendCallEvent,
    TimerDue,
    TrustUpdated,
)
from intercom.matrix import MatrixAdapter, MatrixSettings
from intercom.matrix.client import SYNC_FILTER
from intercom_dev.testbed.client import ScriptedClient

from ..support import wait_until
from .sdp import ANSWER_SDP, OFFER_SDP, STREAM_ID

log = logging.getLogger(__name__)

#: Generous bound on anything that should happen "soon" (a sync round trip is tens of milliseconds).
WAIT = 20.0


def run(main: Any, timeout: float = 90.0) -> None:
    """``asyncio.run`` with an overall bound: a stuck test fails, printing where every task was stuck."""

    async def bounded() -> None:
        task = asyncio.ensure_future(main)
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            for other in asyncio.all_tasks():
                other.print_stack(file=sys.stderr)
            task.cancel()
            await asyncio.wait({task}, timeout=5)
            raise AssertionError(f"the test did not finish within {timeout:.0f} s (task stacks above)")
        task.result()

    asyncio.run(bounded())


class Door:
    """The adapter, driven by the real call core."""

    def __init__(self, settings: MatrixSettings, owner: str, party_id: str = "DOORTEST"):
        settings = dataclasses.replace(settings, owner=owner)  # trust on: keys only to the devices the core trusts
        self.settings = settings
        self.core = DoorCore(CoreSettings(user_id=settings.user_id, owner=owner, room_id=settings.room_id,
                                          party_id=party_id))
        self.adapter = MatrixAdapter(settings, self._on_event)
        self.received: list[tuple[float, Any]] = []  # (loop time, event) from the adapter
        self.actions: list[Any] = []
        self.sends: list[tuple[float, SendCallEvent, bool]] = []  # (loop time when sent, action, accepted)
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._tasks: list[asyncio.Task[Any]] = []

    def _on_event(self, event: Any) -> None:
        self.received.append((asyncio.get_running_loop().time(), event))
        self._queue.put_nowait(event)

    async def start(self) -> None:
        await self.adapter.start()
        self._tasks = [asyncio.create_task(self.adapter.run(), name="adapter.run"),
                       asyncio.create_task(self._pump(), name="door.pump")]

    def press(self) -> None:
        self._queue.put_nowait(ButtonPressed())

    def feed(self, event: Any) -> None:
        """Any core event, as if from the door itself (e.g. ``intercom trust``)."""
        self._queue.put_nowait(event)

    async def _pump(self) -> None:
        while True:
            deadline = self.core.next_deadline()
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow the cancellation that stops us.
                async with asyncio.timeout_at(deadline):
                    event = await self._queue.get()
            except TimeoutError:
                event = TimerDue()
            await self._feed(event)

    async def _feed(self, first: Any) -> None:
        loop = asyncio.get_running_loop()
        pending = [first]
        while pending:
            actions = self.core.handle(pending.pop(0), loop.time())
            for action in actions:
                self.actions.append(action)
                if isinstance(action, SendCallEvent):
                    sent_at = loop.time()
                    ok = await self.adapter.send(action)
                    self.sends.append((sent_at, action, ok))
                elif isinstance(action, PrepareOffer):
                    pending.append(LocalOfferReady(call_id=action.call_id, sdp=OFFER_SDP, stream_id=STREAM_ID))
                elif isinstance(action, TrustUpdated):
                    self.adapter.apply_trust(action)
                elif isinstance(action, PrepareAnswer):
                    pending.append(LocalAnswerReady(call_id=action.call_id, sdp=ANSWER_SDP, stream_id=STREAM_ID))

    async def close(self) -> None:
        """Stop; re-raises what the adapter's sync loop died of, if it did ("nothing crashed")."""
        pump = self._tasks[1] if len(self._tasks) > 1 else None
        if pump is not None:
            pump.cancel()
        await self.adapter.close()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for task, result in zip(self._tasks, results):
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise AssertionError(f"{task.get_name()} crashed: {result!r}") from result

    # --- what tests look at ------------------------------------------------------------------------------------

    def call_events(self, event_type: str | None = None) -> list[CallEventReceived]:
        return [e for _, e in self.received if isinstance(e, CallEventReceived)
                and (event_type is None or e.event_type == event_type)]

    def sent(self, event_type: str) -> list[SendCallEvent]:
        return [a for _, a, ok in self.sends if ok and a.event_type == event_type]

    def connection_changes(self) -> list[tuple[float, bool]]:
        return [(t, e.online) for t, e in self.received if isinstance(e, HomeserverConnectionChanged)]

    def room_ready(self) -> bool:
        return self.core.online and self.core.room_problem() is None


@dataclass
class Received:
    """A call event as the phone saw it (decrypted), with the loop time it arrived."""

    at: float
    room_id: str
    sender: str
    type: str
    content: Mapping[str, Any]
    encrypted: bool


class Phone(ScriptedClient):
    """A Matrix user's client (matrix-nio with E2EE, :class:`~intercom_dev.testbed.client.ScriptedClient`),
    recording the call events of every room it is in."""

    EVENT_TYPES = (CallEvent, UnknownEvent, BadEvent, MegolmEvent)

    def __init__(self, homeserver: str, user_id: str, password: str, store: Path, device_name: str = "test phone"):
        super().__init__(homeserver, user_id, password, store_dir=store, device_name=device_name,
                         sync_filter=SYNC_FILTER, sync_timeout_ms=30_000)
        self.events: list[Received] = []
        self.undecryptable: list[MegolmEvent] = []

    async def start(self) -> Phone:
        await super().start()
        return self

    async def on_event(self, room: Any, event: Any) -> None:
        if isinstance(event, MegolmEvent):
            self.undecryptable.append(event)
            return
        source = event.source
        if str(source.get("type", "")).startswith("m.call."):
            self.events.append(Received(asyncio.get_running_loop().time(), room.room_id, source["sender"],
                                        source["type"], source.get("content", {}),
                                        bool(getattr(event, "decrypted", False))))

    async def knows_member(self, room_id: str, user_id: str) -> None:
        """Wait until this client's sync has seen ``user_id`` join ``room_id`` (so its E2EE sends include them)."""
        def joined() -> bool:
            room = self.client.rooms.get(room_id)
            return room is not None and user_id in room.users and not room.users[user_id].invited
        await wait_until(joined, what=f"{self.user_id} to see {user_id} in {room_id}")
        if self.client.should_query_keys:
            with contextlib.suppress(LocalProtocolError):
                await self.client.keys_query()

    async def send(self, room_id: str, event_type: str, content: Mapping[str, Any]) -> str:
        response = await self.client.room_send(room_id, event_type, dict(content), ignore_unverified_devices=True)
        assert isinstance(response, RoomSendResponse), response
        return response.event_id

    def of_type(self, event_type: str, call_id: str | None = None, room_id: str | None = None) -> list[Received]:
        return [e for e in self.events if e.type == event_type and e.sender != self.user_id
                and (call_id is None or e.content.get("call_id") == call_id)
                and (room_id is None or e.room_id == room_id)]

    async def wait_for(self, event_type: str, call_id: str | None = None, room_id: str | None = None,
                       timeout: float = WAIT) -> Received:
        found = await wait_until(lambda: self.of_type(event_type, call_id, room_id),
                                 f"{event_type} at {self.user_id}", timeout=timeout)
        return found[0]
