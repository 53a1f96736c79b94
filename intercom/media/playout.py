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

import numpy as np

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

    The loop pushes decoded PCM of any length; the playback thread pulls exactly one period, waiting at most until the
    sound card would run dry. Latency is kept at its floor two ways:

    - a hard cap: everything above ``max_bytes`` is dropped from the old end (a burst after a network stall);
    - a slow trim: if audio has been left over after every pull for a whole window (25 pulls, half a second), that
      minimum is slack no jitter needed (typically a period left behind after a burst, or a sender clock running
      fast). It is dropped when it is quiet, so the cut is inaudible and the next packet is played as soon as the
      card wants it; if the door never hears a pause, it is dropped anyway after ``TRIM_PATIENCE`` windows.
    """

    TRIM_WINDOW = 25
    "Pulls over which the minimum leftover is taken."
    TRIM_PATIENCE = 10
    "Windows to wait for a quiet moment before slack is dropped regardless."
    QUIET_PEAK = 328
    "Peak sample value (-40 dBFS) below which dropped audio counts as silence."

    def __init__(self, period_bytes: int, max_bytes: int, keep_bytes: int = 0, frame_bytes: int = 2) -> None:
        self._period_bytes = period_bytes
        self._max_bytes = max(max_bytes, period_bytes)
        self._keep_bytes = keep_bytes
        self._frame_bytes = frame_bytes
        self._data = bytearray()
        self._cond = threading.Condition()
        self._closed = False
        self._pulls = 0
        self._min_leftover: int | None = None
        self._patience = 0
        self.dropped_bytes = 0
        self.trimmed_bytes = 0

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
            self._trim()
            return period

    def _trim(self) -> None:
        leftover = len(self._data)
        self._min_leftover = leftover if self._min_leftover is None else min(self._min_leftover, leftover)
        self._pulls += 1
        if self._pulls < self.TRIM_WINDOW:
            return
        slack = (self._min_leftover - self._keep_bytes) // self._frame_bytes * self._frame_bytes
        self._pulls = 0
        self._min_leftover = None
        if slack <= 0:
            self._patience = 0
            return
        quiet = int(np.abs(np.frombuffer(bytes(self._data[:slack]), dtype=np.int16).astype(np.int32)).max()) < self.QUIET_PEAK
        self._patience += 1
        if quiet or self._patience >= self.TRIM_PATIENCE:
            del self._data[:slack]
            self.trimmed_bytes += slack
            self._patience = 0

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def buffered_bytes(self) -> int:
        with self._cond:
            return len(self._data)
