"""Ring everywhere: a picture of the visitor in the room on every press, and on ``!snapshot``.

Many owners' phones cannot take a legacy call (Element X shows "Call not supported"), but every client shows and
pushes an ordinary image message. So each ring is also an ``m.image`` with the visitor's face, mentioning the owner
(``m.mentions``) so their push rules notify loudly; in an encrypted room the picture is uploaded encrypted. The
call never waits for the picture: the picture is taken, uploaded and posted beside the call, and a failure is only
logged. The last pictures are also kept on the device, within a bound (:class:`SnapshotStore`). Notices that
refer to a ring (missed, declined: their words and moment are the core's) reply to its picture.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("intercom")

RING_TEXT = "Someone is at the door"
REQUEST_TEXT = "The door now"
#: How long a notice about a ring waits for the ring's picture to be posted, to refer to it.
NOTICE_WAITS_FOR_PICTURE = 10.0


class StillSource(Protocol):
    async def snapshot(self) -> Any: ...  # intercom.media.still.Still


class Messenger(Protocol):
    async def upload(self, data: bytes, content_type: str, filename: str, *, encrypt: bool) -> tuple[str, Any]: ...
    async def send_event(self, room_id: str, event_type: str, content: Mapping[str, Any]) -> str | None: ...
    async def send_notice(self, room_id: str, text: str, *, reply_to: str | None = None) -> bool: ...
    def room_is_encrypted(self, room_id: str) -> bool: ...


class SnapshotStore:
    """The last ``keep`` pictures on disk, oldest removed first: disk use stays within ``keep`` pictures."""

    def __init__(self, directory: Path, keep: int) -> None:
        self.directory, self.keep = Path(directory), keep
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def save(self, jpeg: bytes, taken_at: float, reason: str) -> Path | None:
        if self.keep <= 0:
            return None
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(taken_at)) + f"-{int(taken_at * 1000) % 1000:03d}"
        path = self.directory / f"{stamp}-{reason}.jpg"
        path.write_bytes(jpeg)
        path.chmod(0o600)
        self.prune()
        return path

    def pictures(self) -> list[Path]:
        return sorted(self.directory.glob("*.jpg"))

    def prune(self) -> None:
        for old in self.pictures()[: -self.keep or None]:
            old.unlink(missing_ok=True)

    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.pictures())


def _file_or_url(url: str, keys: Mapping[str, Any] | None, mimetype: str) -> dict[str, Any]:
    """``{"url": ...}`` for a plain upload, ``{"file": {...}}`` (an EncryptedFile) for an encrypted one."""
    if keys is None:
        return {"url": url}
    return {"file": {**keys, "url": url, "mimetype": mimetype}}


class Snapshots:
    """Takes, keeps and posts pictures; replies to the ring's picture."""

    def __init__(self, media: StillSource, matrix: Messenger, store: SnapshotStore, *, owner: str,
                 ring_pictures: bool = True) -> None:
        self._media, self._matrix, self._store, self._owner = media, matrix, store, owner
        self.ring_pictures = ring_pictures
        self._last_ring: asyncio.Task[str | None] | None = None

    async def post(self, room_id: str, reason: str) -> str | None:
        """Take a picture and post it (``reason``: ``ring`` or ``request``). Returns the event ID; never raises."""
        if reason == "ring" and not self.ring_pictures:
            return None
        task = asyncio.ensure_future(self._post(room_id, reason))
        if reason == "ring":
            self._last_ring = task
        return await task

    async def _post(self, room_id: str, reason: str) -> str | None:
        try:
            still = await self._media.snapshot()
        except Exception as exc:
            log.warning("no picture for the %s: %s", reason, exc)
            return None
        self._store.save(still.jpeg, still.taken_at, reason)
        try:
            event_id = await self._send_image(room_id, still, RING_TEXT if reason == "ring" else REQUEST_TEXT)
        except Exception as exc:
            log.warning("could not post the picture (%s): %s", reason, exc)
            return None
        if event_id is not None:
            log.info("picture posted (%s, %d kB)", reason, len(still.jpeg) // 1024)
        return event_id

    async def _send_image(self, room_id: str, still: Any, text: str) -> str | None:
        encrypt = self._matrix.room_is_encrypted(room_id)
        name = time.strftime("door-%Y%m%d-%H%M%S.jpg", time.localtime(still.taken_at))
        url, keys = await self._matrix.upload(still.jpeg, "image/jpeg", name, encrypt=encrypt)
        thumb_url, thumb_keys = await self._matrix.upload(still.thumbnail, "image/jpeg", "thumbnail-" + name,
                                                          encrypt=encrypt)
        thumbnail = _file_or_url(thumb_url, thumb_keys, "image/jpeg")
        info = {"mimetype": "image/jpeg", "w": still.width, "h": still.height, "size": len(still.jpeg),
                ("thumbnail_file" if thumb_keys else "thumbnail_url"): next(iter(thumbnail.values())),
                "thumbnail_info": {"mimetype": "image/jpeg", "w": still.thumbnail_width,
                                   "h": still.thumbnail_height, "size": len(still.thumbnail)}}
        content = {"msgtype": "m.image", "body": text, "filename": name, "info": info,
                   **_file_or_url(url, keys, "image/jpeg"), "m.mentions": {"user_ids": [self._owner]}}
        return await self._matrix.send_event(room_id, "m.room.message", content)

    async def reply_to_ring(self, room_id: str, text: str, no_picture: str) -> None:
        """Send a notice as a reply to the last ring's picture (waiting a little for it to be posted); without
        one, send ``text`` with ``no_picture`` added."""
        picture = None
        if self._last_ring is not None:
            try:
                picture = await asyncio.wait_for(asyncio.shield(self._last_ring), NOTICE_WAITS_FOR_PICTURE)
            except (asyncio.TimeoutError, Exception):
                picture = None
        await self._matrix.send_notice(room_id, text if picture is not None else text + no_picture, reply_to=picture)
