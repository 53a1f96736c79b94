"""The media edge: ALSA audio, the camera and aiortc peer connections, driven by the orchestrator.

Modules, one concept each:

- ``engine``: :class:`MediaEngine`, one peer connection per call (the orchestrator's API).
- ``settings``, ``errors``: the parameter objects and :class:`MediaError`.
- ``alsa``: pyalsaaudio capture/playback threads (and a sound-card clock for the test ``file`` PCMs).
- ``audio``: the microphone track and the speaker sink; ``playout``: receive-side timing (no 80 ms prefetch).
- ``aec``: echo cancellation in the send path (speexdsp).
- ``camera``: the camera interface; ``picamera``, ``synthetic``: its implementations; ``h264``: libx264 and
  bitstream helpers; ``video``: the camera as a track, keyframe requests.
- ``sdp``, ``ice``: what is read from SDP and candidates, and the ICE configuration.
"""

from .engine import MediaEngine
from .errors import MediaError
from .settings import IceServer, LocalDescription, MediaSettings

__all__ = ["IceServer", "LocalDescription", "MediaEngine", "MediaError", "MediaSettings"]
