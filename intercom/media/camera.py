"""The camera interface: a video source that delivers H.264 access units or raw frames from its own thread.

Two kinds of output, because two kinds of peer exist. Phones and browsers decode H.264, and the cheapest way to
send it is the camera's own encoder (the Pi 4's hardware, or libx264 on a Pi 5): aiortc then only packetizes.
Peers without H.264 (Nheko needs VP8) get raw frames, and aiortc encodes them itself.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass

import av


@dataclass(frozen=True)
class EncodedFrame:
    """One H.264 access unit as a camera's encoder emits it (picamera2's ``Output.outputframe`` arguments)."""

    data: bytes
    "Annex-B byte stream of one picture; SPS/PPS precede every IDR."
    keyframe: bool
    "The access unit is an IDR picture (decodable on its own)."
    timestamp_us: int
    "Capture time in microseconds on the camera's clock."


@dataclass(frozen=True)
class CameraConfig:
    """What the camera and its encoder produce."""

    width: int
    height: int
    framerate: int
    bitrate_kbps: int
    keyframe_interval: float
    "Seconds between periodic IDR pictures."

    @property
    def keyframe_period(self) -> int:
        """The periodic keyframe interval in frames."""
        return max(1, round(self.keyframe_interval * self.framerate))


EncodedSink = Callable[[EncodedFrame], None]
RawSink = Callable[[av.VideoFrame], None]


class Camera(abc.ABC):
    """A video source, started once for one call in one of two modes, then stopped.

    Sinks are called from the camera's own thread and must be quick (they hand the item to the event loop).
    """

    def __init__(self, config: CameraConfig) -> None:
        self.config = config

    @abc.abstractmethod
    def start_encoded(self, sink: EncodedSink) -> None:
        """Start delivering H.264 (Constrained Baseline, SPS/PPS in-band, an IDR first) to ``sink``."""

    @abc.abstractmethod
    def start_raw(self, sink: RawSink) -> None:
        """Start delivering ``yuv420p`` frames with ``pts``/``time_base`` set, for aiortc to encode."""

    @abc.abstractmethod
    def request_keyframe(self) -> None:
        """Make the next access unit an IDR (a PLI/FIR from the peer). Thread-safe; ignored in raw mode."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop capturing, join the camera's threads and release the device. Idempotent."""


def create_camera(kind: str, config: CameraConfig) -> Camera | None:
    """The camera named in the settings: ``"picamera2"``, ``"synthetic"`` or ``"none"`` (None)."""
    if kind == "none":
        return None
    if kind == "synthetic":
        from .synthetic import SyntheticCamera

        return SyntheticCamera(config)
    if kind == "picamera2":
        from .picamera import Picamera2Camera

        return Picamera2Camera(config)
    raise ValueError(f"unknown camera {kind!r} (expected 'picamera2', 'synthetic' or 'none')")
