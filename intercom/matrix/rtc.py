"""The Matrix side of MatrixRTC (Element Call) calls: the focus, the LiveKit token, the door's membership.

- **Focus discovery**: the homeserver's ``GET /_matrix/client/unstable/org.matrix.msc4143/rtc/transports``, else
  ``org.matrix.msc4143.rtc_foci`` in ``/.well-known/matrix/client``. A focus is a LiveKit token service
  (``livekit_service_url``).
- **Token** (MSC4195's ``/sfu/get``): an OpenID token from the homeserver, exchanged at the focus for the LiveKit
  URL and a JWT for the participant ``@door:server:DEVICE``.
- **Membership**: an ``org.matrix.msc3401.call.member`` state event under ``_@door:server_DEVICE_m.call``. Before
  it, a delayed leave (MSC4140: the same state key, content ``{}``) is scheduled and then renewed while the door
  stays, so a door that crashes or loses power leaves no ghost member: the homeserver sends the leave itself
  once the door stops renewing it. Leaving sends the delayed leave at once.
- **Ringing**: ``org.matrix.msc4075.rtc.notification`` (``notification_type: "ring"``) mentioning the resident,
  referencing the membership event; sent like any room event (encrypted in an encrypted room).

Every coroutine raises only :class:`~intercom.matrix.errors.MatrixError` with what failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp

from intercom.core import rtc

from .errors import MatrixError
from .retry import TRANSIENT_EXCEPTIONS, request_json

log = logging.getLogger(__name__)

TRANSPORTS_PATH = "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports"
WELL_KNOWN_PATH = "/.well-known/matrix/client"
WELL_KNOWN_FOCI = "org.matrix.msc4143.rtc_foci"
DELAY_PARAMETER = "org.matrix.msc4140.delay"
DELAYED_EVENTS_PATH = "/_matrix/client/unstable/org.matrix.msc4140/delayed_events"
#: The room's call slot (MSC4143): js-sdk 43 rings only for a ring in an open slot.
SLOT = "org.matrix.msc4143.rtc.slot"
SLOT_ID = "m.call#ROOM"
#: The delayed leave fires this long after the door stops renewing it (js-sdk uses 8 s; a Pi on Wi-Fi gets more).
LEAVE_DELAY_MS = 20_000
#: The door's membership lives this long unless renewed (js-sdk's default: 4 hours; a call is shorter).
MEMBERSHIP_EXPIRES_MS = 4 * 3600 * 1000
#: Bound on one request to the focus or the homeserver (s).
REQUEST_TIMEOUT = 10.0


def _room(room_id: str) -> str:
    return quote(room_id, safe="")


def membership_content(user_id: str, device_id: str, room_id: str, focus_url: str, *,
                       intent: str = "video") -> dict[str, Any]:
    """The door's membership of a room's call, as js-sdk's session membership form has it (``membershipID``: the
    LiveKit identity, which media keys name)."""
    return {
        "application": rtc.APPLICATION, "call_id": "", "scope": "m.room", "device_id": device_id,
        "membershipID": f"{user_id}:{device_id}",
        "focus_active": {"type": "livekit", "focus_selection": "oldest_membership"},
        "foci_preferred": [{"type": "livekit", "livekit_service_url": focus_url, "livekit_alias": room_id}],
        "created_ts": int(time.time() * 1000), "expires": MEMBERSHIP_EXPIRES_MS, "m.call.intent": intent,
    }


def ring_content(user_id: str, membership_event_id: str | None, lifetime_ms: int,
                 *, intent: str = "video") -> dict[str, Any]:
    """The ring (MSC4075) for ``user_id``."""
    content: dict[str, Any] = {
        "notification_type": "ring", "sender_ts": int(time.time() * 1000), "lifetime": min(lifetime_ms, 90_000),
        # the resident, and the room as js-sdk 43 does (a room of two: the same person)
        "m.mentions": {"user_ids": [user_id], "room": True}, "m.call.intent": intent,
        "slot_id": SLOT_ID, "msc4354_sticky_key": SLOT_ID,
    }
    if membership_event_id:
        content["m.relates_to"] = {"rel_type": "m.reference", "event_id": membership_event_id}
    return content


def foci_from(body: Any, key: str) -> list[str]:
    """The LiveKit token services named in a transports answer (``rtc_transports``) or a well-known
    (``org.matrix.msc4143.rtc_foci``)."""
    entries = body.get(key) if isinstance(body, Mapping) else None
    urls = []
    if isinstance(entries, list):
        for entry in entries:
            if isinstance(entry, Mapping) and entry.get("type") == "livekit":
                url = entry.get("livekit_service_url")
                if isinstance(url, str) and url.startswith(("https://", "http://")):
                    urls.append(url.rstrip("/"))
    return urls


class _Membership:
    """The door's membership of one room's call: its delayed leave and the task that renews it."""

    def __init__(self, room_id: str, delay_id: str | None) -> None:
        self.room_id, self.delay_id = room_id, delay_id
        self.renewer: asyncio.Task | None = None


class MatrixRtc:
    """MatrixRTC requests of one door, made through the Matrix adapter's nio client."""

    def __init__(self, client: Callable[[], Any], *, send_event: Callable[..., Any]) -> None:
        """``client()``: the adapter's nio client (or None); ``send_event(room_id, type, content)``: the adapter's
        room send (encrypts in an encrypted room, retries), returning the event ID or None."""
        self._client, self._send_event = client, send_event
        self._memberships: dict[str, _Membership] = {}
        self._http: aiohttp.ClientSession | None = None

    def _nio(self) -> Any:
        client = self._client()
        if client is None or not client.access_token:
            raise MatrixError("not logged in to the homeserver")
        return client

    async def _request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        try:
            return await request_json(self._nio(), method, path, body=body, timeout=REQUEST_TIMEOUT)
        except TRANSIENT_EXCEPTIONS as exc:
            raise MatrixError(f"{method} {path.split('?')[0]}: no answer from the homeserver ({exc})") from exc

    # --- the focus ---------------------------------------------------------------------------------------------

    async def focus(self) -> str | None:
        """The homeserver's MatrixRTC focus (a LiveKit token service URL), or None when it names none."""
        status, body = await self._request("GET", TRANSPORTS_PATH)
        if status == 200:
            urls = foci_from(body, "rtc_transports")
            if urls:
                return urls[0]
        status, body = await self._request("GET", WELL_KNOWN_PATH)
        urls = foci_from(body, WELL_KNOWN_FOCI) if status == 200 else []
        return urls[0] if urls else None

    async def token(self, room_id: str, focus_url: str) -> tuple[str, str]:
        """The LiveKit URL and JWT for the door in ``room_id``'s call, from the focus ``focus_url``."""
        client = self._nio()
        status, openid = await self._request(
            "POST", f"/_matrix/client/v3/user/{quote(client.user_id, safe='')}/openid/request_token", {})
        if status != 200 or not isinstance(openid, Mapping) or not isinstance(openid.get("access_token"), str):
            raise MatrixError(f"the homeserver gave no OpenID token (HTTP {status})")
        body = {"room": room_id, "openid_token": dict(openid), "device_id": client.device_id}
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))
        url = f"{focus_url.rstrip('/')}/sfu/get"
        try:
            async with self._http.post(url, json=body) as response:
                answer = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise MatrixError(f"the MatrixRTC focus {focus_url} did not answer: {type(exc).__name__}") from exc
        if status != 200 or not isinstance(answer, Mapping):
            raise MatrixError(f"the MatrixRTC focus {focus_url} refused a token (HTTP {status})")
        lk_url, jwt = answer.get("url"), answer.get("jwt")
        if not isinstance(lk_url, str) or not isinstance(jwt, str) or not lk_url.startswith(("ws://", "wss://")):
            raise MatrixError(f"the MatrixRTC focus {focus_url} answered no LiveKit URL and token")
        return lk_url, jwt

    # --- membership --------------------------------------------------------------------------------------------

    def state_key(self) -> str:
        client = self._nio()
        return f"_{client.user_id}_{client.device_id}_m.call"

    async def join(self, room_id: str, focus_url: str) -> str | None:
        """Publish the door's membership of ``room_id``'s call, behind a delayed leave that is renewed while the
        door stays. Returns the membership's event ID."""
        client = self._nio()
        key = quote(self.state_key(), safe="")
        path = f"/_matrix/client/v3/rooms/{_room(room_id)}/state/{rtc.MEMBER}/{key}"
        status, body = await self._request("PUT", f"{path}?{DELAY_PARAMETER}={LEAVE_DELAY_MS}", {})
        delay_id = body.get("delay_id") if status == 200 and isinstance(body, Mapping) else None
        if not isinstance(delay_id, str):
            delay_id = None
            log.warning("MatrixRTC: the homeserver keeps no delayed leave (HTTP %s): if the door stops suddenly, "
                        "its membership of the call in %s stays until it expires", status, room_id)
        status, body = await self._request("PUT", path, membership_content(client.user_id, client.device_id, room_id, focus_url))
        if status != 200:
            if delay_id is not None:
                await self._delayed(delay_id, "cancel")
            raise MatrixError(f"the homeserver refused the door's call membership in {room_id} (HTTP {status}: "
                              f"{str(body)[:200]})")
        membership = _Membership(room_id, delay_id)
        old = self._memberships.pop(room_id, None)
        if old is not None and old.renewer is not None:
            old.renewer.cancel()
        self._memberships[room_id] = membership
        if delay_id is not None:
            membership.renewer = asyncio.ensure_future(self._renew(membership))
        event_id = body.get("event_id") if isinstance(body, Mapping) else None
        log.info("MatrixRTC: joined the call in %s as %s", room_id, event_id)
        return event_id if isinstance(event_id, str) else None

    async def _renew(self, membership: _Membership) -> None:
        assert membership.delay_id is not None
        while True:
            await asyncio.sleep(LEAVE_DELAY_MS / 1000 / 3)
            try:
                if not await self._delayed(membership.delay_id, "restart"):
                    log.warning("MatrixRTC: the delayed leave in %s is gone", membership.room_id)
                    return
            except MatrixError as exc:
                log.warning("MatrixRTC: renewing the delayed leave in %s: %s", membership.room_id, exc)

    async def _delayed(self, delay_id: str, action: str) -> bool:
        status, _ = await self._request("POST", f"{DELAYED_EVENTS_PATH}/{quote(delay_id, safe='')}",
                                        {"action": action})
        return status == 200

    async def open_slot(self, room_id: str, *, encrypted: bool) -> None:
        """Open the room's call slot unless it is open (js-sdk 43 takes a ring only in an open slot). A door without
        the power to open it rings anyway, and says so in the log."""
        path = f"/_matrix/client/v3/rooms/{_room(room_id)}/state/{SLOT}/{quote(SLOT_ID, safe='')}"
        status, body = await self._request("GET", path)
        wanted: dict[str, Any] = {"status": "open", "application": {"type": rtc.APPLICATION}}
        if encrypted:
            wanted["encryption"] = {"type": "org.matrix.msc4143.per_member"}
        if status == 200 and isinstance(body, Mapping) and all(body.get(k) == v for k, v in wanted.items()):
            return
        current = dict(body) if status == 200 and isinstance(body, Mapping) else {}
        status, body = await self._request("PUT", path, {**current, **wanted})
        if status != 200:
            log.warning("MatrixRTC: could not open the call slot in %s (HTTP %s): js-sdk based apps may not ring",
                        room_id, status)

    async def ring(self, room_id: str, user_id: str, membership_event_id: str | None, lifetime_ms: int) -> bool:
        """Ring ``user_id`` in ``room_id`` (after :meth:`join`)."""
        event_id = await self._send_event(room_id, rtc.NOTIFICATION,
                                          ring_content(user_id, membership_event_id, lifetime_ms))
        return event_id is not None

    async def leave(self, room_id: str) -> None:
        """Leave ``room_id``'s call: the delayed leave is sent at once (else the membership is cleared)."""
        membership = self._memberships.pop(room_id, None)
        if membership is None:
            return
        if membership.renewer is not None:
            membership.renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await membership.renewer
        if membership.delay_id is not None and await self._delayed(membership.delay_id, "send"):
            log.info("MatrixRTC: left the call in %s", room_id)
            return
        path = f"/_matrix/client/v3/rooms/{_room(room_id)}/state/{rtc.MEMBER}/{quote(self.state_key(), safe='')}"
        status, _ = await self._request("PUT", path, {})
        if status != 200:
            raise MatrixError(f"could not leave the call in {room_id} (HTTP {status})")
        log.info("MatrixRTC: left the call in %s", room_id)

    async def close(self) -> None:
        for room_id in list(self._memberships):
            try:
                await self.leave(room_id)
            except MatrixError as exc:
                log.warning("MatrixRTC: %s", exc)
        if self._http is not None:
            await self._http.close()
