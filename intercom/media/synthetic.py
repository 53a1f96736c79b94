"""A camera for machines without one: a generated scene with a frame counter drawn into every frame.

The scene is a smooth texture with a moving box and sensor-like noise, so the encoder does real work (a flat
frame would make the CPU figures meaningless). The counter is 24 black or white blocks across the top, large enough
to survive lossy compression, so a receiver can read which frame it decoded (:func:`read_frame_counter`): that is
how the tests check order and the benchmarks measure glass-to-glass latency.
"""

from __future__ import annotations

import fractions
import logging
import threading
import time
from collections.abc import Callable

import av
import numpy as np

from .camera import Camera, CameraConfig, EncodedSink, RawSink
from .h264 import X264Encoder

logger = logging.getLogger(__name__)

COUNTER_BITS = 24
COUNTER_ROWS = 16
"Height of the counter stripe in pixels."
VIDEO_TIME_BASE = fractions.Fraction(1, 90000)
SCENE_FRAMES = 30


def _block_width(width: int) -> int:
    return width // COUNTER_BITS // 2 * 2


def draw_frame_counter(luma: np.ndarray, counter: int) -> None:
    """Stamp ``counter`` (24 bits, most significant first) into the top rows of a luma plane, in place."""
    block = _block_width(luma.shape[1])
    for bit in range(COUNTER_BITS):
        value = 235 if (counter >> (COUNTER_BITS - 1 - bit)) & 1 else 16
        luma[:COUNTER_ROWS, bit * block : (bit + 1) * block] = value


def read_frame_counter(frame: av.VideoFrame) -> int:
    """The counter :func:`draw_frame_counter` put into a (decoded) frame."""
    luma = frame.to_ndarray(format="gray")
    block = _block_width(frame.width)
    rows = luma[COUNTER_ROWS // 4 : COUNTER_ROWS * 3 // 4]
    counter = 0
    for bit in range(COUNTER_BITS):
        centre = rows[:, bit * block + block // 4 : (bit + 1) * block - block // 4]
        counter = (counter << 1) | int(centre.mean() > 128)
    return counter


def make_scene(width: int, height: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """A loop of ``SCENE_FRAMES`` yuv420p frames (Y, U, V planes)."""
    rng = np.random.default_rng(2024)
    y, x = np.mgrid[0:height, 0:width]
    texture = 128 + 50 * np.sin(x / 37.0) * np.cos(y / 23.0) + 30 * np.sin((x + 2 * y) / 61.0)
    u = np.full((height // 2, width // 2), 110, dtype=np.uint8)
    v = (140 + 20 * np.sin(np.arange(width // 2) / 17.0))[None, :].repeat(height // 2, axis=0).astype(np.uint8)
    box = max(8, height // 4)
    frames = []
    for i in range(SCENE_FRAMES):
        luma = texture + rng.normal(0, 2, texture.shape)
        left = int((width - box) * (0.5 + 0.5 * np.sin(2 * np.pi * i / SCENE_FRAMES)))
        top = (height - box) // 2
        luma[top : top + box, left : left + box] = 220
        frames.append((np.clip(luma, 0, 255).astype(np.uint8), u, v))
    return frames


class SyntheticCamera(Camera):
    """Generates frames at the configured rate in ``_run_capture``; in encoded mode it encodes them with libx264.

    ``on_capture(counter, time)`` (optional) is called with each frame's counter and the ``time.monotonic()`` it was
    "exposed", for latency measurements.
    """

    def __init__(self, config: CameraConfig, on_capture: Callable[[int, float], None] | None = None) -> None:
        super().__init__(config)
        if config.width < COUNTER_BITS * 4 or config.height < COUNTER_ROWS * 2 or config.width % 2 or config.height % 4:
            raise ValueError(f"synthetic camera: {config.width}x{config.height} is too small (or not a multiple of 2x4)")
        self._on_capture = on_capture
        self._stop = threading.Event()
        self._keyframe = threading.Event()
        self._thread: threading.Thread | None = None
        self.frames = 0

    def start_encoded(self, sink: EncodedSink) -> None:
        self._start(encoder=X264Encoder(self.config), sink=sink)

    def start_raw(self, sink: RawSink) -> None:
        self._start(encoder=None, sink=sink)

    def _start(self, encoder: X264Encoder | None, sink) -> None:
        if self._thread is not None:
            raise RuntimeError("camera already started")
        self._thread = threading.Thread(
            target=self._run_capture, args=(encoder, sink), name="synthetic-camera", daemon=True
        )
        self._thread.start()

    def request_keyframe(self) -> None:
        self._keyframe.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run_capture(self, encoder: X264Encoder | None, sink) -> None:
        try:
            scene = make_scene(self.config.width, self.config.height)
            interval = 1.0 / self.config.framerate
            start = time.monotonic()
            counter = 0
            while not self._stop.is_set():
                due = start + counter * interval
                delay = due - time.monotonic()
                if delay > 0:
                    if self._stop.wait(delay):
                        break
                elif delay < -interval:
                    # Fell behind (a busy machine): skip frames instead of bursting them out late.
                    counter += int(-delay / interval)
                    continue
                luma, u, v = scene[counter % SCENE_FRAMES]
                luma = luma.copy()
                draw_frame_counter(luma, counter)
                planes = (luma, u.reshape(-1, self.config.width), v.reshape(-1, self.config.width))
                frame = av.VideoFrame.from_ndarray(np.concatenate(planes), format="yuv420p")
                exposed = time.monotonic()
                if self._on_capture is not None:
                    self._on_capture(counter, exposed)
                timestamp_us = int(counter * 1_000_000 / self.config.framerate)
                if encoder is None:
                    frame.pts = int(counter * 90000 / self.config.framerate)
                    frame.time_base = VIDEO_TIME_BASE
                    sink(frame)
                else:
                    keyframe = self._keyframe.is_set()
                    self._keyframe.clear()
                    for encoded in encoder.encode(frame, timestamp_us, keyframe=keyframe):
                        sink(encoded)
                self.frames += 1
                counter += 1
        except Exception:
            logger.exception("synthetic camera failed")
        finally:
            if encoder is not None:
                encoder.close()
