"""Still pictures from the camera, as JPEG: the visitor's face in the room, on every ring and on request.

A still is one raw frame from a camera started in raw mode for just that frame, encoded with FFmpeg's MJPEG
encoder (PyAV, already a dependency), plus a small thumbnail for clients that show one.
"""

from __future__ import annotations

import fractions
import threading
import time
from dataclasses import dataclass

import av

from .camera import Camera
from .errors import MediaError

THUMBNAIL_WIDTH = 320
FRAME_TIMEOUT = 5.0


@dataclass(frozen=True)
class Still:
    jpeg: bytes
    width: int
    height: int
    thumbnail: bytes
    thumbnail_width: int
    thumbnail_height: int
    taken_at: float  #: wall-clock time (``time.time()``)


def encode_jpeg(frame: av.VideoFrame, width: int | None = None) -> tuple[bytes, int, int]:
    """JPEG bytes of ``frame`` (scaled to ``width``, keeping the aspect ratio), and its size."""
    if width is not None and width < frame.width:
        height = max(2, round(frame.height * width / frame.width / 2) * 2)
    else:
        width, height = frame.width, frame.height
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuvj420p"
    codec.time_base = fractions.Fraction(1, 1)
    codec.options = {"qmin": "2", "qmax": "6"}  # good quality; a 720p still is about 40-80 kB
    image = frame.reformat(width=width, height=height, format="yuvj420p")
    data = b"".join(bytes(packet) for packet in [*codec.encode(image), *codec.encode(None)])
    return data, width, height


def grab_frame(camera: Camera, timeout: float = FRAME_TIMEOUT) -> av.VideoFrame:
    """Start ``camera`` in raw mode, keep its first frame, stop it. Blocking: run it in a thread."""
    got = threading.Event()
    frames: list[av.VideoFrame] = []

    def sink(frame: av.VideoFrame) -> None:
        if not frames:
            frames.append(frame)
            got.set()

    try:
        camera.start_raw(sink)
        if not got.wait(timeout):
            raise MediaError(f"the camera gave no picture within {timeout:g} s")
    finally:
        camera.stop()
    return frames[0]


def take_still(camera: Camera) -> Still:
    """One still from ``camera`` (blocking)."""
    frame = grab_frame(camera)
    taken = time.time()
    jpeg, width, height = encode_jpeg(frame)
    thumb, thumb_width, thumb_height = encode_jpeg(frame, THUMBNAIL_WIDTH)
    return Still(jpeg=jpeg, width=width, height=height, thumbnail=thumb, thumbnail_width=thumb_width,
                 thumbnail_height=thumb_height, taken_at=taken)
