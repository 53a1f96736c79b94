"""ALSA capture and playback with pyalsaaudio, each in its own thread.

pyalsaaudio's ``read()`` and ``write()`` block for up to a period, so they must never run on the event loop. Each
direction gets one thread that owns its PCM handle from open to close. Data crosses to and from the loop through
bounded queues that drop the oldest audio when full: a stalled consumer costs a glitch, never added latency.

Devices are opened by name (``plughw:CARD=Device,DEV=0``, ``default:CARD=…``): card indices change when USB
devices are plugged in a different order, names do not.

The ALSA ``file`` and ``null`` PCMs, which the tests use to read a prepared recording and to record the speaker, never
block. :class:`PacedPcm` then emulates a sound card's clock: capture delivers a period only once it has elapsed, and
playback blocks while the emulated buffer is full. Real devices pace themselves and do not need it.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import IntercomError

logger = logging.getLogger(__name__)

SAMPLE_WIDTH = 2
"Bytes per sample: signed 16-bit little-endian, the format Opus and the AEC take."


@dataclass(frozen=True)
class PcmConfig:
    """How one PCM is opened."""

    device: str
    rate: int = 48000
    channels: int = 1
    period_frames: int = 960
    periods: int = 4
    pace: bool = False

    @property
    def period_bytes(self) -> int:
        return self.period_frames * self.channels * SAMPLE_WIDTH

    @property
    def period_seconds(self) -> float:
        return self.period_frames / self.rate


class AlsaError(IntercomError, OSError):
    """An ALSA device could not be opened or failed while running."""


def open_pcm(config: PcmConfig, capture: bool):
    """Open an ALSA PCM in blocking mode, s16le, with the configured period and buffer size."""
    import alsaaudio

    try:
        pcm = alsaaudio.PCM(
            type=alsaaudio.PCM_CAPTURE if capture else alsaaudio.PCM_PLAYBACK,
            mode=alsaaudio.PCM_NORMAL,
            rate=config.rate,
            channels=config.channels,
            format=alsaaudio.PCM_FORMAT_S16_LE,
            periodsize=config.period_frames,
            periods=config.periods,
            device=config.device,
        )
    except alsaaudio.ALSAAudioError as exc:
        raise AlsaError(f"cannot open ALSA {'capture' if capture else 'playback'} device {config.device!r}: {exc}") from exc
    if config.pace:
        return PacedPcm(pcm, config, capture)
    return pcm


class PacedPcm:
    """Gives a PCM that never blocks (``file``/``null`` plugins) the timing of a sound card.

    Capture: period *n* is returned no earlier than ``start + (n + 1) × period``, as a card's DMA would deliver it.
    Playback: the card plays ``rate`` frames per second from a buffer of ``periods × period`` frames; ``write`` blocks
    while that buffer is full, and an empty buffer is an underrun (counted, and the clock restarts from the next
    write, as ALSA's ``prepare`` would). ``avail()`` answers like ALSA's.
    """

    def __init__(self, pcm, config: PcmConfig, capture: bool) -> None:
        self._pcm = pcm
        self._config = config
        self._capture = capture
        self._buffer_frames = config.period_frames * config.periods
        self._start: float | None = None
        self._frames = 0
        self.underruns = 0

    def _consumed(self, now: float) -> float:
        return (now - self._start) * self._config.rate if self._start is not None else 0.0

    def read(self) -> tuple[int, bytes]:
        now = time.monotonic()
        if self._start is None:
            self._start = now
        due = self._start + (self._frames + self._config.period_frames) / self._config.rate
        if due > now:
            time.sleep(due - now)
        length, data = self._pcm.read()
        if length > 0:
            self._frames += length
        return length, data

    def write(self, data: bytes) -> int:
        frames = len(data) // (self._config.channels * SAMPLE_WIDTH)
        now = time.monotonic()
        if self._start is None or self._frames - self._consumed(now) < 0:
            if self._start is not None:
                self.underruns += 1
            self._start = now
            self._frames = 0
        wait = (self._frames + frames - self._buffer_frames - self._consumed(now)) / self._config.rate
        if wait > 0:
            time.sleep(wait)
        self._frames += frames
        return self._pcm.write(data)

    def avail(self) -> int:
        """Free frames in the playback buffer, or frames ready to read in the capture buffer."""
        now = time.monotonic()
        if self._capture:
            ready = self._consumed(now) - self._frames if self._start is not None else 0
            return max(0, int(ready))
        fill = self._frames - self._consumed(now)
        if fill < 0:
            return -32  # -EPIPE, as snd_pcm_avail reports an underrun
        return int(self._buffer_frames - fill)

    def close(self) -> None:
        self._pcm.close()


class AlsaCapture:
    """Reads the microphone in a thread and hands 20 ms periods to a consumer.

    ``on_period(data, mic_time)`` is called in the capture thread for every period, with the ``time.monotonic()``
    at which the period's first sample entered the microphone. The consumer must be quick (the AEC plus a
    ``call_soon_threadsafe``); a slow one makes ALSA overrun, which is counted and skipped.
    """

    def __init__(self, config: PcmConfig, on_period: Callable[[bytes, float], None]) -> None:
        self.config = config
        self._on_period = on_period
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.overruns = 0
        self.error: Exception | None = None

    def start(self) -> None:
        """Open the device (raising :class:`AlsaError`) and start the capture thread."""
        pcm = open_pcm(self.config, capture=True)
        self._thread = threading.Thread(target=self._run_capture, args=(pcm,), name="alsa-capture", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the thread to stop after the current period; does not wait."""
        self._stop.set()

    def stop(self) -> None:
        """Stop the thread and close the device. Returns within about one period."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run_capture(self, pcm) -> None:
        period = self.config.period_seconds
        bytes_per_frame = self.config.channels * SAMPLE_WIDTH
        try:
            while not self._stop.is_set():
                length, data = pcm.read()
                now = time.monotonic()
                if length < 0:
                    self.overruns += 1
                    logger.warning("ALSA capture overrun on %s", self.config.device)
                    continue
                if length != self.config.period_frames:
                    continue
                # Frames still waiting in the ALSA buffer were captured after this period.
                waiting = max(0, pcm.avail())
                mic_time = now - period - waiting / self.config.rate
                self._on_period(data[: length * bytes_per_frame], mic_time)
        except Exception as exc:  # an unplugged device, mostly
            self.error = exc
            logger.error("ALSA capture on %s stopped: %s", self.config.device, exc)
        finally:
            pcm.close()


class AlsaPlayback:
    """Writes the speaker in a thread, owning the playout timing.

    Each received period is written as soon as it arrives, on top of what the card still has queued, so the
    latency a period sees is the *fill* just before its write. Writing on the card's period boundaries instead would
    make each packet wait for the next boundary: up to a period, 10 ms on average, for nothing. The fill adapts:

    - nothing to play when the fill would fall below a floor (``floor_ms``, the margin for this thread's own
      scheduling delays): a short chunk of silence is written (concealment; the card never underruns). That chunk stays queued as extra margin against the next late packet;
    - fill above the (adaptive) target on every write for a whole window: that slack is cut from the next period if
      it is quiet (inaudible), or regardless after a while. The target grows with each concealment and decays slowly
      back to its minimum when packets arrive on time.

    ``source(timeout)`` returns the next period or None; ``on_played(data, heard_time)`` gets the exact bytes
    written and the ``time.monotonic()`` at which their first sample reaches the speaker (the echo canceller's
    far-end reference, and the benchmarks' clock). The ALSA buffer (``periods`` × period) is only a ceiling.
    """

    CHUNK_MS = 5
    "Length of a concealment chunk."
    WINDOW = 25
    "Writes over which the minimum fill is taken (half a second)."
    STEP_MS = 5
    "How much the target grows after a concealment."
    PATIENCE = 10
    "Windows to wait for a quiet moment before slack is cut regardless; also the clean windows before the target decays."
    QUIET_PEAK = 328
    "Peak sample value (-40 dBFS) below which cut audio counts as silence."
    DEADBAND_MS = 5
    "Slack smaller than this is left alone: it is timing noise, and every cut is a small discontinuity."

    def __init__(
        self,
        config: PcmConfig,
        source: Callable[[float], bytes | None],
        on_played: Callable[[bytes, float], None] | None = None,
        target_ms: int = 20,
        max_target_ms: int = 60,
        floor_ms: int = 10,
    ) -> None:
        self.config = config
        self._source = source
        self._on_played = on_played
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pcm = None
        frame_bytes = config.channels * SAMPLE_WIDTH
        self._frame_bytes = frame_bytes
        self._floor = self._frames_of(floor_ms)
        self._min_target = max(self._floor, self._frames_of(target_ms))
        self._max_target = max(self._min_target, self._frames_of(max_target_ms))
        self.target = self._min_target
        "Current fill target in frames."
        self.silent_chunks = 0
        "Concealment chunks written because no audio was ready in time (not device underruns)."
        self.trimmed_frames = 0
        self.events: collections.deque[tuple[float, str, int]] = collections.deque(maxlen=100)
        "The latest playout adjustments: (time.monotonic(), 'silence' or 'cut', frames)."
        self.written_periods = 0
        self.error: Exception | None = None

    def _frames_of(self, ms: int) -> int:
        # Multiples of 3 frames keep the echo canceller's 48 -> 16 kHz decimation in phase across chunks.
        return self.config.rate * ms // 1000 // 3 * 3

    def start(self) -> None:
        """Open the device (raising :class:`AlsaError`) and start the playback thread."""
        pcm = self._pcm = open_pcm(self.config, capture=False)
        self._thread = threading.Thread(target=self._run_playback, args=(pcm,), name="alsa-playback", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self) -> None:
        """Stop the thread and close the device (without draining: a hangup should be silent at once)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    @property
    def underruns(self) -> int:
        """Device underruns seen by the paced emulation (real ALSA recovers from them inside ``write``)."""
        return getattr(self._pcm, "underruns", 0)

    def _run_playback(self, pcm) -> None:
        config = self.config
        capacity = config.period_frames * config.periods
        safety = self._floor
        chunk = bytes(self._frames_of(self.CHUNK_MS) * self._frame_bytes)
        playing = False
        min_fill: int | None = None
        writes = clean_windows = 0
        pending_cut = patience = 0
        try:
            self._write(pcm, bytes(self.target * self._frame_bytes), capacity)
            while not self._stop.is_set():
                fill = self._fill(pcm, capacity)
                data = self._source(max(0.0, (fill - safety) / config.rate))
                if data is None:
                    self._write(pcm, chunk, capacity)
                    if playing:
                        self.silent_chunks += 1
                        self.events.append((time.monotonic(), "silence", len(chunk) // self._frame_bytes))
                        self.target = min(self._max_target, self.target + self._frames_of(self.STEP_MS))
                        clean_windows = 0
                    continue
                fill = self._fill(pcm, capacity)
                if not playing:
                    # The first audio: start it at the target fill, whatever phase it arrived in, so the margin
                    # against late packets is the full (target - floor) from the start.
                    playing = True
                    if fill < self.target:
                        self._write(pcm, bytes((self.target - fill) // 3 * 3 * self._frame_bytes), capacity)
                        fill = self._fill(pcm, capacity)
                min_fill = fill if min_fill is None else min(min_fill, fill)
                writes += 1
                if writes == self.WINDOW:
                    slack = min_fill - self.target
                    pending_cut = slack // 3 * 3 if slack >= self._frames_of(self.DEADBAND_MS) else 0
                    clean_windows += 1
                    if clean_windows >= self.PATIENCE:
                        self.target = max(self._min_target, self.target - self._frames_of(1))
                    writes, min_fill = 0, None
                if pending_cut:
                    cut = min(pending_cut, len(data) // self._frame_bytes) * self._frame_bytes
                    patience += 1
                    if self._quiet(data[:cut]) or patience > self.PATIENCE * self.WINDOW:
                        data = data[cut:]
                        self.trimmed_frames += cut // self._frame_bytes
                        self.events.append((time.monotonic(), "cut", cut // self._frame_bytes))
                        pending_cut, patience = 0, 0
                if data:
                    self._write(pcm, data, capacity)
        except Exception as exc:
            self.error = exc
            logger.error("ALSA playback on %s stopped: %s", config.device, exc)
        finally:
            pcm.close()

    def _quiet(self, data: bytes) -> bool:
        if not data:
            return True
        samples = memoryview(data).cast("h")
        return max(max(samples), -min(samples)) < self.QUIET_PEAK

    @staticmethod
    def _fill(pcm, capacity: int) -> int:
        """Frames still queued in the card (0 after an underrun)."""
        avail = pcm.avail()
        return capacity - avail if 0 <= avail <= capacity else 0

    def _write(self, pcm, data: bytes, capacity: int) -> None:
        # The new data starts playing once what is queued now has played: timed before the write, so that a slow
        # write (a first write that creates the test's output file, say) does not skew it.
        heard = time.monotonic() + self._fill(pcm, capacity) / self.config.rate
        pcm.write(data)
        if len(data) >= self.config.period_bytes:
            self.written_periods += 1
        if self._on_played is not None:
            self._on_played(data, heard)
