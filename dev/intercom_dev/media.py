"""Two media engines talking over loopback, with ALSA ``file`` devices for microphone and speaker.

Shared by the tests and the benchmarks, which must build their peers exactly the way the door does (through
:class:`~intercom.media.engine.MediaEngine`), only with files for sound devices and 127.0.0.1 for a network.

The sound devices are the runtime's file-backed ALSA PCMs (:mod:`intercom.media.filedevices`, also used by
``intercom run --simulate``); :func:`~intercom.media.filedevices.use_alsa_file_devices` must run before the process
opens its first ALSA device.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
from collections import defaultdict
from pathlib import Path

import numpy as np

from intercom.media.engine import MediaEngine
from intercom.media.filedevices import (  # noqa: F401 - the tests' and benchmarks' one import for media
    ALSA_FILE_CONFIG, mic_device, speaker_device, use_alsa_file_devices)
from intercom.media.settings import MediaSettings


def write_raw(path: Path, samples: np.ndarray) -> None:
    path.write_bytes(samples.astype("<i2").tobytes())


def read_raw(path: Path) -> np.ndarray:
    return np.frombuffer(path.read_bytes(), dtype="<i2").astype(np.int16)


def loopback_settings(mic: Path, speaker: Path, **overrides) -> MediaSettings:
    """Settings for a test peer: file devices with an emulated sound-card clock, ICE on 127.0.0.1 only."""
    settings = MediaSettings(
        capture_device=mic_device(mic),
        playback_device=speaker_device(speaker),
        echo_cancellation=False,
        camera="none",
        width=320,
        height=240,
        framerate=30,
        bitrate_kbps=500,
        keyframe_interval=2.0,
        pace_audio=True,
        host_addresses=("127.0.0.1",),
    )
    return dataclasses.replace(settings, **overrides)


class StateLog:
    """An ``on_state`` callback that remembers every report and lets a coroutine wait for one."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self._waiters: dict[tuple[str, str], asyncio.Event] = defaultdict(asyncio.Event)

    def __call__(self, call_id: str, state: str) -> None:
        self.events.append((call_id, state))
        self._waiters[(call_id, state)].set()

    async def wait(self, call_id: str, state: str, timeout: float = 15.0) -> None:
        try:
            await asyncio.wait_for(self._waiters[(call_id, state)].wait(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"call {call_id} did not reach {state!r} in {timeout} s; got {self.events}") from None


async def connect(
    offerer: MediaEngine, offerer_log: StateLog, answerer: MediaEngine, answerer_log: StateLog, call_id: str
):
    """Offer from one engine, answer from the other, and wait until both report ``connected``."""
    offer = await offerer.create_offer(call_id, [])
    answer = await answerer.create_answer(call_id, offer.sdp, [])
    await offerer.apply_answer(call_id, answer.sdp)
    await offerer.add_remote_candidates(call_id, [{"candidate": ""}])
    await answerer.add_remote_candidates(call_id, [{"candidate": ""}])
    await asyncio.gather(offerer_log.wait(call_id, "connected"), answerer_log.wait(call_id, "connected"))
    return offer, answer


class RecordingTap:
    """An :class:`~intercom.media.audio.AudioTap` that keeps every period with its device-clock time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.captured_periods: list[tuple[float, bytes]] = []
        self.played_periods: list[tuple[float, bytes]] = []

    def captured(self, data: bytes, mic_time: float) -> None:
        with self._lock:
            self.captured_periods.append((mic_time, data))

    def played(self, data: bytes, heard_time: float) -> None:
        with self._lock:
            self.played_periods.append((heard_time, data))


def timeline(periods: list[tuple[float, bytes]], origin: float, seconds: float, rate: int = 48000) -> np.ndarray:
    """Place timed periods on one sample grid starting at ``origin`` (for latency by cross-correlation)."""
    out = np.zeros(int(seconds * rate), dtype=np.int16)
    for start_time, data in periods:
        samples = np.frombuffer(data, dtype="<i2")
        start = round((start_time - origin) * rate)
        if start < 0 or start >= len(out):
            continue
        chunk = samples[: len(out) - start]
        out[start : start + len(chunk)] = chunk
    return out


def peer_connection(engine: MediaEngine, call_id: str):
    """The aiortc peer connection of a call (tests reach in to send RTCP a real phone would send)."""
    return engine._calls[call_id].pc


class FrameLog:
    """Consumes a remote video track, reading the synthetic camera's counter from every decoded frame."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, bool, float]] = []
        "(counter, key_frame, time.monotonic() when decoded)"
        self._task: asyncio.Task | None = None
        self._changed = asyncio.Event()

    def __call__(self, call_id: str, track) -> None:
        self._task = asyncio.ensure_future(self._run_consume(track))

    async def _run_consume(self, track) -> None:
        import time

        from aiortc.mediastreams import MediaStreamError

        from intercom.media.synthetic import read_frame_counter

        try:
            while True:
                frame = await track.recv()
                self.frames.append((read_frame_counter(frame), bool(frame.key_frame), time.monotonic()))
                self._changed.set()
        except (asyncio.CancelledError, MediaStreamError):
            pass

    async def wait_for(self, predicate, timeout: float = 15.0) -> None:
        async def waiting():
            while not predicate(self.frames):
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(waiting(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"video condition not met in {timeout} s; {len(self.frames)} frames") from None

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


@dataclasses.dataclass
class TwoWayResult:
    """What each side's speaker played in a two-way call, and the timed periods at both ALSA boundaries."""

    heard_by_a: np.ndarray
    heard_by_b: np.ndarray
    tap_a: RecordingTap
    tap_b: RecordingTap
    playout_a: dict
    playout_b: dict
    "Each speaker's playout counters: concealment chunks, frames cut, device underruns."


async def two_way_call(directory: Path, a_says: np.ndarray, b_says: np.ndarray, seconds: float, **settings):
    """A call between two engines on file devices: each side's microphone plays its signal, both at once."""
    directory.mkdir(parents=True, exist_ok=True)
    write_raw(directory / "a_in.raw", a_says)
    write_raw(directory / "b_in.raw", b_says)
    log_a, log_b = StateLog(), StateLog()
    tap_a, tap_b = RecordingTap(), RecordingTap()
    a = MediaEngine(loopback_settings(directory / "a_in.raw", directory / "a_out.raw", **settings), log_a,
                    audio_tap=lambda call_id: tap_a)
    b = MediaEngine(loopback_settings(directory / "b_in.raw", directory / "b_out.raw", **settings), log_b,
                    audio_tap=lambda call_id: tap_b)
    try:
        await connect(a, log_a, b, log_b, "call-1")
        await asyncio.sleep(seconds)
        stats = [_playout_stats(engine) for engine in (a, b)]
    finally:
        await a.close_all()
        await b.close_all()
    if ("call-1", "closed") not in log_a.events or ("call-1", "closed") not in log_b.events:
        raise AssertionError(f"the call was not closed on both sides: {log_a.events} {log_b.events}")
    tap_a._lock = tap_b._lock = None  # picklable for the trip back from a child process
    return TwoWayResult(read_raw(directory / "a_out.raw"), read_raw(directory / "b_out.raw"), tap_a, tap_b, *stats)


def _playout_stats(engine: MediaEngine) -> dict:
    speaker = engine._calls["call-1"].speaker
    if speaker is None:  # the speaker never started (a badly stalled machine): the call counts as glitched
        return {"silent_chunks": 0, "trimmed_frames": 0, "underruns": 1, "events": []}
    playback = speaker.playback
    return {"silent_chunks": playback.silent_chunks, "trimmed_frames": playback.trimmed_frames,
            "underruns": playback.underruns, "events": list(playback.events)}


def _two_way_call_sync(config: str, *args, **kwargs) -> TwoWayResult:
    os.environ["ALSA_CONFIG_PATH"] = config
    return asyncio.run(two_way_call(*args, **kwargs))


def two_way_call_in_fresh_process(directory: Path, a_says, b_says, seconds: float, **settings) -> TwoWayResult:
    """:func:`two_way_call` in a new interpreter, like the door's own process.

    Real-time audio threads in Python share the interpreter with everything else in the process: a test process that
    has run hundreds of other tests has a larger heap (longer garbage-collection pauses) and more going on. The
    audio tests measure the media path, so they run it where the door runs it, alone.
    """
    import concurrent.futures
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        future = pool.submit(
            _two_way_call_sync, os.environ.get("ALSA_CONFIG_PATH", ""), directory, a_says, b_says, seconds,
            **settings,
        )
        return future.result(timeout=120)
