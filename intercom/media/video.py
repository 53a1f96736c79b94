"""The camera as an aiortc track: pre-encoded H.264 packets, or raw frames for aiortc's own encoder.

aiortc 1.16 accepts an ``av.Packet`` from ``recv()`` and only packetizes it (``encoder.pack``), which is what makes a
hardware encoder worth having: sending pre-encoded 720p costs about 0.03 cores instead of 0.3-0.6. Two things
aiortc does not do for packets are done here:

- keyframe requests: a PLI/FIR from the peer only sets a flag that aiortc's own encoders read, so
  :func:`install_keyframe_hook` makes the sender also ask the track, which asks the camera;
- a clean start and recovery: the track drops everything until the first IDR, and after a backlog it drops to the
  next IDR and asks for one, so the decoder never gets a picture that references one it did not see.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import logging

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpsender import RTCRtpSender

from .camera import Camera, EncodedFrame

logger = logging.getLogger(__name__)

VIDEO_TIME_BASE = fractions.Fraction(1, 90000)


class CameraTrack(MediaStreamTrack):
    """A video track fed by a :class:`~intercom.media.camera.Camera` running in its own thread.

    The mode is chosen after negotiation, before aiortc's first ``recv()``: :meth:`use_encoded` when the sending
    codec is H.264 and the camera's encoder should be used, otherwise raw frames. The camera starts on the first
    ``recv()``, i.e. only once the call is connected.
    """

    kind = "video"

    def __init__(self, camera: Camera, max_queued: int = 4) -> None:
        super().__init__()
        self._camera = camera
        self._encoded = False
        self._queue: collections.deque = collections.deque()
        self._max_queued = max_queued
        self._waiter: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._need_keyframe = True
        self._first_timestamp_us: int | None = None
        self.dropped = 0
        self.keyframe_requests = 0

    def use_encoded(self, encoded: bool) -> None:
        """Send the camera's H.264 (True) or raw frames (False). Only before the first ``recv()``."""
        if self._started:
            raise RuntimeError("the video mode is fixed once the camera has started")
        self._encoded = encoded

    @property
    def encoded(self) -> bool:
        return self._encoded

    async def recv(self) -> av.Packet | av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if not self._started:
            self._start()
        while not self._queue:
            self._waiter = self._loop.create_future()
            await self._waiter
            if self.readyState != "live":
                raise MediaStreamError
        item = self._queue.popleft()
        if not self._encoded:
            return item
        packet = av.Packet(item.data)
        packet.pts = (item.timestamp_us - self._first_timestamp_us) * 9 // 100
        packet.time_base = VIDEO_TIME_BASE
        return packet

    def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._started = True
        try:
            if self._encoded:
                self._camera.start_encoded(self._from_camera)
            else:
                self._camera.start_raw(self._from_camera)
        except Exception as exc:  # no camera, picamera2 missing off the Pi, device busy
            logger.error("the camera did not start (%s: %s); the call goes on without video", type(exc).__name__, exc)
            self.stop()
            raise MediaStreamError from exc

    def _from_camera(self, item) -> None:
        """Camera thread: hand the frame or access unit to the loop."""
        try:
            self._loop.call_soon_threadsafe(self._deliver, item)
        except RuntimeError:  # the loop is closed: the call is over
            pass

    def _deliver(self, item) -> None:
        if self.readyState != "live":
            return
        if self._encoded:
            if not self._accept(item):
                return
        elif len(self._queue) >= self._max_queued:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _accept(self, frame: EncodedFrame) -> bool:
        """Keep the H.264 stream decodable: start at an IDR, and after a backlog resume only at an IDR."""
        if len(self._queue) >= self._max_queued:
            self.dropped += len(self._queue)
            self._queue.clear()
            self._need_keyframe = True
            self.request_keyframe()
        if self._need_keyframe:
            if not frame.keyframe:
                self.dropped += 1
                return False
            self._need_keyframe = False
        if self._first_timestamp_us is None:
            self._first_timestamp_us = frame.timestamp_us
        return True

    def request_keyframe(self) -> None:
        """Ask the camera for an IDR (PLI/FIR from the peer, or our own recovery)."""
        self.keyframe_requests += 1
        self._camera.request_keyframe()

    def stop(self) -> None:
        super().stop()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def aclose(self) -> None:
        """Stop the track and wait until the camera's threads have exited."""
        self.stop()
        await asyncio.to_thread(self._camera.stop)


def install_keyframe_hook(sender: RTCRtpSender) -> None:
    """Make a PLI/FIR received by ``sender`` also request an IDR from its track.

    ``RTCRtpSender._handle_rtcp_packet`` calls ``self._send_keyframe()``, which in aiortc 1.16 only flags aiortc's own
    encoder. The wrapper is set on this instance only (no global patch) and keeps the original behaviour.
    """
    original = sender._send_keyframe

    def send_keyframe() -> None:
        original()
        track = sender.track
        if isinstance(track, CameraTrack) and track.encoded:
            track.request_keyframe()

    sender._send_keyframe = send_keyframe  # type: ignore[method-assign]
