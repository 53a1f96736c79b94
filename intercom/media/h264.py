"""H.264 in software (libx264 through PyAV) and the few bitstream facts the media layer checks.

:class:`X264Encoder` is the synthetic camera's encoder, set up the way picamera2's ``H264Encoder`` is on the Pi
(and the way a Pi 5 encodes, since it has no hardware encoder): preset ultrafast, tune zerolatency, Constrained
Baseline, SPS/PPS repeated before every IDR, periodic IDRs and IDRs on request. Its output takes the same path to
aiortc as picamera2's, so tests off the Pi exercise the production code.
"""

from __future__ import annotations

import fractions

import av

from .camera import CameraConfig, EncodedFrame

NAL_IDR = 5
NAL_SPS = 7
NAL_PPS = 8


def nal_units(data: bytes) -> list[bytes]:
    """Split an Annex-B byte stream into NAL units (start codes and trailing zero bytes removed)."""
    starts = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i + 3)
        i = data.find(b"\x00\x00\x01", i + 3)
    ends = [s - 3 for s in starts[1:]] + [len(data)]
    units = [data[s:e].rstrip(b"\x00") for s, e in zip(starts, ends)]
    return [unit for unit in units if unit]


def nal_types(data: bytes) -> list[int]:
    """The NAL unit types of an Annex-B access unit, in order."""
    return [unit[0] & 0x1F for unit in nal_units(data)]


def sps_profile(data: bytes) -> tuple[int, int, int] | None:
    """``(profile_idc, constraint_flags, level_idc)`` of the first SPS in ``data``, or None.

    Constrained Baseline is profile 66 with constraint_set1 (0x40) set, what aiortc's ``42e01f`` announces.
    """
    for unit in nal_units(data):
        if unit[0] & 0x1F == NAL_SPS and len(unit) >= 4:
            return unit[1], unit[2], unit[3]
    return None


class X264Encoder:
    """libx264 through PyAV, called from the camera's thread: one frame in, at most one access unit out."""

    def __init__(self, config: CameraConfig) -> None:
        self._config = config
        codec = av.CodecContext.create("libx264", "w")
        codec.width = config.width
        codec.height = config.height
        codec.pix_fmt = "yuv420p"
        codec.framerate = fractions.Fraction(config.framerate, 1)
        codec.time_base = fractions.Fraction(1, config.framerate)
        codec.bit_rate = config.bitrate_kbps * 1000
        codec.gop_size = config.keyframe_period
        codec.max_b_frames = 0
        codec.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "profile": "baseline",
            "level": "31",
            "forced-idr": "1",
            "x264-params": f"repeat-headers=1:keyint={config.keyframe_period}:scenecut=0:threads=1",
        }
        self._codec = codec
        self._index = 0

    def encode(self, frame: av.VideoFrame, timestamp_us: int, keyframe: bool = False) -> list[EncodedFrame]:
        """Encode one frame; ``keyframe`` forces an IDR (with SPS/PPS)."""
        frame.pts = self._index
        frame.time_base = self._codec.time_base
        frame.pict_type = av.video.frame.PictureType.I if keyframe else av.video.frame.PictureType.NONE
        self._index += 1
        return [
            EncodedFrame(data=bytes(packet), keyframe=bool(packet.is_keyframe), timestamp_us=timestamp_us)
            for packet in self._codec.encode(frame)
        ]

    def close(self) -> None:
        self._codec = None
