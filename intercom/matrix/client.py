"""The door's Matrix edge: one matrix-nio client turned into core events in and room events out.

Theory of operation
-------------------
:meth:`MatrixAdapter.start` logs in (once: the session is saved in the state directory and reused, so a restart is
the same device with the same E2EE keys) and does the first sync. :meth:`MatrixAdapter.run` is the sync loop. Each
sync response is handled in one pass, in this order:

1. nio applies it (room state, decryption of Megolm events, to-device messages);
2. invites: the door joins the configured room of any resident, and the room a resident without a configured room
   invites it to when that room holds just the two of them; it declines every other invite (beside the loop);
3. key upload/query/claim and queued to-device messages, so that an answer sent next already reaches every device
   of a resident that the sync announced;
4. the residents' rooms (see below), then :class:`~intercom.core.ResidentRoomChanged` for each resident whose room
   (or what the door waits for) changed, and the residents' keys when they may have changed
   (:class:`~intercom.core.OwnerKeysObserved`, one per resident);
5. room facts (:class:`~intercom.core.RoomMembersChanged`, the state at the end of the batch) for every room that
   changed, then :class:`~intercom.core.HomeserverConnectionChanged` if we were offline;
6. the batch's ``m.call.*`` events (:class:`~intercom.core.CallEventReceived`), in timeline order, with their
   ``unsigned.age``; invites already settled later in the batch and our own echoes are left out.

The residents' rooms
--------------------
Legacy calls are 1:1 in a room of two, so the door is in one room with each resident. A resident's room is the one
the config names, else the one remembered in ``rooms.json`` (:mod:`~intercom.matrix.rooms`): a room of just the two
of them the resident invited the door to, or one the door made. The first sync tells the core each resident's room
(None while the door makes one). After each sync the door:

- finds a lost room again: a room of just the door and a resident without one (``rooms.json`` was damaged, or a
  restart came between making a room and remembering it), so no second room is made;
- leaves a room that is no resident's where it is alone, or where the only other member is a resident (who has
  another room with the door) invited to it: what a room creation the homeserver carried out but failed to
  answer leaves behind;
- invites a resident again, at most once an hour, to the room the door made once they left it;
- makes a room for each resident who has none, beside the sync loop (``room_create``, retried with backoff while
  the homeserver fails or refuses; :data:`~intercom.matrix.retry.MAKE_ROOM`), and waits for them to join
  (``ResidentRoomChanged(waiting="waiting for ... to join the room the door made")``, then ``waiting=""``).

A resident without a configured room who invites the door into a room of two while they are not in the room the
door knows for them (none yet, or the door's, not joined) gets that room: the door joins, checks the room's state
(only the two of them joined or invited, not public, not a space), remembers it and leaves its own room (taking
back its invite). Anything else is declined (left and forgotten).

Start-up does not ring for stale invites: the first sync after a start (``full_state`` from the saved sync token,
so nio learns the complete member lists again) passes call events on with their real ages, and the core's
liveness check (age against ``lifetime``) drops old invites. Synapse computes ``age`` when it writes a response,
even one replayed from its two-minute sync cache, and the first request differs from every later one
(``full_state=true``), so a quick restart does not receive the previous run's cached response either.

Network trouble is never raised; every request is retried by one policy (:mod:`~intercom.matrix.retry`). Lost
syncs are retried at once, then with a backoff of 0.5 s doubling to 4 s, and
:class:`~intercom.core.HomeserverConnectionChanged` tells the core (and the LED) while the homeserver is gone.
Sends retry transient failures and honour ``429`` ``retry_after_ms`` for up to 20 seconds, then give up and return
False. Nothing the homeserver says stops the door: a refusal at login or sync (a wrong password, a proxy's 4xx)
is retried slowly while :class:`~intercom.core.FaultChanged` shows it; a session the homeserver ends (a deleted
or expired token) is replaced by a new login with the same device ID, so the door keeps its E2EE keys; an E2EE
store that cannot be opened is set aside, the door signs in as a new device and tells the owner. TURN
credentials are :mod:`~intercom.matrix.turn`'s business.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import itertools
import logging
import time
import urllib.parse
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nio import (
    AsyncClient,
    AsyncClientConfig,
    ErrorResponse,
    InviteMemberEvent,
    JoinResponse,
    LocalProtocolError,
    LoginResponse,
    MegolmEvent,
    OlmUnverifiedDeviceError,
    RoomCreateResponse,
    RoomInviteResponse,
    RoomSendResponse,
    SyncResponse,
    UploadResponse,
    WhoamiResponse,
)

from intercom.core import (
    CallEventReceived,
    FaultChanged,
    HomeserverConnectionChanged,
    OwnerKeysObserved,
    ResidentRoomChanged,
    RoomMembersChanged,
    SendCallEvent,
    TextMessageReceived,
    TrustUpdated,
)
from intercom.core.door import UNENCRYPTED_WARNING
from intercom.core.events import Event
from intercom.durable import rename_durably

from . import retry, rooms, routing, session
from .errors import MatrixError
from .retry import TRANSIENT_EXCEPTIONS, Failure, request_json
from .rtc import MatrixRtc
from . import rtckeys
from .rtckeys import MediaKey
from .rooms import KnownRoom
from .settings import MatrixSettings, ResidentRoom
from .trust import HouseholdTrust
from .turn import TurnServer, TurnSource

log = logging.getLogger(__name__)

#: The sync filter. The default timeline limit of 10 silently drops events from a burst (an invite followed by
#: candidate batches); members are not lazy-loaded, so the member list (the core's room check) is complete.
SYNC_FILTER: dict[str, Any] = {
    "room": {
        "timeline": {"limit": 100},
        "state": {"lazy_load_members": False},
        "ephemeral": {"not_types": ["*"]},
    },
    "presence": {"not_types": ["*"]},
}
#: How long the homeserver may hold a sync open (ms).
SYNC_TIMEOUT_MS = 30_000
#: Our own bound on one sync request beyond the server's long-poll time (s).
SYNC_GRACE = 15.0
#: Bound on other requests (s).
REQUEST_TIMEOUT = 20.0
#: Undecryptable events kept for a retry when room keys arrive later (count, seconds).
UNDECRYPTED_KEEP = 50
UNDECRYPTED_MAX_AGE = 120.0
#: Invites to other rooms being declined at once (a flood beyond this waits for a later sync).
MAX_DECLINING = 64
#: The door invites a resident again to the room it made, after they left it, at most this often (s).
REINVITE_INTERVAL = 3600.0
#: How long after making a room its resident counts as invited while no sync has shown the invite yet (s).
JUST_MADE = 60.0


#: systemd-timesyncd (and chrony's helper) create this once the clock has been synchronised since boot.
CLOCK_SYNCHRONISED = Path("/run/systemd/timesync/synchronized")


def _quote(room_id: str) -> str:
    return urllib.parse.quote(room_id, safe="")


def synced_now_ms() -> int | None:
    """The wall clock in ms when it is known to be right (a Pi has no RTC: at boot it may be days behind), else
    None, so that an event's server timestamp is only trusted as its age when the clock can be."""
    return int(time.time() * 1000) if CLOCK_SYNCHRONISED.exists() else None


class _NioClient(AsyncClient):
    """nio's client, keeping the raw timeline events of the last sync before nio replaces encrypted ones by their
    decrypted form (which loses ``unsigned.age``)."""

    envelopes: dict[str, list[Mapping[str, Any]]]
    #: Called before a sync's to-device messages are decrypted: installs the MatrixRTC media-key hook.
    before_sync: Callable[[Any], None] | None = None

    async def receive_response(self, response: Any) -> None:
        if isinstance(response, SyncResponse):
            if self.before_sync is not None:
                self.before_sync(self)
            self.envelopes = {
                room_id: [getattr(e, "source", {}) for e in info.timeline.events]
                for room_id, info in response.rooms.join.items()
            }
        await super().receive_response(response)


@dataclass(slots=True)
class _Undecrypted:
    room_id: str
    event: MegolmEvent
    envelope: Mapping[str, Any]
    received: float  # monotonic


class MatrixAdapter:
    """The door's Matrix client. ``on_event`` receives core events; it is called from the sync loop and must not
    block (queue them)."""

    def __init__(self, settings: MatrixSettings, on_event: Callable[[Event], None]) -> None:
        self.settings = settings
        self._homeserver = settings.homeserver.rstrip("/")
        self._on_event = on_event
        self._state_dir = Path(settings.state_dir)
        self._client: _NioClient | None = None
        self._online: bool | None = None
        self._offline_since: float | None = None
        self._facts: dict[str, RoomMembersChanged] = {}
        self._left: set[str] = set()
        #: Rooms being declined or left (beside the sync loop).
        self._refused_invites: set[str] = set()
        self._join_failed: set[str] = set()
        #: The household (empty: the adapter alone), and each resident's room that the config does not name.
        self._residents: tuple[ResidentRoom, ...] = settings.household
        self._known: dict[str, KnownRoom] = {}
        #: Invites from residents being accepted (room → resident), tried again after each sync until they work.
        self._accepting: dict[str, str] = {}
        #: The last ResidentRoomChanged of each resident: (room, waiting).
        self._reported: dict[str, tuple[str | None, str]] = {}
        #: Making rooms (beside the sync loop): the resident whose room is being made, failures and next tries.
        self._maker: asyncio.Task[None] | None = None
        self._making: str | None = None
        self._make_failures: dict[str, int] = {}
        self._make_next: dict[str, float] = {}  # monotonic
        self._make_problem: dict[str, str] = {}
        self._room_version: tuple[str | None] | None = None  # the homeserver's default, once asked
        self._reinvited: dict[str, float] = {}  # resident → monotonic time of the door's last invite this run
        self._made: dict[str, float] = {}  # rooms made in this run whose invite no sync has shown yet → monotonic
        self._accepted: dict[str, float] = {}  # rooms of residents joined in this run → monotonic
        self._warned_unencrypted_rooms: set[str] = set()
        self._undecrypted: deque[_Undecrypted] = deque(maxlen=UNDECRYPTED_KEEP)
        #: One send at a time per room, in order (an invite before its candidates); rooms do not wait for each
        #: other, so a ring group's invites to several residents go out side by side.
        self._send_locks: dict[str, asyncio.Lock] = {}
        self._turn = TurnSource(lambda: self._client, timeout=REQUEST_TIMEOUT)
        #: MatrixRTC (Element Call): focus, LiveKit token, the door's membership and rings.
        self.rtc = MatrixRtc(lambda: self._client, send_event=self.send_event)
        #: The creators of rooms the door is in (room version 12 gives them every power).
        self._creators: dict[str, frozenset[str]] = {}
        #: Gets each resident's MatrixRTC media key (Olm-encrypted to-device, from a checked device).
        self.on_media_key: Callable[[MediaKey], None] | None = None
        self._trust = (HouseholdTrust(self._state_dir, settings.resident_ids, timeout=REQUEST_TIMEOUT)
                       if self._residents else None)
        self._request: asyncio.Task[Any] | None = None
        self._joined_before: set[str] = set()  # rooms whose complete timeline we have seen since start
        self._closing = False
        self._closed = asyncio.Event()
        #: Rooms the door was invited to and declines (leaves and forgets) beside the sync loop.
        self._declining: asyncio.Queue[str] = asyncio.Queue()
        self._decliner: asyncio.Task[None] | None = None
        #: What the homeserver refuses that the door cannot fix (shown as a fault), and what the owner must hear.
        self._fault: str | None = None
        self._pending_notice: str | None = None

    # --- public view -------------------------------------------------------------------------------------------

    @property
    def user_id(self) -> str:
        return self.settings.user_id

    @property
    def device_id(self) -> str | None:
        return self._client.device_id if self._client else None

    @property
    def online(self) -> bool:
        return bool(self._online)

    def resident_rooms(self) -> dict[str, str | None]:
        """Each resident's room as the door uses it now: the configured one, the one it remembers (made by the
        door, or the resident's invite), or None while it has none."""
        return {r.user_id: self._room_of(r) for r in self._residents}

    def load_pins(self) -> dict[str, Any]:
        """What the door pinned of each resident's keys (user ID → Pins, None at first use); {} for the adapter
        alone. The same as :func:`~intercom.matrix.trust.load_household_pins` with the settings' residents."""
        return self._trust.load() if self._trust is not None else {}

    # --- start-up ----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Log in (or resume the saved session) and do the first sync. Returns once both worked: retries while
        the homeserver cannot be reached, and slowly while it refuses (showing the fault meanwhile)."""
        if self._client is not None:
            raise MatrixError("the Matrix adapter is already started")
        self._client = self._new_client()
        await self._retrying("log in", self._login)
        session.make_private(self._state_dir)
        if self._residents:
            self._known = rooms.load_rooms(self._state_dir)
        await self._retrying("sync", self._first_sync)
        session.make_private(self._state_dir)

    async def _retrying(self, what: str, step: Callable[[], Any]) -> None:
        """Run ``step`` until it works. ``step`` returns None on success or a failure: a transient one is retried
        soon (the door shows offline), a refusal slowly (:data:`~intercom.matrix.retry.REFUSED`; the door shows
        the fault, which someone may fix on the homeserver without touching the door)."""
        failures = refusals = 0
        while True:
            self._check_open()
            try:
                failure = await step()
            except TRANSIENT_EXCEPTIONS as exc:
                failure = Failure.of(exc)
            if failure is None:
                self._set_fault(None)
                return
            if failure.transient:
                failures += 1
                self._set_online(False, f"cannot {what}: {failure}")
                delay = retry.START.delay(failures, failure)
            else:
                refusals += 1
                delay = retry.REFUSED.delay(refusals)
                self._set_fault(failure.what if failure.auth else f"the homeserver refused to let the door {what}: "
                                f"{failure}", retry_in=delay)
            await self._pause(delay)

    async def _login(self) -> Failure | None:
        client, s = self._require_client(), self.settings
        saved = session.load_session(self._state_dir)
        if (saved is not None and saved.homeserver == self._homeserver and saved.user_id == s.user_id
                and (s.access_token is None or saved.access_token == s.access_token)):
            if not await self._open_store(lambda: client.restore_login(saved.user_id, saved.device_id,
                                                                        saved.access_token)):
                return Failure("the E2EE store was set aside", transient=True, retry_after=0.0)
            log.info("Matrix: resuming the saved session of %s (device %s)", saved.user_id, saved.device_id)
            return None
        if s.access_token is not None:
            client.access_token = s.access_token
            who = await client.whoami()
            if not isinstance(who, WhoamiResponse):
                failure = Failure.of(who)
                return failure if not failure.auth else Failure(
                    f"the homeserver does not accept the door's access token ({failure}): put a new one in the "
                    "file matrix.access_token_file names, then restart the door", transient=False, auth=True)
            if who.user_id != s.user_id or not who.device_id:
                return Failure(f"the access token belongs to {who.user_id} (device {who.device_id}), not to "
                               f"{s.user_id}: fix matrix.user_id or the token", transient=False, auth=True)
            new = session.Session(self._homeserver, who.user_id, who.device_id, s.access_token)
            if not await self._open_store(lambda: client.restore_login(new.user_id, new.device_id,
                                                                        new.access_token)):
                return Failure("the E2EE store was set aside", transient=True, retry_after=0.0)
            log.info("Matrix: using the given access token of %s (device %s)", new.user_id, new.device_id)
        else:
            assert s.password is not None
            kept = client.device_id
            try:
                response = await client.login(password=s.password, device_name=s.device_name)
            except TRANSIENT_EXCEPTIONS:
                raise
            except Exception as exc:  # nio opens the device's E2EE store as the login's answer arrives
                await self._store_damaged(exc)
                return Failure("the E2EE store was set aside", transient=True, retry_after=0.0)
            if not isinstance(response, LoginResponse):
                failure = Failure.of(response)
                if failure.auth or getattr(response, "status_code", None) in ("M_FORBIDDEN", "M_USER_DEACTIVATED"):
                    return Failure(f"the homeserver refused the door's password ({failure}): fix the file "
                                   "matrix.password_file names (or the account on the homeserver)", transient=False,
                                   auth=True)
                return failure  # network trouble, or a refusal that is not about the password (a proxy's 404)
            new = session.Session(self._homeserver, response.user_id, response.device_id, response.access_token)
            if kept and response.device_id == kept:
                log.warning("Matrix: logged in again as %s, same device %s", new.user_id, new.device_id)
                self._reupload_device_keys()
            else:
                log.info("Matrix: logged in as %s, new device %s", new.user_id, new.device_id)
        session.save_session(self._state_dir, new)
        return None

    async def _open_store(self, restore: Callable[[], None]) -> bool:
        """Resume a login, which opens the device's E2EE store; a store that cannot be opened (damaged by a power
        cut, a full card, a lost key) is set aside and False returned, so the next attempt logs in afresh."""
        try:
            restore()
            return True
        except Exception as exc:
            await self._store_damaged(exc)
            return False

    async def _store_damaged(self, exc: BaseException) -> None:
        """Move the unusable E2EE store and the session aside and start over as a new device; the owner is told
        after the next sync (:meth:`_tell_owner`)."""
        crypto, key = self._state_dir / session.CRYPTO_DIR, self._state_dir / session.CRYPTO_KEY_FILE
        aside = next(path for n in itertools.count()
                     if not (path := self._state_dir / f"{session.CRYPTO_DIR}.damaged-{n}").exists())
        log.error("Matrix: the door's E2EE store cannot be used (%s: %s); it is moved to %s (with its key) and the "
                  "door signs in again as a new device", type(exc).__name__, exc, aside)
        if crypto.exists():
            rename_durably(crypto, aside)
            if key.exists():
                rename_durably(key, aside / session.CRYPTO_KEY_FILE)
        session.forget_session(self._state_dir)
        await self._require_client().close()
        self._client = self._new_client()
        self._pending_notice = (
            f"The door's encryption store was damaged ({type(exc).__name__}) and has been set aside. The door "
            "signed in again as a new session{device}: if your app asks, verify it. Messages sent to the door's "
            "old session cannot be read any more.")

    def _reupload_device_keys(self) -> None:
        """Same device after a new login: the homeserver may have dropped its keys with the old token (a signed-out
        device loses them), so upload them again with the next key upload (the same keys: trust in the door
        stays)."""
        olm = getattr(self._require_client(), "olm", None)
        if olm is not None:
            olm.account.shared = False

    async def _first_sync(self) -> Failure | None:
        result = await self._sync(timeout_ms=0, full_state=True)
        if isinstance(result, SyncResponse):
            await self._process(result)
            await self._tell_owner()
            return None
        failure = Failure.of(result)
        if failure.auth:
            return await self._session_refused(failure) or Failure("logged in again", transient=True,
                                                                   retry_after=0.0)
        return failure

    async def _session_refused(self, failure: Failure) -> Failure | None:  # None: logged in again
        """The homeserver no longer takes the door's token (the session was signed out, the token expired or was
        deleted): with a password, log in again keeping the device ID (the same E2EE keys, so phones keep
        trusting the door) and go on; with an access token only, nothing the door can do (the fault says so)."""
        if self.settings.password is None:
            return Failure(f"the homeserver no longer accepts the door's access token ({failure}): put a new one in "
                           "the file matrix.access_token_file names, then restart the door", transient=False,
                           auth=True)
        device = self._require_client().device_id
        log.warning("Matrix: the homeserver ended the door's session (%s); logging in again as device %s", failure,
                    device)
        session.forget_session(self._state_dir)
        await self._require_client().close()
        self._client = self._new_client(device_id=device)
        await self._retrying("log in", self._login)
        return None

    async def _tell_owner(self) -> None:
        """Send what the door had to tell the residents about itself (a new session after a damaged store), into
        every resident's room the door is in (the configured room, for the adapter alone)."""
        text, self._pending_notice = self._pending_notice, None
        if text is None:
            return
        for room_id in sorted(self._household_rooms()):
            facts = self._facts.get(room_id)
            if facts is not None and self.settings.user_id in facts.joined:
                await self.send_notice(room_id, text.format(device=f" ({self.device_id})"))

    def _new_client(self, device_id: str | None = None) -> _NioClient:
        crypto = session.crypto_dir(self._state_dir)  # nio needs the store directory before login
        config = AsyncClientConfig(
            encryption_enabled=True,
            store_sync_tokens=True,
            max_timeouts=0,  # connection errors come back to us at once: we retry, and tell the core
            max_limit_exceeded=0,  # 429s come back to us too: we honour retry_after_ms ourselves
            request_timeout=REQUEST_TIMEOUT,
            pickle_key=session.crypto_key(self._state_dir),
        )
        client = _NioClient(self._homeserver, self.settings.user_id, device_id=device_id or "",
                            store_path=str(crypto), config=config)
        client.envelopes = {}
        client.before_sync = self._hook_media_keys
        return client

    # --- the sync loop -----------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Sync until :meth:`close`, then return. A session the homeserver ends is replaced by a new login."""
        self._require_client()
        failures = refusals = 0
        while not self._closing:
            result = await self._sync(timeout_ms=SYNC_TIMEOUT_MS if self._online else 0, full_state=False)
            if self._closing:
                break
            if isinstance(result, SyncResponse):
                failures = refusals = 0
                self._set_fault(None)
                try:
                    await self._process(result)
                except Exception:
                    if self._closing:
                        break
                    # nio has applied the response and moved past it: log, and keep the door alive.
                    log.exception("Matrix: failed to handle a sync response")
                continue
            failure = Failure.of(result)
            if failure.auth:
                self._set_online(False, f"the homeserver refused the door's session ({failure})")
                await self._retrying("log in again", lambda: self._session_refused(failure))
                # A new client knows no rooms yet: the next sync is a first sync again (full state).
                await self._retrying("sync", self._first_sync)
                continue
            if not failure.transient:
                # A refusal that is not about the session (a proxy's 403 or 404 while the homeserver moves):
                # retrying soon will not help; show it and try again slowly.
                refusals += 1
                delay = retry.REFUSED.delay(refusals)
                self._set_online(False, str(failure))
                self._set_fault(f"the homeserver refused the door's sync: {failure}", retry_in=delay)
                await self._pause(delay)
                continue
            failures += 1
            delay = retry.SYNC.delay(failures, failure)
            if delay == 0:
                # One lost request (a long-poll cut by a proxy, a stale pooled connection) is not an outage yet.
                log.debug("Matrix: sync failed (%s), retrying at once", failure)
                continue
            self._set_online(False, str(failure))
            await self._pause(delay)

    async def _sync(self, *, timeout_ms: int, full_state: bool) -> Any:
        """One sync request; returns the response, an ErrorResponse, or the exception it failed with."""
        client = self._require_client()
        bound = timeout_ms / 1000 + SYNC_GRACE

        async def bounded() -> Any:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation.
            async with asyncio.timeout(bound):
                return await client.sync(timeout=timeout_ms, sync_filter=SYNC_FILTER, full_state=full_state or None)

        request = self._request = asyncio.ensure_future(bounded())
        try:
            await asyncio.wait({request})
        except asyncio.CancelledError:
            request.cancel()
            raise
        finally:
            self._request = None
        if request.cancelled():
            return asyncio.CancelledError()
        exc = request.exception()
        return exc if exc is not None else request.result()

    async def _process(self, response: SyncResponse) -> None:
        """Everything one sync brings, in the order the module docstring gives."""
        client = self._require_client()
        envelopes, client.envelopes = client.envelopes, {}
        self._note_creators(response)
        await self._handle_invites(response)
        self._left.update(response.rooms.leave)
        self._left.difference_update(response.rooms.join)
        await self._maintain_keys()
        await self._look_after_rooms()
        self._report_residents()
        await self._refresh_trust(response)
        self._retry_undecrypted(response)
        self._update_facts()
        self._set_online(True)

        batch: list[CallEventReceived] = []
        texts: list[TextMessageReceived] = []
        rtc_events: list[Event] = []
        for room_id, info in response.rooms.join.items():
            raw = envelopes.get(room_id, [])
            for state in getattr(info, "state", ()) or ():  # MatrixRTC memberships from before the timeline
                if (rtc_event := routing.to_rtc_event(room_id, state, now_ms=synced_now_ms())) is not None:
                    rtc_events.append(rtc_event)
            for index, event in enumerate(info.timeline.events):
                envelope = raw[index] if index < len(raw) else None
                if isinstance(event, MegolmEvent):
                    self._remember_undecrypted(room_id, event, envelope)
                    continue
                device = self._sender_device(room_id, event)
                converted = routing.to_core_event(room_id, event, envelope, now_ms=synced_now_ms(), device_id=device,
                                                  room_members=self._room_members(room_id))
                if converted is not None:
                    batch.append(converted)
                elif (rtc_event := routing.to_rtc_event(room_id, event, envelope, now_ms=synced_now_ms(),
                                                        device_id=device)) is not None:
                    rtc_events.append(rtc_event)
                elif (text := routing.to_text_event(room_id, event, envelope, now_ms=synced_now_ms(),
                                                    device_id=device)) is not None:
                    texts.append(text)
            if info.timeline.limited and room_id in self._joined_before:
                log.warning("Matrix: more than %d events arrived in %s since the last sync; older ones were skipped",
                            SYNC_FILTER["room"]["timeline"]["limit"], room_id)
        self._forward(batch)
        for rtc_event in rtc_events:
            if getattr(rtc_event, "sender", None) != self.settings.user_id:
                log.info("Matrix: received %s from %s in %s", type(rtc_event).__name__, rtc_event.sender,
                         rtc_event.room_id)
                self._emit(rtc_event)
        for text in texts:  # possible owner commands; the core decides (sender, room, age)
            if text.sender != self.settings.user_id:
                self._emit(text)
        self._joined_before.update(response.rooms.join)
        self._joined_before.difference_update(response.rooms.leave)
        self._turn.refresh_if_due()

    def _forward(self, batch: list[CallEventReceived]) -> None:
        kept, dropped = routing.drop_superseded_invites(batch)
        for event in dropped:
            log.info("Matrix: not ringing for %s: the call was settled later in the same sync", routing.describe(event))
        for event in kept:
            if event.sender == self.settings.user_id:
                log.debug("Matrix: our own %s came back", event.event_type)
                continue
            level = logging.DEBUG if event.event_type == "m.call.candidates" else logging.INFO
            log.log(level, "Matrix: received %s", routing.describe(event))
            self._emit(event)

    async def _handle_invites(self, response: SyncResponse) -> None:
        """Join the residents' configured (and remembered) rooms when invited, again after each sync until it
        works; accept a resident's invite into a room of two when they have no room with the door; decline every
        other invite."""
        client = self._require_client()
        ours = self._household_rooms()
        for other, info in response.rooms.invite.items():
            if other in ours or other in self._refused_invites or other in self._accepting:
                continue
            inviter = next((e.sender for e in info.invite_state if isinstance(e, InviteMemberEvent)
                            and e.state_key == self.settings.user_id and e.membership == "invite"), None)
            resident, why = self._invite_verdict(inviter, info.invite_state)
            if resident is not None:
                log.info("Matrix: %s invited the door to the room %s; joining it to see whether it is a room of "
                         "just the two of them", resident, other)
                self._accepting[other] = resident
            elif len(self._refused_invites) < MAX_DECLINING:  # a flood: the rest are declined once these are done
                log.info("Matrix: declining the invite to %s (from %s): %s", other, str(inviter or "someone")[:255],
                         why)
                self._leave(other)
        self._start_decliner()
        invited = set(client.invited_rooms) - set(response.rooms.join)
        for room_id in sorted(set(ours) & invited):
            try:
                result: Any = await client.join(room_id)
            except TRANSIENT_EXCEPTIONS as exc:
                result = Failure.of(exc)
            whose = self._describe_room(room_id, ours[room_id])
            if isinstance(result, JoinResponse):
                log.info("Matrix: joined %s %s", whose, room_id)
                self._join_failed.discard(room_id)
            else:
                log.log(logging.DEBUG if room_id in self._join_failed else logging.WARNING,
                        "Matrix: could not join %s %s (will retry): %s", whose, room_id, result)
                self._join_failed.add(room_id)
        for room_id, resident in sorted(self._accepting.items()):
            if room_id not in invited:  # the invite was taken back (or the room joined some other way)
                del self._accepting[room_id]
            else:
                await self._accept_resident_room(room_id, resident)

    def _invite_verdict(self, inviter: str | None, invite_state: list[Any]) -> tuple[str | None, str]:
        """(the resident whose room this invite may be, "") or (None, why it is declined)."""
        if not self._residents:
            return None, f"the door only joins its configured room {self.settings.room_id}"
        resident = next((r for r in self._residents if r.user_id == inviter), None)
        if resident is None or inviter is None:
            return None, "the door only joins its residents' rooms"
        if resident.room_id:
            return None, f"the door joins {inviter} only in their configured room {resident.room_id}"
        if not self._needs_new_room(resident):
            return None, f"{inviter} already has a room with the door ({self._room_of(resident)})"
        members = {e.state_key for e in invite_state if isinstance(e, InviteMemberEvent)
                   and e.membership in ("join", "invite")}
        others = members - {inviter, self.settings.user_id}
        if others:
            return None, (f"the invite shows {len(members)} members; the door joins a room of just itself and "
                          f"{inviter}")
        return inviter, ""

    async def _accept_resident_room(self, room_id: str, user_id: str) -> None:
        """Join the room ``user_id`` invited the door to, check that it holds just the two of them, and make it
        their room (leaving the room the door made, which they never joined); otherwise leave it again."""
        client = self._require_client()
        resident = next(r for r in self._residents if r.user_id == user_id)
        if not self._needs_new_room(resident):  # a room of theirs was accepted meanwhile (two invites at once)
            del self._accepting[room_id]
            log.info("Matrix: declining the invite to %s (from %s): they have a room with the door meanwhile (%s)",
                     room_id, user_id, self._room_of(resident))
            self._leave(room_id)
            self._start_decliner()
            return
        try:
            result: Any = await client.join(room_id)
        except TRANSIENT_EXCEPTIONS as exc:
            result = Failure.of(exc)
        if not isinstance(result, JoinResponse):
            log.log(logging.DEBUG if room_id in self._join_failed else logging.WARNING,
                    "Matrix: could not join the room %s that %s invited the door to (will retry): %s", room_id,
                    user_id, result)
            self._join_failed.add(room_id)
            return
        self._join_failed.discard(room_id)
        del self._accepting[room_id]
        problem = await self._room_of_two_problem(room_id, user_id)
        if problem is None and not self._needs_new_room(resident):
            problem = f"{user_id} has a room with the door meanwhile ({self._room_of(resident)})"
        if problem is not None:
            log.info("Matrix: leaving the room %s that %s invited the door to: %s", room_id, user_id, problem)
            self._leave(room_id)
            self._start_decliner()
            return
        old = self._known.get(user_id)
        self._remember(user_id, KnownRoom(room_id, made_by_door=False))
        self._accepted[room_id] = time.monotonic()
        self._left.discard(room_id)
        log.info("Matrix: the room %s that %s invited the door to is their room with the door now", room_id, user_id)
        if old is not None and old.room_id != room_id:
            await self._abandon(old, user_id, f"{user_id} invited the door to their own room {room_id}")
        self._report_residents()

    async def _room_of_two_problem(self, room_id: str, user_id: str) -> str | None:
        """Why the room (just joined) is not a room of just the door and ``user_id``, or None when it is (or its
        state cannot be read now: the invite showed no one else, and the core checks the members it learns)."""
        try:
            status, body = await request_json(self._require_client(), "GET",
                                              f"/_matrix/client/v3/rooms/{_quote(room_id)}/state",
                                              timeout=REQUEST_TIMEOUT)
        except TRANSIENT_EXCEPTIONS as exc:
            status, body = None, str(exc)
        if status != 200 or not isinstance(body, list):
            log.warning("Matrix: could not read the state of the room %s (%s); going by its invite", room_id,
                        status or body)
            return None
        members: dict[str, str] = {}
        join_rule = room_type = None
        for event in body:
            if not isinstance(event, Mapping) or not isinstance(event.get("content"), Mapping):
                continue
            kind, key, content = event.get("type"), event.get("state_key"), event["content"]
            if kind == "m.room.member" and isinstance(key, str) and content.get("membership") in ("join", "invite"):
                members[key] = content["membership"]
            elif kind == "m.room.join_rules" and key == "":
                join_rule = content.get("join_rule")
            elif kind == "m.room.create" and key == "":
                room_type = content.get("type")
        others = set(members) - {user_id, self.settings.user_id}
        if others:
            return f"it has {len(members)} members (joined or invited), not just the door and {user_id}"
        if members.get(user_id) != "join":
            return f"{user_id} is not in it"
        if join_rule == "public":
            return "it is public; calls need a private room"
        if room_type is not None:
            return "it is a space, not a room"
        return None

    async def _decline_invites(self) -> None:
        """Leave and forget rooms the door was invited to but will not join, one at a time beside the sync loop
        (a flood of invites never holds up a sync), so they stop coming back in every full sync."""
        client = self._require_client()
        while not self._declining.empty() and not self._closing:
            other = self._declining.get_nowait()
            try:
                left = await client.room_leave(other)
                forgot = await client.room_forget(other) if not isinstance(left, ErrorResponse) else left
            except TRANSIENT_EXCEPTIONS as exc:
                forgot = exc
            except LocalProtocolError as exc:
                forgot = exc
            if isinstance(forgot, (ErrorResponse, BaseException)):
                log.debug("Matrix: could not decline the invite to %s (will try after a later sync): %s", other,
                          forgot)
            self._refused_invites.discard(other)  # seen again in a later sync if still there: tried again

    async def _maintain_keys(self) -> None:
        """What nio's sync_forever does between syncs: keys up, keys of others down, one-time keys claimed."""
        client = self._require_client()
        steps: list[tuple[str, Callable[[], Any]]] = [("send to-device messages", client.send_to_device_messages)]
        if client.should_upload_keys:
            steps.append(("upload keys", client.keys_upload))
        if client.should_query_keys:
            steps.append(("query keys", client.keys_query))
        if client.should_claim_keys:
            steps.append(("claim keys", lambda: client.keys_claim(client.get_users_for_key_claiming())))
        for what, step in steps:
            try:
                result = await step()
            except TRANSIENT_EXCEPTIONS as exc:
                result = exc
            except LocalProtocolError as exc:
                log.debug("Matrix: could not %s: %s", what, exc)
                continue
            if isinstance(result, (ErrorResponse, BaseException)):
                log.warning("Matrix: could not %s (will retry after the next sync): %s", what, Failure.of(result))

    def _update_facts(self) -> None:
        client = self._require_client()
        ours = self._household_rooms()
        for room_id in sorted(set(client.rooms) | set(ours)):
            room = client.rooms.get(room_id)
            facts = routing.room_facts(room_id, room, joined=room_id not in self._left,
                                       own_user_id=self.settings.user_id, creators=self._creators.get(room_id))
            if self._facts.get(room_id) != facts:
                self._facts[room_id] = facts
                if room_id in ours:
                    whose = self._describe_room(room_id, ours[room_id])
                    if self.settings.user_id not in facts.joined:
                        log.info("Matrix: the door is not in %s %s (yet)", whose, room_id)
                    else:
                        log.info("Matrix: %s %s has %d joined members (%s), join rule %s, %s", whose, room_id,
                                 len(facts.joined), ", ".join(sorted(facts.joined)), facts.join_rule,
                                 "encrypted" if facts.encrypted else "not encrypted")
                        if not facts.encrypted and room_id not in self._warned_unencrypted_rooms:
                            self._warned_unencrypted_rooms.add(room_id)
                            log.warning("Matrix: %s", UNENCRYPTED_WARNING)
                self._emit(facts)

    def _describe_room(self, room_id: str, user_id: str | None) -> str:
        """How the log names a resident's room: "the configured room (of X)" or "the room of X"."""
        configured = room_id in self.settings.configured_rooms()
        return ("the configured room" if configured else "the room") + (f" of {user_id}" if user_id else "")

    # --- the residents' rooms (intercom.matrix.rooms) -----------------------------------------------------------

    def _room_of(self, resident: ResidentRoom) -> str | None:
        """The resident's room: configured, or remembered; None while they have none."""
        if resident.room_id:
            return resident.room_id
        known = self._known.get(resident.user_id)
        return known.room_id if known is not None else None

    def _household_rooms(self) -> dict[str, str | None]:
        """Every resident's room → the resident (the adapter alone: its configured room → None)."""
        found = self.settings.configured_rooms()
        for resident in self._residents:
            room_id = self._room_of(resident)
            if room_id is not None:
                found.setdefault(room_id, resident.user_id)
        return found

    def _rooms_by_resident(self) -> dict[str, str | None]:
        return {r.user_id: self._room_of(r) for r in self._residents}

    def _member(self, room_id: str, user_id: str) -> str | None:
        """``user_id``'s membership in a room the door is in, as nio knows it: "join", "invite", or None (not a
        member, or the door is not in the room or does not know it yet)."""
        if not self._door_in(room_id):
            return None
        user = self._require_client().rooms[room_id].users.get(user_id)
        if user is None:
            return None
        return "invite" if getattr(user, "invited", False) else "join"

    def _just_made(self, room_id: str) -> bool:
        """Whether the door made this room so recently that the syncs may not have brought its invite yet (a sync
        can carry the new room before the homeserver has written the invite into it)."""
        made = self._made.get(room_id)
        if made is None:
            return False
        if time.monotonic() - made > JUST_MADE or any(self._member(room_id, r.user_id) for r in self._residents):
            del self._made[room_id]
            return False
        return True

    def _door_in(self, room_id: str) -> bool:
        """Whether the door is in the room as far as the syncs told (nio lists a room it just made before any
        sync brought its members)."""
        room = self._require_client().rooms.get(room_id)
        return room is not None and room_id not in self._left and self.settings.user_id in room.users

    def _needs_new_room(self, resident: ResidentRoom) -> bool:
        """Whether a resident without a configured room would take a room they invite the door to: they have no
        room with the door, or are not in it, or the door is not, or someone else is in it too."""
        if resident.room_id:
            return False
        known = self._known.get(resident.user_id)
        if known is None:
            return True
        accepted = self._accepted.get(known.room_id)
        if accepted is not None and not self._door_in(known.room_id) and time.monotonic() - accepted < JUST_MADE:
            return False  # accepted moments ago: no sync has brought its members yet
        room = self._require_client().rooms.get(known.room_id)
        return (not self._door_in(known.room_id) or self._member(known.room_id, resident.user_id) != "join"
                or room is None or set(room.users) != {resident.user_id, self.settings.user_id})

    def _remember(self, user_id: str, known: KnownRoom) -> None:
        self._known[user_id] = known
        try:
            rooms.save_rooms(self._state_dir, self._known)
        except OSError as exc:  # remembered in memory; a restart finds the room again by its members
            log.error("Matrix: could not save the residents' rooms: %s", exc)

    def _waiting(self, resident: ResidentRoom, room_id: str | None) -> str:
        """What the door waits for before it can call this resident ("" when nothing: the core checks the room's
        members itself)."""
        user_id = resident.user_id
        if resident.room_id:
            return ""
        if room_id is None:
            return self._make_problem.get(user_id) or f"the door is making a room with {user_id}"
        known = self._known[user_id]
        if not known.made_by_door or room_id in self._left:
            return ""
        member = self._member(room_id, user_id)
        if member is not None:
            self._made.pop(room_id, None)  # a sync showed the invite: from now on, no member is no member
        elif self._just_made(room_id):
            member = "invite"  # the syncs have not brought the invite yet
        return f"waiting for {user_id} to join the room the door made" if member == "invite" else ""

    def _report_residents(self) -> None:
        """Tell the core each resident's room and what the door waits for, when either changed (all of them at
        the first sync)."""
        if self._client is None:
            return
        for resident in self._residents:
            room_id = self._room_of(resident)
            state = (room_id, self._waiting(resident, room_id))
            before = self._reported.get(resident.user_id)
            if before == state:
                continue
            self._reported[resident.user_id] = state
            if state[1]:
                log.info("Matrix: %s%s", state[1], f" ({room_id})" if room_id else "")
            elif (before is not None and before[0] == room_id and before[1] and room_id is not None
                  and self._member(room_id, resident.user_id) == "join"):
                log.info("Matrix: %s joined the room %s the door made", resident.user_id, room_id)
            if self._trust is not None and room_id is not None and not state[1]:
                self._trust.mark_stale(resident.user_id)  # a resident who joined now shares a room with the door
            self._emit(ResidentRoomChanged(user_id=resident.user_id, room_id=room_id, waiting=state[1]))

    async def _look_after_rooms(self) -> None:
        """After each sync (module docstring): find lost rooms, leave empty ones, invite again, make missing ones."""
        if not self._residents:
            return
        try:
            if self._making is None:  # a room being made may already be in this sync, before room_create returned
                await self._adopt_rooms()
                await self._leave_stray_rooms()
            await self._invite_again()
        except (asyncio.CancelledError, MatrixError):
            raise
        except Exception:  # the rest of the sync (facts, calls) must go on
            log.exception("Matrix: looking after the residents' rooms failed; trying again after the next sync")
        if self._without_room() and (self._maker is None or self._maker.done()):
            self._maker = asyncio.ensure_future(self._make_rooms())

    def _without_room(self) -> list[ResidentRoom]:
        return [r for r in self._residents if not r.room_id and r.user_id not in self._known]

    async def _adopt_rooms(self) -> None:
        """A resident without a known room whom the door shares a room of just the two of them with: that is their
        room (it was made or accepted, but not remembered)."""
        client, me = self._require_client(), self.settings.user_id
        ours = self._household_rooms()
        for resident in self._without_room():
            user_id = resident.user_id
            candidates = sorted((self._member(room_id, user_id) != "join", room_id)
                                for room_id, room in client.rooms.items()
                                if room_id not in ours and room_id not in self._refused_invites
                                and self._door_in(room_id) and set(room.users) == {me, user_id})
            if not candidates:
                continue
            room_id = candidates[0][1]
            made_by_door = await self._made_by_door(room_id, fallback=self._member(room_id, user_id) != "join")
            self._remember(user_id, KnownRoom(room_id, made_by_door=made_by_door))
            ours[room_id] = user_id
            log.warning("Matrix: the room %s holds just the door and %s; it is their room with the door again "
                        "(it was not remembered)", room_id, user_id)

    async def _made_by_door(self, room_id: str, *, fallback: bool) -> bool:
        """Whether the door created the room (its ``m.room.create`` is the door's); ``fallback`` when that cannot
        be read now."""
        try:
            status, body = await request_json(self._require_client(), "GET",
                                              f"/_matrix/client/v3/rooms/{_quote(room_id)}/state",
                                              timeout=REQUEST_TIMEOUT)
        except TRANSIENT_EXCEPTIONS:
            return fallback
        if status != 200 or not isinstance(body, list):
            return fallback
        create = next((e for e in body if isinstance(e, Mapping) and e.get("type") == "m.room.create"
                       and e.get("state_key") == ""), None)
        return fallback if create is None else create.get("sender") == self.settings.user_id

    async def _leave_stray_rooms(self) -> None:
        """Leave (and forget) a room that is no resident's where the door is alone, or where the only other member
        is a resident invited to it who has another room with the door: what a room creation leaves behind when
        the homeserver made the room but failed to answer (an invite it could not deliver, a lost connection)."""
        client, me = self._require_client(), self.settings.user_id
        ours = self._household_rooms()
        residents = {r.user_id: r for r in self._residents}
        for room_id, room in list(client.rooms.items()):
            if (room_id in ours or room_id in self._refused_invites or not self._door_in(room_id)
                    or len(self._refused_invites) >= MAX_DECLINING):
                continue
            others = set(room.users) - {me}
            if not others:
                log.info("Matrix: leaving the room %s: nobody else is in it and it is no resident's room", room_id)
                self._leave(room_id)
            elif len(others) == 1 and (other := next(iter(others))) in residents and me in room.users \
                    and self._room_of(residents[other]) is not None and self._member(room_id, other) == "invite":
                await self._abandon(KnownRoom(room_id, made_by_door=True), other,
                                    f"{other} has another room with the door")
        self._start_decliner()

    async def _invite_again(self) -> None:
        """Invite a resident who left the room the door made to it again, at most once an hour (across restarts
        too: the time of the last invite is in ``rooms.json``)."""
        client = self._require_client()
        now, wall = time.monotonic(), time.time()
        for resident in self._residents:
            user_id = resident.user_id
            known = None if resident.room_id else self._known.get(user_id)
            if (known is None or not known.made_by_door or not self._door_in(known.room_id)
                    or self._member(known.room_id, user_id) is not None or self._just_made(known.room_id)):
                continue
            last = self._reinvited.get(user_id)
            if (last is not None and now - last < REINVITE_INTERVAL) or (
                    known.invited_at is not None and abs(wall - known.invited_at) < REINVITE_INTERVAL):
                continue
            self._reinvited[user_id] = now
            try:
                result: Any = await client.room_invite(known.room_id, user_id)
            except TRANSIENT_EXCEPTIONS as exc:
                result = Failure.of(exc)
            if isinstance(result, RoomInviteResponse):
                log.info("Matrix: %s left the room %s the door made; invited them again (at most once an hour)",
                         user_id, known.room_id)
                self._remember(user_id, KnownRoom(known.room_id, made_by_door=True, invited_at=wall))
            else:
                log.warning("Matrix: %s left the room %s the door made; could not invite them again (next try in "
                            "an hour): %s", user_id, known.room_id, result)

    async def _make_rooms(self) -> None:
        """Make a room for each resident who has none, one at a time, beside the sync loop; a failure is retried
        with backoff (:data:`~intercom.matrix.retry.MAKE_ROOM`), the core told what the door waits for. Nothing
        here ends the door: an unexpected error is logged, and the next sync starts this again."""
        try:
            await self._make_rooms_until_done()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("Matrix: making the residents' rooms failed; trying again after the next sync")

    async def _make_rooms_until_done(self) -> None:
        while not self._closing:
            todo = self._without_room()
            if not todo:
                return
            now = time.monotonic()
            ready = [r for r in todo if self._make_next.get(r.user_id, 0.0) <= now]
            if not ready:
                await self._pause(min(self._make_next.get(r.user_id, now) for r in todo) - now)
                continue
            user_id = ready[0].user_id
            self._making = user_id
            try:
                result = await self._create_room(user_id)
            finally:
                self._making = None
            if self._closing:
                return
            if isinstance(result, str):
                self._make_failures.pop(user_id, None)
                self._make_next.pop(user_id, None)
                self._make_problem.pop(user_id, None)
                await self._room_made(user_id, result)
                continue
            failures = self._make_failures[user_id] = self._make_failures.get(user_id, 0) + 1
            delay = retry.MAKE_ROOM.delay(failures, result)
            self._make_next[user_id] = time.monotonic() + delay
            self._make_problem[user_id] = (f"the door could not make a room with {user_id} ({str(result)[:120]}); "
                                           f"it tries again in {delay:.0f} s")
            log.log(logging.WARNING if failures == 1 or delay >= retry.MAKE_ROOM.longest * 0.9 else logging.INFO,
                    "Matrix: could not make a room with %s (attempt %d): %s; trying again in %.1f s", user_id,
                    failures, result, delay)
            self._report_residents()

    async def _create_room(self, user_id: str) -> str | Failure:
        """One ``room_create`` for ``user_id``: the new room's ID, or why it failed."""
        client = self._require_client()
        log.info("Matrix: making a room with %s (the config names none and they have not invited the door)",
                 user_id)
        try:
            version = await self._default_room_version()
            started = time.monotonic()
            result: Any = await client.room_create(**rooms.create_room_request(
                self.settings.user_id, user_id, name=self.settings.room_name, encrypted=self.settings.encrypt_rooms,
                room_version=version))
        except TRANSIENT_EXCEPTIONS as exc:
            return Failure.of(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never let room making end the door
            log.exception("Matrix: making a room with %s failed", user_id)
            return Failure(f"{type(exc).__name__}: {exc}", transient=True)
        if not isinstance(result, RoomCreateResponse):
            return Failure.of(result)
        log.info("Matrix: made the room %s (%s, room version %s) with %s invited, in %.0f ms", result.room_id,
                 "encrypted" if self.settings.encrypt_rooms else "not encrypted", version or "default", user_id,
                 (time.monotonic() - started) * 1000)
        return result.room_id

    async def _default_room_version(self) -> str | None:
        """The homeserver's default room version (asked once: rooms of version 12 and later must not list their
        creator in the power levels), or None when it does not say. Raises what a request without an answer (or
        with a 5xx) raises, so that the room is made later."""
        if self._room_version is None:
            status, body = await request_json(self._require_client(), "GET", "/_matrix/client/v3/capabilities",
                                              timeout=REQUEST_TIMEOUT)
            if status >= 500 or status == 429:
                raise OSError(f"HTTP {status} asking for the homeserver's capabilities")
            version = None
            capabilities = body.get("capabilities") if status == 200 and isinstance(body, Mapping) else None
            versions = capabilities.get("m.room_versions") if isinstance(capabilities, Mapping) else None
            default = versions.get("default") if isinstance(versions, Mapping) else None
            if isinstance(default, str) and 0 < len(default) <= 64:
                version = default
            self._room_version = (version,)
        return self._room_version[0]

    async def _room_made(self, user_id: str, room_id: str) -> None:
        """Remember the room made for ``user_id``, unless they got a room meanwhile (their invite was accepted
        while the room was being made): then the new room is given up."""
        resident = next((r for r in self._residents if r.user_id == user_id), None)
        if resident is None or resident.room_id or user_id in self._known:
            await self._abandon(KnownRoom(room_id, made_by_door=True), user_id,
                                f"{user_id} has a room with the door meanwhile")
            return
        self._remember(user_id, KnownRoom(room_id, made_by_door=True, invited_at=time.time()))
        self._reinvited[user_id] = self._made[room_id] = time.monotonic()
        self._report_residents()

    async def _abandon(self, known: KnownRoom, user_id: str, why: str) -> None:
        """Leave (and forget) a room the door no longer uses with ``user_id``; in a room the door made, take back
        its invite first, so that the resident's app does not keep offering a room nobody is in."""
        client = self._require_client()
        if known.made_by_door and self._member(known.room_id, user_id) != "join":
            try:
                await client.room_kick(known.room_id, user_id, reason=why)
            except TRANSIENT_EXCEPTIONS as exc:
                log.debug("Matrix: could not take back the invite of %s to %s: %s", user_id, known.room_id, exc)
        log.info("Matrix: leaving the room %s%s: %s", known.room_id, " the door made" if known.made_by_door else "",
                 why)
        self._leave(known.room_id)
        self._start_decliner()

    def _leave(self, room_id: str) -> None:
        """Leave and forget a room beside the sync loop (:meth:`_decline_invites`)."""
        if room_id not in self._refused_invites:
            self._refused_invites.add(room_id)
            self._declining.put_nowait(room_id)

    def _start_decliner(self) -> None:
        if not self._declining.empty() and (self._decliner is None or self._decliner.done()):
            self._decliner = asyncio.ensure_future(self._decline_invites())

    # --- trust in the residents' devices (intercom.matrix.trust) ------------------------------------------------

    async def _refresh_trust(self, response: SyncResponse) -> None:
        """Read the residents' keys when they may have changed, tell the core, and keep nio's device flags right."""
        trust, client = self._trust, self._require_client()
        if trust is None:
            return
        trust.mark_stale(*getattr(getattr(response, "device_list", None), "changed", ()))
        if trust.stale:
            for user_id, observed in (await trust.read(client)).items():
                self._emit(OwnerKeysObserved(keys=observed, user_id=user_id))
        # Devices nio learnt of in this sync: keys only if trusted.
        trust.classify(client, [room for room in self._rooms_by_resident().values() if room])

    def _sender_device(self, room_id: str, event: Any) -> str | None:
        if self._trust is None or not getattr(event, "decrypted", False):
            return None
        return self._trust.sender_device(self._require_client(), room_id, event)

    def _room_members(self, room_id: str) -> int | None:
        """Joined and invited members of a room, as nio knows them (None when it does not know the room)."""
        room = self._require_client().rooms.get(room_id)
        if room is None:
            return None
        return len(room.users)  # nio keeps invited members in users too

    def apply_trust(self, update: TrustUpdated) -> None:
        """Carry out the core's verdict about one resident (``update.user_id``; empty: the first): keep their pins,
        and give room keys to the trusted devices of the residents only."""
        if self._trust is not None and self._client is not None:
            self._trust.apply(self._client, update, self._rooms_by_resident())

    # --- encrypted events that could not be decrypted (yet) ----------------------------------------------------

    def _remember_undecrypted(self, room_id: str, event: MegolmEvent, envelope: Mapping[str, Any] | None) -> None:
        log.warning("Matrix: could not decrypt event %s from %s in %s (session %s); will retry when keys arrive",
                    event.event_id, event.sender, room_id, event.session_id)
        self._undecrypted.append(_Undecrypted(room_id, event, envelope or event.source, time.monotonic()))

    def _retry_undecrypted(self, response: SyncResponse) -> None:
        if not self._undecrypted or not response.to_device_events:
            return
        client = self._require_client()
        now = time.monotonic()
        waiting, self._undecrypted = self._undecrypted, deque(maxlen=UNDECRYPTED_KEEP)
        late: list[CallEventReceived] = []
        for item in waiting:
            if now - item.received > UNDECRYPTED_MAX_AGE:
                continue
            try:
                decrypted = client.decrypt_event(item.event)
            except Exception:  # nio raises EncryptionError and friends when the key is still missing
                self._undecrypted.append(item)
                continue
            converted = routing.to_core_event(item.room_id, decrypted, item.envelope, now_ms=synced_now_ms(),
                                              device_id=self._sender_device(item.room_id, decrypted),
                                              room_members=self._room_members(item.room_id))
            if converted is not None:
                held = int((now - item.received) * 1000)
                age = None if converted.age_ms is None else converted.age_ms + held
                late.append(dataclasses.replace(converted, age_ms=age))
                log.info("Matrix: decrypted event %s late, after its room key arrived", item.event.event_id)
        self._forward(late)

    # --- sending -----------------------------------------------------------------------------------------------

    async def send(self, action: SendCallEvent) -> bool:
        """Send one call event (encrypted if the room is). Sends are made one at a time, in call order.

        Transient failures are retried as :data:`retry.SEND <intercom.matrix.retry.SEND>` says, with the same
        transaction ID (so the homeserver stores the event once); a 429's ``retry_after_ms`` is honoured. Returns
        whether the homeserver accepted the event; never raises.
        """
        return await self.send_event(action.room_id, action.event_type, action.content) is not None

    def _send_lock(self, room_id: str) -> asyncio.Lock:
        lock = self._send_locks.get(room_id)
        if lock is None:
            if len(self._send_locks) >= 128:  # forget the locks of rooms not being sent to
                for other in [r for r, held in self._send_locks.items() if not held.locked()]:
                    del self._send_locks[other]
            lock = self._send_locks[room_id] = asyncio.Lock()
        return lock

    async def send_event(self, room_id: str, event_type: str, content: Mapping[str, Any]) -> str | None:
        """Send any room event as :meth:`send` does; returns its event ID, or None if it could not be sent."""
        action = SendCallEvent(room_id=room_id, event_type=event_type, content=content)
        client = self._client
        call_id = action.content.get("call_id")
        what = f"{action.event_type}{f' (call {str(call_id)[:64]})' if call_id else ''} to {action.room_id}"
        if client is None or self._closing:
            log.error("Matrix: cannot send %s: the adapter is not running", what)
            return None
        loop = asyncio.get_running_loop()
        started = loop.time()
        waited = 0.0  # time spent sleeping between attempts (what the budget is mostly made of)
        txn = uuid.uuid4().hex
        attempt = 0
        async with self._send_lock(room_id):
            while True:
                attempt += 1
                try:
                    # Trust off (tests of the adapter alone): keys to every device, as nio does by default.
                    result: Any = await client.room_send(action.room_id, action.event_type, dict(action.content),
                                                         tx_id=txn, ignore_unverified_devices=self._trust is None)
                except TRANSIENT_EXCEPTIONS as exc:
                    result = exc
                except OlmUnverifiedDeviceError as exc:  # a device nio learnt of since the last classify
                    assert self._trust is not None
                    self._trust.classify(client, [room for room in self._rooms_by_resident().values() if room])
                    if attempt >= 3:
                        log.error("Matrix: could not send %s: device %s cannot be classified", what,
                                  getattr(exc.device, "id", "?"))
                        return None
                    continue
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # nio's LocalProtocolError (unknown room), encryption trouble, ...
                    log.error("Matrix: could not send %s: %s: %s", what, type(exc).__name__, exc)
                    return None
                if isinstance(result, RoomSendResponse):
                    level = logging.DEBUG if action.event_type == "m.call.candidates" else logging.INFO
                    log.log(level, "Matrix: sent %s as %s", what, result.event_id)
                    return result.event_id
                failure = Failure.of(result)
                if not failure.transient:
                    log.error("Matrix: the homeserver refused %s: %s", what, failure)
                    return None
                delay = retry.SEND.delay(attempt, failure)
                spent = max(loop.time() - started, waited)
                if retry.SEND.gives_up(attempt, spent, delay) or self._closing:
                    log.error("Matrix: gave up sending %s after %d attempts: %s", what, attempt, failure)
                    return None
                log.log(logging.WARNING if attempt == 1 else logging.DEBUG,
                        "Matrix: sending %s failed (%s); retrying in %.2f s", what, failure, delay)
                await retry.sleep(delay)
                waited += delay

    async def send_notice(self, room_id: str, text: str, *, reply_to: str | None = None) -> bool:
        """Post a short ``m.notice`` (acknowledgements, refusals), optionally as a reply; retried like call events."""
        content: dict[str, Any] = {"msgtype": "m.notice", "body": text}
        if reply_to is not None:
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
        return await self.send_event(room_id, "m.room.message", content) is not None

    async def upload(self, data: bytes, content_type: str, filename: str, *, encrypt: bool) -> tuple[str, dict | None]:
        """Upload a file to the homeserver's media repository; encrypted (nio's attachment encryption) when asked.

        Returns the ``mxc://`` URI and, for an encrypted upload, the keys a ``file`` object needs. Raises
        :class:`MatrixError` when the upload fails.
        """
        client = self._require_client()
        try:
            response, keys = await client.upload(io.BytesIO(data), content_type=content_type, filename=filename,
                                                  encrypt=encrypt, filesize=len(data))
        except TRANSIENT_EXCEPTIONS as exc:
            raise MatrixError(f"uploading {filename} failed: {exc}") from exc
        if not isinstance(response, UploadResponse):
            raise MatrixError(f"uploading {filename} failed: {response}")
        return response.content_uri, keys

    def _note_creators(self, response: SyncResponse) -> None:
        """Who created each room (the sender and ``additional_creators`` of ``m.room.create``): in room version 12
        they have every power without being listed in the power levels, which nio does not know."""
        for room_id, info in response.rooms.join.items():
            for event in [*(getattr(info, "state", ()) or ()), *info.timeline.events]:
                source = getattr(event, "source", None)
                if isinstance(source, Mapping) and source.get("type") == "m.room.create":
                    content = source.get("content") if isinstance(source.get("content"), Mapping) else {}
                    extra = content.get("additional_creators")
                    self._creators[room_id] = frozenset(
                        [str(source.get("sender"))] + ([str(u) for u in extra] if isinstance(extra, list) else []))

    # --- MatrixRTC media keys ------------------------------------------------------------------------------------

    def _hook_media_keys(self, client: Any) -> None:
        trust = self._trust
        if trust is None:
            return  # (tests of the adapter alone: no checked devices, so no media key could count)
        rtckeys.install(client, trust.olm_sender_device, self._media_key)

    def _media_key(self, key: MediaKey) -> None:
        log.info("MatrixRTC: media key %d of %s for %s", key.index, key.identity, key.room_id)
        if self.on_media_key is not None:
            self.on_media_key(key)

    async def send_media_key(self, room_id: str, user_id: str, key: bytes, index: int, *,
                             only: Iterable[str] | None = None) -> list[str]:
        """Send the door's media key for ``room_id``'s call to ``user_id``'s devices that the trust rules give keys
        to (and, with ``only``, are among those); returns the devices reached. Never raises."""
        client, trust = self._client, self._trust
        if client is None or trust is None or client.olm is None:
            return []
        identity = f"{client.user_id}:{client.device_id}"
        try:
            devices = trust.key_holders(user_id) if only is None else trust.key_holders(user_id) & set(only)
            return await rtckeys.send(client, user_id, devices,
                                      rtckeys.key_content(room_id, identity, client.device_id, key, index))
        except Exception as exc:
            log.warning("MatrixRTC: could not send the door's media key to %s: %s: %s", user_id,
                        type(exc).__name__, exc)
            return []

    def room_is_encrypted(self, room_id: str) -> bool:
        room = self._client.rooms.get(room_id) if self._client is not None else None
        return bool(room is not None and room.encrypted)

    # --- TURN --------------------------------------------------------------------------------------------------

    async def turn_servers(self) -> list[TurnServer]:
        """The ICE servers for the next call: the homeserver's TURN URIs (UDP first) with fresh credentials, or
        ``[]`` when it offers none. Cached until shortly before the credentials expire; never raises."""
        return await self._turn.servers()

    # --- shutdown ----------------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop the sync loop (:meth:`run` returns) and close the connection. Idempotent."""
        self._closing = True
        self._closed.set()
        if self._request is not None and not self._request.done():
            self._request.cancel()
        await self._turn.close()
        await self.rtc.close()
        for task in (self._decliner, self._maker):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._client is not None:
            await self._client.close()

    # --- helpers -----------------------------------------------------------------------------------------------

    def _require_client(self) -> _NioClient:
        if self._client is None:
            raise MatrixError("the Matrix adapter is not started")
        return self._client

    def _check_open(self) -> None:
        if self._closing:
            raise MatrixError("the Matrix adapter was closed")

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once on close."""
        if seconds > 0:
            try:
                async with asyncio.timeout(seconds):  # not wait_for: it can swallow a cancellation of run()
                    await self._closed.wait()
            except TimeoutError:
                pass

    def _set_online(self, online: bool, why: str = "") -> None:
        if online == self._online:
            return
        previous, self._online = self._online, online
        if online:
            if previous is False and self._offline_since is not None:
                log.info("Matrix: homeserver %s is back (offline for %.1f s)", self.settings.homeserver,
                         time.monotonic() - self._offline_since)
            else:
                log.info("Matrix: connected to %s as %s (device %s)", self.settings.homeserver, self.settings.user_id,
                         self.device_id)
            self._offline_since = None
        else:
            self._offline_since = time.monotonic()
            log.warning("Matrix: offline, the homeserver %s cannot be reached (%s); retrying", self.settings.homeserver,
                        why)
        self._emit(HomeserverConnectionChanged(online=online))

    def _set_fault(self, fault: str | None, *, retry_in: float = 0.0) -> None:
        """What the door cannot fix by itself on the Matrix side (the core shows the error pattern and ``intercom
        status`` the text), or None once it works again. Logged once per distinct fault."""
        if fault == self._fault:
            if fault is not None:
                log.debug("Matrix: still refused (%s); next try in %.0f s", fault, retry_in)
            return
        self._fault = fault
        if fault is None:
            log.info("Matrix: the homeserver accepts the door again")
        else:
            log.error("Matrix: %s (the door tries again in %.0f s, then less often, up to every %.0f min)", fault,
                      retry_in, retry.REFUSED.longest / 60)
        self._emit(FaultChanged(fault=None if fault is None else f"Matrix: {fault}", source="matrix"))

    def _emit(self, event: Event) -> None:
        try:
            self._on_event(event)
        except Exception:
            log.exception("Matrix: the event handler failed on %s", type(event).__name__)
