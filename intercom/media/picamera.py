"""The Raspberry Pi camera through picamera2, imported only when this camera is started.

``import picamera2`` needs the libcamera Python bindings, which only Raspberry Pi OS ships; on any other machine
it fails. Nothing imports this module unless the settings say ``camera = "picamera2"``, and even then picamera2
itself is imported in :meth:`Picamera2Camera.start_encoded`/``start_raw``.

Encoded mode uses picamera2's ``H264Encoder``: the VPU's hardware encoder on a Pi 4 and earlier, libx264 on a Pi 5
(which has no H.264 hardware; picamera2 aliases the class). Its access units arrive in ``Output.outputframe`` on
picamera2's encoder thread and go to the sink unchanged.
"""

from __future__ import annotations

import fractions
import logging
import threading
import time

from .camera import Camera, CameraConfig, EncodedFrame, EncodedSink, RawSink

logger = logging.getLogger(__name__)


def _sink_output(sink: EncodedSink):
    """A picamera2 ``Output`` that forwards each access unit; the class exists only where picamera2 imports."""
    from picamera2.outputs import Output

    class SinkOutput(Output):
        def outputframe(self, frame, keyframe=True, timestamp=None, packet=None, audio=False):
            if audio:
                return
            sink(EncodedFrame(data=bytes(frame), keyframe=bool(keyframe), timestamp_us=int(timestamp or 0)))

    return SinkOutput()


class Picamera2Camera(Camera):
    """picamera2's H.264 encoder (Constrained Baseline, ``repeat=True``, ``iperiod``) or raw YUV420 frames."""

    def __init__(self, config: CameraConfig) -> None:
        super().__init__(config)
        self._picam2 = None
        self._encoder = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _open(self):
        from picamera2 import Picamera2

        picam2 = Picamera2()
        video_config = picam2.create_video_configuration(
            main={"size": (self.config.width, self.config.height), "format": "YUV420"},
            controls={"FrameRate": self.config.framerate},
            buffer_count=4,
        )
        picam2.configure(video_config)
        self._picam2 = picam2
        return picam2

    def start_encoded(self, sink: EncodedSink) -> None:
        from picamera2.encoders import H264Encoder

        picam2 = self._open()
        self._encoder = H264Encoder(
            bitrate=self.config.bitrate_kbps * 1000,
            repeat=True,
            iperiod=self.config.keyframe_period,
            framerate=self.config.framerate,
            profile="baseline",
        )
        picam2.start_recording(self._encoder, _sink_output(sink))

    def start_raw(self, sink: RawSink) -> None:
        picam2 = self._open()
        picam2.start()
        self._thread = threading.Thread(target=self._run_capture, args=(picam2, sink), name="picamera2", daemon=True)
        self._thread.start()

    def _run_capture(self, picam2, sink: RawSink) -> None:
        import av

        time_base = fractions.Fraction(1, 90000)
        start = time.monotonic()
        try:
            while not self._stop.is_set():
                array = picam2.capture_array("main")
                frame = av.VideoFrame.from_ndarray(array, format="yuv420p")
                frame.pts = int((time.monotonic() - start) * 90000)
                frame.time_base = time_base
                sink(frame)
        except Exception:
            if not self._stop.is_set():
                logger.exception("picamera2 capture failed")

    def request_keyframe(self) -> None:
        if self._encoder is not None:
            self._encoder.force_key_frame()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._picam2 is not None:
            try:
                if self._encoder is not None:
                    self._picam2.stop_recording()
                else:
                    self._picam2.stop()
            finally:
                self._picam2.close()
                self._picam2 = None
                self._encoder = None
