"""MatrixRTC calls as the orchestrator carries them out: the Matrix side (:class:`~intercom.matrix.rtc.MatrixRtc`:
focus, token, membership, ring) and the LiveKit media (:class:`~intercom.media.livekit.RtcMediaEngine`) of each
call, put together.

- :class:`~intercom.core.RtcConnect`: find the focus (the peer's, else the homeserver's), get a LiveKit token,
  connect and publish the door's camera and microphone.
- :class:`~intercom.core.RtcAnnounce`: publish the door's membership (behind its delayed leave) and, for a ring,
  the ring notification.
- Closing a call's media leaves: the LiveKit room first (the media stops at once), then the membership.

Every coroutine raises only :class:`RtcCallError`, which the orchestrator turns into the call's media failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from intercom.core import RtcAnnounce, RtcConnect
from intercom.errors import IntercomError

log = logging.getLogger(__name__)


class RtcCallError(IntercomError):
    """A MatrixRTC call could not be set up: the message says which step."""


class _Signalling(Protocol):
    async def focus(self) -> str | None: ...
    async def token(self, room_id: str, focus_url: str) -> tuple[str, str]: ...
    async def join(self, room_id: str, focus_url: str) -> str | None: ...
    async def ring(self, room_id: str, user_id: str, membership_event_id: str | None, lifetime_ms: int) -> bool: ...
    async def open_slot(self, room_id: str, *, encrypted: bool) -> None: ...


class _Keys(Protocol):
    async def send_media_key(self, room_id: str, user_id: str, key: bytes, index: int, *,
                             only: Iterable[str] | None = None) -> list[str]: ...
    async def leave(self, room_id: str) -> None: ...


class _Media(Protocol):
    async def connect(self, call_id: str, *, url: str, jwt: str, peer_user: str, e2ee: bool = False) -> None: ...
    async def close(self, call_id: str) -> None: ...
    def local_key(self, call_id: str) -> tuple[bytes, int]: ...
    def rotate_key(self, call_id: str, *, switch: bool = True) -> tuple[bytes, int]: ...
    def use_key(self, call_id: str, index: int) -> None: ...
    def participants(self, call_id: str) -> list[str]: ...
    def set_peer_key(self, call_id: str, participant_identity: str, key: bytes, index: int) -> None: ...


@dataclass(slots=True)
class _RtcCall:
    room_id: str
    focus_url: str
    peer: str
    joined: bool = False
    e2ee: bool = False
    connected: bool = False


#: A new media key is used this long after it was sent (s): js-sdk 43 waits 1 s by default; a little more lets the
#: key reach a phone whose sync is slow (on a loaded door, or a phone on a poor network) before the first frame
#: that needs it. The device that left can follow the call that much longer.
USE_NEW_KEY_AFTER = 2.0
#: A device that joined gets the door's media key at once and again this much later (s).
WELCOME_AGAIN = 2.0
#: Media keys kept for calls not connected yet (a resident's client sends its key as soon as it sees the door).
KEPT_KEYS = 32


class RtcCalls:
    """The door's MatrixRTC calls, by call ID."""

    def __init__(self, signalling: _Signalling, media: _Media, *, encrypted: Any = None,
                 keys: _Keys | None = None) -> None:
        """``encrypted(room_id) -> bool``: whether the room is end-to-end encrypted (its call media is, then);
        ``keys``: sends the door's media key (Olm to-device) in encrypted rooms."""
        self._signalling, self._media, self._keys = signalling, media, keys
        self._encrypted = encrypted or (lambda room_id: False)
        self._calls: dict[str, _RtcCall] = {}
        self._rotations: set[asyncio.Task] = set()
        #: Residents' media keys by (room, identity): the latest of each, for calls connected later.
        self._peer_keys: dict[tuple[str, str], tuple[str, bytes, int]] = {}

    def media_key(self, key: Any) -> None:
        """A resident's media key arrived (authenticated by the Matrix side): hand it to their call's LiveKit
        room, now or once it is connected."""
        self._peer_keys[(key.room_id, key.identity)] = (key.user_id, key.key, key.index)
        while len(self._peer_keys) > KEPT_KEYS:
            del self._peer_keys[next(iter(self._peer_keys))]
        for call_id, call in self._calls.items():
            if call.room_id == key.room_id and call.peer == key.user_id and call.e2ee and call.connected:
                self._media.set_peer_key(call_id, key.identity, key.key, key.index)

    def _apply_kept_keys(self, call_id: str, call: _RtcCall) -> None:
        for (room_id, identity), (user_id, key, index) in self._peer_keys.items():
            if room_id == call.room_id and user_id == call.peer:
                self._media.set_peer_key(call_id, identity, key, index)

    def owns(self, call_id: str) -> bool:
        return call_id in self._calls

    async def available(self) -> bool:
        """Whether the homeserver names a MatrixRTC focus (never raises)."""
        try:
            return await self._signalling.focus() is not None
        except Exception as exc:
            log.info("MatrixRTC: no focus: %s", exc)
            return False

    async def connect(self, action: RtcConnect) -> None:
        call = self._calls[action.call_id] = _RtcCall(action.room_id, action.focus_url, action.peer,
                                                      e2ee=bool(self._encrypted(action.room_id)))
        try:
            if not call.focus_url:
                focus = await self._signalling.focus()
                if focus is None:
                    raise RtcCallError("the homeserver names no MatrixRTC focus (LiveKit and its token service)")
                call.focus_url = focus
            url, jwt = await self._signalling.token(action.room_id, call.focus_url)
            await self._media.connect(action.call_id, url=url, jwt=jwt, peer_user=action.peer, e2ee=call.e2ee)
            call.connected = True
            if call.e2ee:
                self._apply_kept_keys(action.call_id, call)
        except RtcCallError:
            raise
        except Exception as exc:
            raise RtcCallError(f"MatrixRTC call {action.call_id}: {exc}") from exc

    async def announce(self, action: RtcAnnounce) -> None:
        call = self._calls.get(action.call_id)
        if call is None:
            raise RtcCallError(f"MatrixRTC call {action.call_id} is not connected")
        try:
            if action.ring:
                await self._signalling.open_slot(call.room_id, encrypted=bool(self._encrypted(call.room_id)))
            event_id = await self._signalling.join(call.room_id, call.focus_url)
            call.joined = True
            if call.e2ee:
                await self._send_own_key(action.call_id, call)
            if action.ring:
                await self._signalling.ring(call.room_id, action.ring, event_id, action.lifetime_ms)
        except Exception as exc:
            raise RtcCallError(f"MatrixRTC call {action.call_id}: {exc}") from exc

    async def _send_own_key(self, call_id: str, call: _RtcCall) -> None:
        """The door's media key, to the resident's devices the trust rules give keys to (and nobody else: only they
        can see and hear the door)."""
        key, index = self._media.local_key(call_id)
        reached = await self._keys.send_media_key(call.room_id, call.peer, key, index) if self._keys else []
        if not reached:
            raise RtcCallError(f"the door's media key reached no trusted device of {call.peer}")
        log.info("MatrixRTC call %s: media key %d sent to %s (%s)", call_id, index, call.peer, ", ".join(reached))

    async def answered(self, call_id: str) -> None:
        """The resident joined the call the door rang them in: in an encrypted room they get the door's media key
        again (js-sdk takes keys only from members of a session it is in)."""
        call = self._calls.get(call_id)
        if call is not None and call.e2ee and call.joined:
            try:
                await self._send_own_key(call_id, call)
            except Exception as exc:
                raise RtcCallError(f"MatrixRTC call {call_id}: {exc}") from exc

    def peer_changed(self, call_id: str, identity: str, present: bool) -> None:
        """A device of the resident joined or left the call's LiveKit room (the media engine's ``on_peer``). In an
        encrypted call a newcomer gets the door's current key (again a little later too: js-sdk takes keys only
        from members of a session it has joined, and its join may be seen after its LiveKit one); after a
        departure the door encrypts with a new key and gives it only to the resident's devices still there, as
        Element Call does, so the one that left cannot follow the rest of the call."""
        call = self._calls.get(call_id)
        if call is None or not call.e2ee or not call.joined:
            return
        device = identity[len(call.peer) + 1:] if identity.startswith(f"{call.peer}:") else ""
        work = self._welcome(call_id, call, device) if present else self._rotate(call_id, call)
        task = asyncio.ensure_future(work)
        self._rotations.add(task)
        task.add_done_callback(self._rotations.discard)

    async def _welcome(self, call_id: str, call: _RtcCall, device: str) -> None:
        for delay in (0.0, WELCOME_AGAIN):
            await asyncio.sleep(delay)
            if self._calls.get(call_id) is not call:
                return
            try:
                key, index = self._media.local_key(call_id)
                if self._keys is not None:
                    await self._keys.send_media_key(call.room_id, call.peer, key, index, only=[device])
            except Exception as exc:
                log.warning("MatrixRTC call %s: sending the media key to %s: %s", call_id, device, exc)

    async def _rotate(self, call_id: str, call: _RtcCall) -> None:
        prefix = f"{call.peer}:"
        staying = [p[len(prefix):] for p in self._media.participants(call_id) if p.startswith(prefix)]
        if not staying:
            return  # the call ends (the resident's membership goes too)
        try:
            key, index = self._media.rotate_key(call_id, switch=False)
            reached = (await self._keys.send_media_key(call.room_id, call.peer, key, index, only=staying)
                       if self._keys else [])
            log.info("MatrixRTC call %s: new media key %d after a device left, sent to %s", call_id, index,
                     ", ".join(reached) or "nobody")
            await asyncio.sleep(USE_NEW_KEY_AFTER)  # the others have it before it is needed
            if self._calls.get(call_id) is call:
                self._media.use_key(call_id, index)
        except Exception as exc:
            log.warning("MatrixRTC call %s: rotating the media key: %s", call_id, exc)

    async def close(self, call_id: str) -> None:
        """Leave the LiveKit room and the room's call. Idempotent; never raises."""
        call = self._calls.pop(call_id, None)
        try:
            await self._media.close(call_id)
        except Exception as exc:
            log.warning("MatrixRTC call %s: closing the media: %s", call_id, exc)
        if call is not None and call.joined:
            try:
                await self._signalling.leave(call.room_id)
            except Exception as exc:
                log.warning("MatrixRTC call %s: leaving the call in %s: %s (the delayed leave will end it)",
                            call_id, call.room_id, exc)
