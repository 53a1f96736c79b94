"""A door in its own process sending synthetic video to a viewer in this one (video benchmarks).

The sender runs in a spawned process, as media.md §4 measured it, so its CPU time is what the Pi's intercom process
would spend on the call: capture, encode (or not), packetize, SRTP, plus the call's audio. Frames carry the
synthetic camera's counter; the sender reports when each counter was "exposed" (``time.monotonic()``, which is
system-wide), the viewer when it decoded it.

Modes (what the door's camera delivers):

- ``preencoded``: H.264 encoded before the call and replayed, so the sender only packetizes: what a hardware
  encoder (picamera2 on a Pi 4) leaves to the intercom process;
- ``camera_h264``: the synthetic camera's live libx264 (ultrafast, baseline) in its own thread: a Pi 5's picamera2;
- ``aiortc_h264`` / ``aiortc_vp8``: raw frames that aiortc encodes itself (the baseline).
"""

from __future__ import annotations

import asyncio
import fractions
import multiprocessing
import threading
import time
from pathlib import Path

import av
import numpy as np
from _common import ALSA_TEST_CONFIG, setup

from intercom.media import MediaEngine
from intercom_dev import measure
from intercom.media.camera import Camera, CameraConfig
from intercom.media.h264 import X264Encoder
from intercom.media.synthetic import SCENE_FRAMES, SyntheticCamera, make_scene, draw_frame_counter
from intercom_dev.media import FrameLog, StateLog, loopback_settings, use_alsa_file_devices, write_raw

LOOP = 60
"Frames in a replayed loop: one keyframe interval at 30 fps."
_TIME_BASE = fractions.Fraction(1, 90000)


def _scene_frames(config: CameraConfig) -> list[np.ndarray]:
    """LOOP yuv420p frames with their counters drawn in, as (h*3/2, w) arrays."""
    scene = make_scene(config.width, config.height)
    frames = []
    for counter in range(LOOP):
        luma, u, v = scene[counter % SCENE_FRAMES]
        luma = luma.copy()
        draw_frame_counter(luma, counter)
        frames.append(np.concatenate((luma, u.reshape(-1, config.width), v.reshape(-1, config.width))))
    return frames


class _ReplayCamera(Camera):
    """Delivers prepared items at the frame rate from ``_run_capture``; subclasses say what an item becomes."""

    def __init__(self, config: CameraConfig, on_capture) -> None:
        super().__init__(config)
        self._on_capture = on_capture
        self._stop = threading.Event()
        self._restart = threading.Event()
        self._thread: threading.Thread | None = None

    def _start(self, sink) -> None:
        self._thread = threading.Thread(target=self._run_capture, args=(sink,), daemon=True)
        self._thread.start()

    def request_keyframe(self) -> None:
        self._restart.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run_capture(self, sink) -> None:
        interval = 1 / self.config.framerate
        start = time.monotonic()
        n = 0
        index = 0
        while not self._stop.wait(max(0.0, start + n * interval - time.monotonic())):
            if self._restart.is_set():
                self._restart.clear()
                index = 0
            self._on_capture(index, time.monotonic())
            sink(self._item(index, n))
            index = (index + 1) % LOOP
            n += 1


class PreencodedCamera(_ReplayCamera):
    """Replays one keyframe interval of H.264 encoded before the call (a keyframe request restarts the loop)."""

    def __init__(self, config: CameraConfig, on_capture) -> None:
        super().__init__(config, on_capture)
        encoder = X264Encoder(config)
        self._units = []
        for counter, array in enumerate(_scene_frames(config)):
            frame = av.VideoFrame.from_ndarray(array, format="yuv420p")
            self._units += encoder.encode(frame, 0, keyframe=counter == 0)
        encoder.close()
        assert len(self._units) == LOOP and self._units[0].keyframe

    def start_encoded(self, sink) -> None:
        self._start(sink)

    def start_raw(self, sink) -> None:
        raise NotImplementedError("pre-encoded camera")

    def _item(self, index, n):
        unit = self._units[index]
        return type(unit)(data=unit.data, keyframe=unit.keyframe, timestamp_us=int(n * 1e6 / self.config.framerate))


class RawReplayCamera(_ReplayCamera):
    """Replays prepared raw frames, for aiortc to encode (a real camera also hands over ready frames)."""

    def __init__(self, config: CameraConfig, on_capture) -> None:
        super().__init__(config, on_capture)
        self._arrays = _scene_frames(config)

    def start_raw(self, sink) -> None:
        self._start(sink)

    def start_encoded(self, sink) -> None:
        raise NotImplementedError("raw camera")

    def _item(self, index, n):
        frame = av.VideoFrame.from_ndarray(self._arrays[index], format="yuv420p")
        frame.pts = int(n * 90000 / self.config.framerate)
        frame.time_base = _TIME_BASE
        return frame


def _door_process(conn, mode: str, width: int, height: int, fps: int, warmup: float, window: float, directory: str):
    """The sender: offer, answer over the pipe, media for warmup + window seconds; reports CPU and capture times."""
    use_alsa_file_devices(ALSA_TEST_CONFIG)
    directory = Path(directory)
    captures: dict[int, list[float]] = {}

    def on_capture(counter: int, when: float) -> None:
        captures.setdefault(counter, []).append(when)

    config = CameraConfig(width=width, height=height, framerate=fps, bitrate_kbps=2500, keyframe_interval=2.0)

    def camera_factory(call_id):
        if mode == "preencoded":
            return PreencodedCamera(config, on_capture)
        if mode == "camera_h264":
            return SyntheticCamera(config, on_capture=on_capture)
        return RawReplayCamera(config, on_capture)

    settings = loopback_settings(
        directory / "door_in.raw", directory / "door_out.raw", camera="synthetic", width=width, height=height,
        framerate=fps, bitrate_kbps=2500, prefer_encoded_video=mode in ("preencoded", "camera_h264"),
    )

    async def run():
        log = StateLog()
        door = MediaEngine(settings, log, camera_factory=camera_factory)
        offer = await door.create_offer("bench", [])
        conn.send(offer.sdp)
        answer = conn.recv()
        await door.apply_answer("bench", answer)
        await door.add_remote_candidates("bench", [{"candidate": ""}])
        await log.wait("bench", "connected")
        await asyncio.sleep(warmup)
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.sleep(window)
        cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0)
        conn.send({"cpu_cores": cpu, "captures": captures})
        conn.recv()  # the viewer is done
        await door.close_all()

    asyncio.run(run())


async def _viewer(conn, directory: Path, codecs) -> dict:
    log, frames = StateLog(), FrameLog()
    viewer = MediaEngine(
        loopback_settings(directory / "viewer_in.raw", directory / "viewer_out.raw"),
        log,
        on_remote_video=frames,
        video_codecs=codecs,
    )
    loop = asyncio.get_running_loop()
    offer = await loop.run_in_executor(None, conn.recv)
    answer = await viewer.create_answer("bench", offer, [])
    conn.send(answer.sdp)
    await viewer.add_remote_candidates("bench", [{"candidate": ""}])
    await log.wait("bench", "connected")
    result = await loop.run_in_executor(None, conn.recv)
    conn.send("done")
    await frames.aclose()
    await viewer.close_all()
    result["frames"] = frames.frames
    return result


def run_call(mode: str, width: int, height: int, fps: int, warmup: float = 3.0, window: float = 10.0) -> dict:
    """One call with the door in a child process. Returns sender CPU (cores), latencies (ms) and frame counts."""
    directory = setup()
    for name in ("door_in.raw", "viewer_in.raw"):
        write_raw(directory / name, measure.pad(measure.tone(440, 0.5), 0, warmup + window + 10))
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(
        target=_door_process, args=(theirs, mode, width, height, fps, warmup, window, str(directory))
    )
    process.start()
    codecs = ("VP8",) if mode == "aiortc_vp8" else ("H264",)
    try:
        result = asyncio.run(_viewer(ours, directory, codecs))
    finally:
        process.join(30)
        if process.is_alive():
            process.kill()
    captures = result["captures"]
    latencies = []
    for counter, _, decoded in result["frames"]:
        # The latest exposure of this counter before it was decoded (replayed loops reuse counters).
        exposed = [t for t in captures.get(counter, []) if t <= decoded]
        if exposed:
            latencies.append(1000 * (decoded - max(exposed)))
    return {
        "cpu_cores": round(result["cpu_cores"], 3),
        "latency_ms_median": round(float(np.median(latencies)), 1) if latencies else None,
        "latency_ms_p90": round(float(np.percentile(latencies, 90)), 1) if latencies else None,
        "frames_decoded": len(result["frames"]),
    }
