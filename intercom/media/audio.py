"""The door's audio on both sides of aiortc: the microphone as a track, the remote track into the speaker."""

from __future__ import annotations

import asyncio
import collections
import fractions
import logging
from typing import Protocol

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .aec import EchoCanceller
from .alsa import SAMPLE_WIDTH, AlsaCapture, AlsaError, AlsaPlayback, PcmConfig
from .playout import PlayoutBuffer

logger = logging.getLogger(__name__)


class AudioTap(Protocol):
    """Observes the audio at the ALSA boundary, with device-clock times (tests and benchmarks)."""

    def captured(self, data: bytes, mic_time: float) -> None:
        """A microphone period as captured (before echo cancellation); called in the capture thread."""

    def played(self, data: bytes, heard_time: float) -> None:
        """A period exactly as written to the speaker; called in the playback thread."""


class MicrophoneTrack(MediaStreamTrack):
    """An audio track that reads the ALSA microphone, one 20 ms period per frame.

    The device is opened on the first ``recv()``, i.e. when aiortc starts sending after the connection is up, so a
    call that never connects (a glare loser, an unanswered invite) never holds the microphone. Periods wait for
    ``recv()`` in a short deque that drops the oldest: if the loop stalls, old audio is lost rather than delayed.
    """

    kind = "audio"

    def __init__(
        self,
        config: PcmConfig,
        echo_canceller: EchoCanceller | None = None,
        tap: AudioTap | None = None,
        max_queued: int = 3,
    ) -> None:
        super().__init__()
        self._config = config
        self._echo_canceller = echo_canceller
        self._tap = tap
        self._periods: collections.deque[bytes] = collections.deque(maxlen=max_queued)
        self._waiter: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._capture: AlsaCapture | None = None
        self._pts = 0
        self._time_base = fractions.Fraction(1, config.rate)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._capture is None:
            self._start()
        while not self._periods:
            if self.readyState != "live" or (self._capture is not None and self._capture.error is not None):
                raise MediaStreamError
            self._waiter = self._loop.create_future()
            await self._waiter
        data = self._periods.popleft()
        if self._config.channels == 1:
            # aiortc's Opus encoder takes stereo and upmixes mono through libswresample at -3 dB; duplicating the
            # channel here keeps the visitor's level (Opus codes two equal channels at almost no extra cost).
            data = np.repeat(np.frombuffer(data, dtype=np.int16), 2).tobytes()
        frame = av.AudioFrame(format="s16", layout="stereo", samples=self._config.period_frames)
        frame.planes[0].update(data)
        frame.pts = self._pts
        frame.sample_rate = self._config.rate
        frame.time_base = self._time_base
        self._pts += self._config.period_frames
        return frame

    def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._capture = AlsaCapture(self._config, self._on_period)
        try:
            self._capture.start()
        except AlsaError as exc:
            logger.error("%s; the call goes on without sound from the door", exc)
            self._capture = None
            self.stop()
            raise MediaStreamError from exc

    def _on_period(self, data: bytes, mic_time: float) -> None:
        """Capture thread: cancel the echo, then hand the period to the loop."""
        if self._tap is not None:
            self._tap.captured(data, mic_time)
        if self._echo_canceller is not None:
            data = self._echo_canceller.process(data, mic_time)
        try:
            self._loop.call_soon_threadsafe(self._deliver, data)
        except RuntimeError:  # the loop is closed: the call is over
            pass

    def _deliver(self, data: bytes) -> None:
        self._periods.append(data)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def stop(self) -> None:
        super().stop()
        if self._capture is not None:
            self._capture.request_stop()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def aclose(self) -> None:
        """Stop the track and wait until the capture thread has exited and closed the device."""
        self.stop()
        if self._capture is not None:
            await asyncio.to_thread(self._capture.stop)

    @property
    def overruns(self) -> int:
        return self._capture.overruns if self._capture is not None else 0


class SpeakerSink:
    """Plays a remote audio track on the ALSA speaker.

    ``_run_receive`` takes each decoded frame as soon as aiortc has it (no waiting, no pacing on the loop), converts
    it to the speaker's format and pushes it into a :class:`PlayoutBuffer`. The playback thread, clocked by the sound
    card, takes it from there. Each period written is passed to the echo canceller as its far-end reference.
    """

    def __init__(
        self,
        track: MediaStreamTrack,
        config: PcmConfig,
        playout_max_ms: int,
        playout_target_ms: int = 20,
        playout_floor_ms: int = 10,
        echo_canceller: EchoCanceller | None = None,
        tap: AudioTap | None = None,
    ) -> None:
        self._track = track
        self._config = config
        self._echo_canceller = echo_canceller
        self._tap = tap
        max_bytes = config.rate * playout_max_ms // 1000 * config.channels * SAMPLE_WIDTH
        self.playout = PlayoutBuffer(config.period_bytes, max_bytes, frame_bytes=config.channels * SAMPLE_WIDTH)
        self.playback = AlsaPlayback(
            config, self.playout.pull, self._on_played, target_ms=playout_target_ms, max_target_ms=playout_max_ms,
            floor_ms=playout_floor_ms,
        )
        self._resampler = av.AudioResampler(
            format="s16", layout="mono" if config.channels == 1 else "stereo", rate=config.rate
        )
        self._task: asyncio.Task | None = None
        self._exited = asyncio.Event()
        self._bytes_per_frame = config.channels * SAMPLE_WIDTH

    async def start(self) -> None:
        """Open the speaker and start playing. Raises :class:`AlsaError` if the device cannot be opened."""
        await asyncio.to_thread(self.playback.start)
        self._task = asyncio.ensure_future(self._run_receive())

    async def _run_receive(self) -> None:
        try:
            while True:
                frame = await self._track.recv()
                self.playout.push(self._to_speaker_format(frame))
        except (asyncio.CancelledError, MediaStreamError):
            pass
        except Exception:
            logger.exception("audio receive loop failed")
        finally:
            self._exited.set()

    def _to_speaker_format(self, frame: av.AudioFrame) -> bytes:
        """Decoded audio as s16 at the speaker's rate and channel count.

        aiortc's Opus decoder gives 48 kHz s16 stereo with equal channels (the door sends mono): the average of the
        two is exact and, unlike libswresample's downmix, keeps the level (swr mixes at -3 dB). Other codecs (G.711
        at 8 kHz) go through the resampler.
        """
        channels = len(frame.layout.channels)
        if frame.format.name == "s16" and frame.sample_rate == self._config.rate:
            data = bytes(frame.planes[0])[: frame.samples * channels * SAMPLE_WIDTH]
            if channels == self._config.channels:
                return data
            if channels == 2 and self._config.channels == 1:
                stereo = np.frombuffer(data, dtype=np.int16).reshape(-1, 2).astype(np.int32)
                return ((stereo[:, 0] + stereo[:, 1]) // 2).astype(np.int16).tobytes()
        return b"".join(
            bytes(out.planes[0])[: out.samples * self._bytes_per_frame] for out in self._resampler.resample(frame)
        )

    def _on_played(self, data: bytes, heard_time: float) -> None:
        if self._echo_canceller is not None:
            self._echo_canceller.far_end(data, heard_time)
        if self._tap is not None:
            self._tap.played(data, heard_time)

    async def aclose(self) -> None:
        """Stop receiving, stop the playback thread and close the device."""
        if self._task is not None:
            self._task.cancel()
            await self._exited.wait()
        self.playout.close()
        await asyncio.to_thread(self.playback.stop)

