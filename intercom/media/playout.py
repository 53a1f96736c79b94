"""Receive-side audio timing: what replaces aiortc's fixed 80 ms audio prefetch.

aiortc's ``RTCRtpReceiver`` puts audio into ``JitterBuffer(capacity=16, prefetch=4)``, which releases a packet only
once four later ones have arrived: 80 ms of added latency on every call, whatever the network does (measured
130 ms mouth-to-ear against 74 ms without it). The receiver offers no parameter for it, so
:func:`install_low_latency_audio` swaps the receiver's buffer for :class:`ImmediateJitterBuffer`, which hands every
in-order packet to the decoder at once. Absorbing jitter is then the job of :class:`PlayoutBuffer`, which sits in
front of the ALSA playback thread and is timed by the sound card's clock (see :class:`~intercom.media.alsa.AlsaPlayback`).
"""

from __future__ import annotations

import logging
import threading

from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RtpPacket

logger = logging.getLogger(__name__)

_JITTER_BUFFER_ATTRIBUTE = "_RTCRtpReceiver__jitter_buffer"


def _newer(a: int, b: int) -> bool:
    """RTP timestamp ``a`` is after ``b``, modulo 2**32."""
    return a != b and ((a - b) & 0xFFFFFFFF) < 0x80000000


class ImmediateJitterBuffer:
    """A drop-in for aiortc's audio ``JitterBuffer`` that releases each packet as soon as it arrives.

    One audio RTP packet is one complete Opus frame, so nothing needs reassembling. A packet that is not newer than the
    last one released (a duplicate, or one overtaken by a later packet) is dropped: it is too late to be played, and
    aiortc's ``TimestampMapper`` would take a timestamp going backwards for a wrap-around.
    """

    capacity = 16

    def __init__(self) -> None:
        self._last_timestamp: int | None = None
        self.late = 0

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        if self._last_timestamp is not None and not _newer(packet.timestamp, self._last_timestamp):
            self.late += 1
            return False, None
        self._last_timestamp = packet.timestamp
        return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)  # type: ignore[attr-defined]


def install_low_latency_audio(receiver: RTCRtpReceiver) -> bool:
    """Replace an audio receiver's prefetching jitter buffer by :class:`ImmediateJitterBuffer`.

    This touches a private attribute of aiortc 1.16 (there is no public way to set the prefetch). If a future aiortc
    renames it, the call keeps the stock buffer, logs a warning and returns False: calls still work, 80 ms slower.
    Must be called before the first RTP packet arrives, i.e. right after the transceiver exists.
    """
    current = getattr(receiver, _JITTER_BUFFER_ATTRIBUTE, None)
    if isinstance(current, ImmediateJitterBuffer):
        return True
    if current is None or not hasattr(current, "add"):
        logger.warning("aiortc's receiver has no %s; keeping its 80 ms audio prefetch", _JITTER_BUFFER_ATTRIBUTE)
        return False
    setattr(receiver, _JITTER_BUFFER_ATTRIBUTE, ImmediateJitterBuffer())
    return True


class PlayoutBuffer:
    """A small byte FIFO between the event loop (decoded audio in) and the playback thread (periods out).

    The loop pushes decoded PCM of any length; the playback thread pulls one period as soon as there is one, waiting
    at most until the sound card would run dry. Everything above ``max_bytes`` is dropped from the old end (a burst
    after a network stall). Steady-state latency is managed by :class:`~intercom.media.alsa.AlsaPlayback`, which
    writes each period on arrival; normally this buffer is empty.
    """

    def __init__(self, period_bytes: int, max_bytes: int, frame_bytes: int = 2) -> None:
        self._period_bytes = period_bytes
        self._max_bytes = max(max_bytes, period_bytes)
        self._frame_bytes = frame_bytes
        self._data = bytearray()
        self._cond = threading.Condition()
        self._closed = False
        self.dropped_bytes = 0

    def push(self, data: bytes) -> None:
        with self._cond:
            self._data += data
            excess = len(self._data) - self._max_bytes
            if excess > 0:
                excess = -(-excess // self._frame_bytes) * self._frame_bytes
                del self._data[:excess]
                self.dropped_bytes += excess
            if len(self._data) >= self._period_bytes:
                self._cond.notify()

    def pull(self, timeout: float) -> bytes | None:
        """One period of PCM, or None if none was ready within ``timeout`` seconds (or the buffer is closed)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._closed or len(self._data) >= self._period_bytes, timeout):
                return None
            if len(self._data) < self._period_bytes:
                return None
            period = bytes(self._data[: self._period_bytes])
            del self._data[: self._period_bytes]
            return period

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def buffered_bytes(self) -> int:
        with self._cond:
            return len(self._data)
