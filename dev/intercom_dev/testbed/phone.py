"""A scripted owner's phone: matrix-nio for signalling and a plain aiortc peer for media.

Used by the demo and the end-to-end tests to play the person the door calls. It is written independently of the
door's own call core and media layer (a different implementation talking the same protocol), in the way a phone
app would: it sends version "1" events with its own ``party_id``, answers with a tone as its microphone, and counts
what it receives: decoded video frames (with their size) and the audio level.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import math
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame
from nio import (
    BadEvent,
    CallEvent,
    MegolmEvent,
    RoomEncryptedImage,
    RoomMessageImage,
    RoomMessageNotice,
    RoomMessageText,
    UnknownEvent,
)

from .client import ScriptedClient

log = logging.getLogger(__name__)


class ToneTrack(MediaStreamTrack):
    """The phone's microphone: a sine tone, 20 ms frames at 48 kHz, paced in real time."""

    kind = "audio"

    def __init__(self, frequency: float = 1000.0, level: float = 0.3) -> None:
        super().__init__()
        self._frequency, self._level = frequency, level
        self._samples = 0
        self._start: float | None = None

    async def recv(self) -> AudioFrame:
        rate, n = 48000, 960
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._samples / rate - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        t = (np.arange(n) + self._samples) / rate
        pcm = (np.sin(2 * math.pi * self._frequency * t) * self._level * 32767).astype("<i2")
        frame = AudioFrame(format="s16", layout="mono", samples=n)
        frame.planes[0].update(pcm.tobytes())
        frame.sample_rate, frame.pts, frame.time_base = rate, self._samples, fractions.Fraction(1, rate)
        self._samples += n
        return frame


@dataclass
class Received:
    """What flowed to the phone during a call."""

    video_frames: int = 0
    video_size: tuple[int, int] | None = None
    first_video_at: float | None = None
    audio_frames: int = 0
    first_audio_at: float | None = None
    audio_rms: float = 0.0  # of the last second, 0..1 of full scale
    _recent: list[float] = field(default_factory=list)

    def audio(self, frame: AudioFrame) -> None:
        samples = frame.to_ndarray().astype(np.float64) / 32768.0
        self._recent.append(float(np.sqrt(np.mean(samples ** 2))) if samples.size else 0.0)
        del self._recent[:-50]
        self.audio_rms = max(self._recent)
        self.audio_frames += 1


def _party_id() -> str:
    return "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(10))


class Phone(ScriptedClient):
    """The owner's phone. ``events`` collects every call event it sees, as ``(type, sender, content)``."""

    EVENT_TYPES = (CallEvent, UnknownEvent, BadEvent, RoomMessageText, RoomMessageNotice, RoomMessageImage,
                   RoomEncryptedImage, MegolmEvent)

    def __init__(self, homeserver: str, user_id: str, password: str, room_id: str, *, store_dir: Path,
                 ice_hosts: tuple[str, ...] = ("127.0.0.1",)) -> None:
        super().__init__(homeserver, user_id, password, store_dir=store_dir)
        self.room_id = room_id
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        #: (event type, call_id, origin_server_ts in ms) of every call event, for benchmarks.
        self.server_times: list[tuple[str, str, int]] = []
        self.messages: list[tuple[str, str]] = []
        #: (sender, content, time.monotonic() of arrival) of every picture posted in the room.
        self.images: list[tuple[str, dict[str, Any], float]] = []
        self._changed = asyncio.Event()
        self._ice_hosts = ice_hosts
        self.pc: RTCPeerConnection | None = None
        self.call_id: str | None = None
        self.party_id = _party_id()
        self.received = Received()
        self._readers: list[asyncio.Task] = []
        self.connected_at: float | None = None

    # --- Matrix --------------------------------------------------------------------------------------------------

    async def on_event(self, room, event) -> None:
        if room.room_id != self.room_id:
            return
        source = getattr(event, "source", {}) or {}
        kind = source.get("type", "")
        if isinstance(event, MegolmEvent):
            log.warning("phone could not decrypt an event from %s", event.sender)
            return
        if isinstance(event, (RoomMessageImage, RoomEncryptedImage)):
            self.images.append((event.sender, dict(source.get("content", {})), time.monotonic()))
        elif isinstance(event, (RoomMessageText, RoomMessageNotice)):
            self.messages.append((event.sender, event.body))
        elif kind.startswith("m.call."):
            content = dict(source.get("content", {}))
            self.events.append((kind, event.sender, content))
            self.server_times.append((kind, str(content.get("call_id")), int(source.get("origin_server_ts", 0))))
        self._changed.set()

    async def wait_for(self, event_type: str, where: Callable[[dict], bool] = lambda c: True, *,
                       sender: str | None = None, timeout: float = 20.0, start: int = 0) -> dict[str, Any]:
        """The first call event of ``event_type`` (from index ``start``) matching ``where``; waits for it."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for kind, who, content in self.events[start:]:
                if kind == event_type and (sender is None or who == sender) and where(content):
                    return content
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"the phone saw no {event_type} within {timeout} s")
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def download_image(self, content: dict[str, Any]) -> bytes:
        """The picture of an ``m.image`` content, decrypted if it was sent encrypted."""
        from nio.crypto.attachments import decrypt_attachment

        encrypted = content.get("file")
        response = await self.client.download(encrypted["url"] if encrypted else content["url"])
        data = response.body
        if encrypted:
            data = decrypt_attachment(data, encrypted["key"]["k"], encrypted["hashes"]["sha256"], encrypted["iv"])
        return data

    async def send(self, event_type: str, content: dict[str, Any]) -> None:
        body = {"call_id": self.call_id, "party_id": self.party_id, "version": "1", **content}
        await self.client.room_send(self.room_id, event_type, body, ignore_unverified_devices=True)

    # --- calls ---------------------------------------------------------------------------------------------------

    def _new_pc(self) -> RTCPeerConnection:
        import aioice.ice

        if self._ice_hosts:  # keep ICE on loopback in tests; aioice looks host addresses up itself
            hosts = list(self._ice_hosts)
            aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: hosts
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._readers.append(asyncio.ensure_future(self._read(track)))

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected" and self.connected_at is None:
                self.connected_at = time.monotonic()

        return pc

    async def _read(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await track.recv()
                now = time.monotonic()
                if track.kind == "video":
                    self.received.video_frames += 1
                    self.received.video_size = (frame.width, frame.height)
                    self.received.first_video_at = self.received.first_video_at or now
                else:
                    self.received.audio(frame)
                    self.received.first_audio_at = self.received.first_audio_at or now

    async def answer(self, invite: dict[str, Any]) -> None:
        """Answer the door's invite: tone as microphone, receive its audio and video."""
        self.call_id = invite["call_id"]
        self.pc = pc = self._new_pc()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=invite["offer"]["sdp"], type="offer"))
        pc.addTrack(ToneTrack())
        await pc.setLocalDescription(await pc.createAnswer())
        await self.send("m.call.answer", {"answer": {"type": "answer", "sdp": pc.localDescription.sdp}})
        await self.send("m.call.candidates", {"candidates": [{"candidate": ""}]})

    async def call(self, door_user_id: str, *, lifetime: int = 60000) -> str:
        """Call the door (video call, as Element's video button does). Returns the call ID."""
        self.call_id = f"{int(time.time() * 1000)}{_party_id()}"
        self.pc = pc = self._new_pc()
        pc.addTrack(ToneTrack())
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        await self.send("m.call.invite", {"lifetime": lifetime, "invitee": door_user_id,
                                          "offer": {"type": "offer", "sdp": pc.localDescription.sdp}})
        await self.send("m.call.candidates", {"candidates": [{"candidate": ""}]})
        return self.call_id

    async def accept_answer(self, answer: dict[str, Any]) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["answer"]["sdp"], type="answer"))
        await self.send("m.call.select_answer", {"selected_party_id": answer["party_id"]})

    async def hangup(self, reason: str = "user_hangup") -> None:
        await self.send("m.call.hangup", {"reason": reason})
        await self.close_media()

    async def close_media(self) -> None:
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        self._readers.clear()
        if self.pc is not None:
            await self.pc.close()
            self.pc = None

    def new_call_stats(self) -> None:
        self.received = Received()
        self.connected_at = None

    async def close(self) -> None:
        await self.close_media()
        await super().close()
