"""Ring everywhere: a picture of the visitor in the room on every press, and on ``!snapshot``.

Many owners' phones cannot take a legacy call (Element X shows "Call not supported"), but every client shows and
pushes an ordinary image message. So each ring is also an ``m.image`` with the visitor's face, mentioning the owner
(``m.mentions``) so their push rules notify loudly; in an encrypted room the picture is uploaded encrypted. The
call never waits for the picture: the picture is taken, uploaded and posted beside the call, and a failure is only
logged. The last pictures are also kept on the device, within a count and a size (:class:`SnapshotStore`); they
are saved from memory beside the post, so a full or read-only SD card never costs the owner the picture. Notices
that refer to a ring (missed, declined: their words and moment are the core's) reply to its picture.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from intercom.durable import write_atomic

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
    """The last pictures on disk, within two bounds: at most ``keep`` pictures and at most ``max_bytes`` bytes
    (``None``: no byte bound). The oldest are removed first.

    A Pi has no clock that runs while it is off, so the wall clock may be far behind after a boot (until NTP) and
    jump later. The order of the pictures therefore never depends on it: each file name starts with a sequence
    number that continues from the highest one on disk, and pruning goes by that number. The time in the name is
    only for people. Files of an older layout (time first) count as older than every numbered one.

    Writes are durable (:func:`intercom.durable.write_atomic`, mode 0600). :meth:`save` runs blocking disk work
    and may raise :class:`OSError`; use it from a thread, one at a time or concurrently (it locks)."""

    def __init__(self, directory: Path, keep: int, max_bytes: int | None = None) -> None:
        self.directory, self.keep, self.max_bytes = Path(directory), keep, max_bytes
        self._lock = threading.Lock()
        self._index: list[tuple[int, str, int]] | None = None  # (sequence, name, size), oldest first
        self._next = 1

    def save(self, jpeg: bytes, taken_at: float, reason: str) -> Path | None:
        """Keep a picture; ``None`` if the bounds keep none or this one alone is larger than ``max_bytes``."""
        if self.keep <= 0 or not self.fits(len(jpeg)):
            return None
        with self._lock:
            index = self._load()
            self._prune(index, adding=1, adding_bytes=len(jpeg))
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(taken_at)) + f"-{int(taken_at * 1000) % 1000:03d}"
            name = f"{self._next:0{_SEQUENCE_DIGITS}d}-{stamp}-{reason}.jpg"
            write_atomic(self.directory / name, jpeg, 0o600)
            index.append((self._next, name, len(jpeg)))
            self._next += 1
            return self.directory / name

    def fits(self, size: int) -> bool:
        """Whether a picture of ``size`` bytes is within the byte bound on its own."""
        return self.max_bytes is None or size <= self.max_bytes

    def pictures(self) -> list[Path]:
        """The pictures on disk now, oldest first (by sequence, not by clock)."""
        return [self.directory / name for _, name, _ in sorted(self._scan())]

    def prune(self) -> None:
        """Remove the oldest pictures until the store is within its bounds."""
        with self._lock:
            self._prune(self._load())

    def total_bytes(self) -> int:
        return sum(size for _, _, size in self._scan())

    def _load(self) -> list[tuple[int, str, int]]:
        """The index of the pictures, read from disk on first use (so a missing or read-only directory does not
        stop the door from starting: saving fails and is retried on the next picture)."""
        if self._index is None:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            for leftover in self.directory.glob(".*.tmp"):  # a write cut short by a power cut
                leftover.unlink(missing_ok=True)
            self._index = sorted(self._scan())
            self._next = max((sequence for sequence, _, _ in self._index), default=0) + 1
        return self._index

    def _scan(self) -> list[tuple[int, str, int]]:
        found = []
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return []
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.endswith(".jpg") or not entry.is_file():
                continue
            try:
                size = entry.stat().st_size
            except FileNotFoundError:
                continue
            numbered = _NUMBERED.match(entry.name)
            found.append((int(numbered.group(1)) if numbered else 0, entry.name, size))
        return found

    def _prune(self, index: list[tuple[int, str, int]], adding: int = 0, adding_bytes: int = 0) -> None:
        """Remove the oldest pictures until ``adding`` more pictures of ``adding_bytes`` fit within the bounds."""
        count = len(index) + adding
        total = sum(size for _, _, size in index) + adding_bytes
        while index and (count > self.keep or (self.max_bytes is not None and total > self.max_bytes)):
            _, name, size = index[0]
            (self.directory / name).unlink(missing_ok=True)
            del index[0]
            count, total = count - 1, total - size


#: Digits of the sequence number that starts each picture's name (zero-padded, so names also sort by it).
_SEQUENCE_DIGITS = 10
_NUMBERED = re.compile(rf"^(\d{{{_SEQUENCE_DIGITS}}})-.*\.jpg$")


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
        #: Each room's last ring picture (its event ID once posted), for the notices that reply to it.
        self._last_ring: dict[str, asyncio.Future[str | None]] = {}
        #: The still of the last ring, by the ring's ID: a ring group posts the same picture to every resident's
        #: room, taken once and kept once.
        self._ring_still: tuple[str, asyncio.Future[Any]] | None = None
        self._failures: set[str] = set()  # kinds of failure to keep a picture logged since the last success
        self._failures_lock = threading.Lock()

    async def post(self, room_id: str, reason: str, *, label: str = "", mention: str = "",
                   ring_id: str = "") -> str | None:
        """Take a picture and post it (``reason``: ``ring`` or ``request``); ``label`` names the bell button,
        ``mention`` the resident it is for (default: the owner); posts with the same ``ring_id`` share one picture.
        Returns the event ID, once the picture is also kept on the device (or failed to be); never raises."""
        if reason == "ring" and not self.ring_pictures:
            return None
        saving: list[asyncio.Future[None]] = []
        task = asyncio.ensure_future(self._post(room_id, reason, saving, label, mention or self._owner,
                                                        ring_id))
        if reason == "ring":
            self._last_ring[room_id] = task
            while len(self._last_ring) > 64:
                del self._last_ring[next(iter(self._last_ring))]
        event_id = await task
        for saved in saving:
            await saved  # never raises: _keep logs
        return event_id

    async def _post(self, room_id: str, reason: str, saving: list[asyncio.Future[None]], label: str,
                    mention: str, ring_id: str) -> str | None:
        first = True
        if ring_id and self._ring_still is not None and self._ring_still[0] == ring_id:
            first = False  # the same ring, for another resident: the same picture
            taking = self._ring_still[1]
        else:
            taking = asyncio.ensure_future(self._media.snapshot())
            if ring_id:
                self._ring_still = (ring_id, taking)
        try:
            still = await asyncio.shield(taking)
        except Exception as exc:
            log.warning("no picture for the %s: %s", reason, exc)
            return None
        if first:
            # Kept beside the post, from memory: a full or read-only SD card never costs the owner the picture.
            saving.append(asyncio.ensure_future(asyncio.to_thread(self._keep, still.jpeg, still.taken_at, reason)))
        text = (f"{RING_TEXT} ({label})" if label else RING_TEXT) if reason == "ring" else REQUEST_TEXT
        try:
            event_id = await self._send_image(room_id, still, text, mention)
        except Exception as exc:
            log.warning("could not post the picture (%s): %s", reason, exc)
            return None
        if event_id is not None:
            log.info("picture posted (%s, %d kB)", reason, len(still.jpeg) // 1024)
        return event_id

    def _keep(self, jpeg: bytes, taken_at: float, reason: str) -> None:
        """Save a picture in the store (in a thread: disk work). A failure is logged once per kind (a full card
        would otherwise log on every ring), and once when saving works again; it never raises."""
        if not self._store.fits(len(jpeg)):
            self._failed("too large", "a picture of %d kB is not kept on the device: it alone is larger than "
                         "camera.snapshots_max_mb", len(jpeg) // 1024)
            return
        try:
            self._store.save(jpeg, taken_at, reason)
        except Exception as exc:
            kind = errno.errorcode.get(exc.errno, str(exc.errno)) if isinstance(exc, OSError) and exc.errno \
                else type(exc).__name__
            self._failed(kind, "could not keep the picture on the device (the picture is still posted; this is "
                         "not logged again until saving works): %s", exc)
            return
        with self._failures_lock:
            if self._failures:
                self._failures.clear()
                log.info("pictures are kept on the device again")

    def _failed(self, kind: str, message: str, *args: Any) -> None:
        with self._failures_lock:
            first = kind not in self._failures
            self._failures.add(kind)
        if first:
            log.warning(message, *args)

    async def _send_image(self, room_id: str, still: Any, text: str, mention: str) -> str | None:
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
                   **_file_or_url(url, keys, "image/jpeg"), "m.mentions": {"user_ids": [mention]}}
        return await self._matrix.send_event(room_id, "m.room.message", content)

    async def reply_to_ring(self, room_id: str, text: str, no_picture: str) -> None:
        """Send a notice as a reply to the last ring's picture (waiting a little for it to be posted); without
        one, send ``text`` with ``no_picture`` added."""
        picture = None
        last = self._last_ring.get(room_id)
        if last is not None:
            try:
                picture = await asyncio.wait_for(asyncio.shield(last), NOTICE_WAITS_FOR_PICTURE)
            except (asyncio.TimeoutError, Exception):
                picture = None
        await self._matrix.send_notice(room_id, text if picture is not None else text + no_picture, reply_to=picture)
