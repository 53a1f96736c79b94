"""Unit tests of the media layer's pure parts: SDP/candidates, jitter and playout buffers, H.264, the camera."""

import asyncio
import subprocess
import sys
import time

import av
import pytest
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket

from intercom.media.camera import Camera, CameraConfig, create_camera
from intercom.media.h264 import NAL_IDR, NAL_PPS, NAL_SPS, X264Encoder, nal_types, sps_profile
from intercom.media.playout import ImmediateJitterBuffer, PlayoutBuffer
from intercom.media.sdp import candidate_from_matrix, local_stream_id
from intercom.media.synthetic import SyntheticCamera, read_frame_counter
from intercom.media.video import CameraTrack

CONFIG = CameraConfig(width=320, height=240, framerate=30, bitrate_kbps=500, keyframe_interval=1.0)


@pytest.mark.parametrize("text", ["candidate:1 1 udp 2130706431 10.0.0.2 5000 typ host",
                                  "a=candidate:1 1 udp 2130706431 10.0.0.2 5000 typ host",
                                  "1 1 udp 2130706431 10.0.0.2 5000 typ host"])
def test_candidate_prefixes_are_stripped(text):
    candidate = candidate_from_matrix({"candidate": text, "sdpMid": "0", "sdpMLineIndex": 0})
    assert (candidate.ip, candidate.port, candidate.type, candidate.sdpMid) == ("10.0.0.2", 5000, "host", "0")


def test_empty_candidate_is_end_of_candidates():
    assert candidate_from_matrix({"candidate": ""}) is None


@pytest.mark.parametrize("entry", [{}, {"candidate": None}, {"candidate": "candidate:x"},
                                   {"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host"},
                                   {"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host", "sdpMLineIndex": -1},
                                   {"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host", "sdpMid": 3}])
def test_malformed_candidates_raise_value_error(entry):
    with pytest.raises(ValueError):
        candidate_from_matrix(entry)


def test_stream_id_is_taken_from_a_sending_section_only():
    sdp = ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\na=msid:recv-stream t1\r\n"
           "m=video 9 UDP/TLS/RTP/SAVPF 97\r\na=sendonly\r\na=msid:send-stream t2\r\n")
    assert local_stream_id(sdp) == "send-stream"
    assert local_stream_id("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=inactive\r\na=msid:s t\r\n") is None


def _packet(seq, timestamp):
    packet = RtpPacket(sequence_number=seq, timestamp=timestamp)
    packet._data = bytes([seq % 256])
    return packet


def test_immediate_jitter_buffer_releases_at_once_and_drops_late_packets():
    buffer = ImmediateJitterBuffer()
    assert buffer.add(_packet(1, 960))[1].timestamp == 960
    assert buffer.add(_packet(3, 2880))[1].timestamp == 2880  # a gap is not waited for
    assert buffer.add(_packet(2, 1920)) == (False, None)  # overtaken: too late to play
    assert buffer.add(_packet(3, 2880)) == (False, None)  # duplicate
    assert buffer.add(_packet(4, (2880 + 2**32 - 100) % 2**32)) == (False, None)  # far in the past
    assert buffer.add(_packet(5, 3840))[1].timestamp == 3840
    assert buffer.late == 3


def test_rtp_timestamp_wrap_is_in_order():
    buffer = ImmediateJitterBuffer()
    buffer.add(_packet(1, 2**32 - 960))
    assert buffer.add(_packet(2, 0))[1] is not None


def test_playout_buffer_hands_out_periods_and_caps_its_length():
    buffer = PlayoutBuffer(period_bytes=4, max_bytes=8)
    assert buffer.pull(0.0) is None
    buffer.push(b"\x01\x00\x02\x00\x03\x00")
    assert buffer.pull(0.0) == b"\x01\x00\x02\x00"
    assert buffer.pull(0.0) is None  # half a period waits for the rest
    buffer.push(b"\x04\x00" * 6)  # 14 bytes > 8: the oldest are dropped
    assert buffer.dropped_bytes == 6
    assert buffer.buffered_bytes == 8
    buffer.close()
    assert buffer.pull(1.0) == b"\x04\x00\x04\x00"


def test_x264_output_is_constrained_baseline_with_parameter_sets_before_every_idr():
    encoder = X264Encoder(CONFIG)
    frame = av.VideoFrame(320, 240, "yuv420p")
    units = []
    for i in range(50):
        units += encoder.encode(frame, i * 33333, keyframe=(i == 12))
    keyframes = [i for i, unit in enumerate(units) if unit.keyframe]
    # The start, the request, then every keyframe_period (30) frames after the last one.
    assert keyframes == [0, 12, 12 + CONFIG.keyframe_period]
    for unit in units:
        types = nal_types(unit.data)
        if unit.keyframe:
            assert types[:2] == [NAL_SPS, NAL_PPS] and NAL_IDR in types
            profile, constraints, level = sps_profile(unit.data)
            assert profile == 66 and constraints & 0x40 and level <= 31  # Constrained Baseline, level <= 3.1
        else:
            assert NAL_IDR not in types and NAL_SPS not in types


def test_frame_counter_survives_encoding_and_decoding():
    decoder = av.CodecContext.create("h264", "r")
    received = []

    def sink(unit):
        for frame in decoder.decode(av.Packet(unit.data)):
            received.append(read_frame_counter(frame))

    camera = SyntheticCamera(CONFIG)
    camera.start_encoded(sink)
    try:
        end = time.monotonic() + 5
        while len(received) < 10 and time.monotonic() < end:
            time.sleep(0.05)
    finally:
        camera.stop()
    assert len(received) >= 10
    assert received[:10] == list(range(received[0], received[0] + 10))


class _BrokenCamera(Camera):
    def start_encoded(self, sink):
        raise ImportError("No module named 'libcamera'")

    start_raw = start_encoded

    def request_keyframe(self):
        pass

    def stop(self):
        pass


def test_a_camera_that_cannot_start_ends_the_video_track_only():
    async def scenario():
        track = CameraTrack(_BrokenCamera(CONFIG))
        with pytest.raises(MediaStreamError):
            await track.recv()
        assert track.readyState == "ended"

    asyncio.run(scenario())


def test_picamera2_is_not_imported_until_the_camera_starts():
    code = (
        "import sys\n"
        "import intercom.media, intercom.media.engine\n"
        "from intercom.media.camera import CameraConfig, create_camera\n"
        "camera = create_camera('picamera2', CameraConfig(640, 480, 30, 1000, 2.0))\n"
        "assert 'picamera2' not in sys.modules and 'libcamera' not in sys.modules\n"
        "print(type(camera).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "Picamera2Camera"


def test_unknown_camera_kind_is_refused():
    assert create_camera("none", CONFIG) is None
    with pytest.raises(ValueError):
        create_camera("webcam", CONFIG)
