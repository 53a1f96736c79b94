"""Parameter objects of the media layer: what the orchestrator passes in and gets back.

Plain frozen dataclasses with no aiortc types in them, so that the orchestrator and the configuration code can
build them without importing aiortc.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IceServer:
    """One STUN or TURN server, as the homeserver's ``/voip/turnServer`` lists it."""

    urls: tuple[str, ...]
    "The server's URIs (``stun:``, ``turn:``, ``turns:``). aiortc uses only the first usable one of each kind."
    username: str | None = None
    "TURN user name (``<expiry>:<mxid>`` for the shared-secret scheme)."
    credential: str | None = None
    "TURN password."


@dataclass(frozen=True)
class LocalDescription:
    """The local SDP of a call, ready to be sent in ``m.call.invite``/``answer``/``negotiate``."""

    sdp: str
    "The SDP, with the host candidates (and whatever STUN/TURN gave before it was ready)."
    stream_id: str | None
    """The msid stream id of the local media (``a=msid:<stream> <track>``), the key to use for
    ``sdp_stream_metadata``; ``None`` when the SDP carries no local track (then leave the metadata out)."""
    candidates_complete: bool = True
    """False while STUN/TURN candidates are still being gathered: they follow through the engine's
    ``on_candidates`` callback, and the SDP carries no end-of-candidates."""


@dataclass(frozen=True)
class MediaSettings:
    """How the door captures, plays and sends media. Built from the configuration file."""

    capture_device: str
    "ALSA PCM name of the microphone, by card name, e.g. ``plughw:CARD=Device,DEV=0`` (indices move between boots)."
    playback_device: str
    "ALSA PCM name of the speaker, by card name."
    echo_cancellation: bool
    "Cancel the speaker's echo from the microphone signal (speexdsp) before it is sent."
    camera: str
    '``"picamera2"`` on the Pi, ``"synthetic"`` for a generated test scene, ``"none"`` to send no video.'
    width: int
    height: int
    framerate: int
    bitrate_kbps: int
    "Target bitrate of the door's own H.264 encoder (picamera2 or the synthetic camera's libx264)."
    keyframe_interval: float
    "Seconds between periodic keyframes; PLI/FIR requests get one sooner."

    sample_rate: int = 48000
    "ALSA rate for both directions. Opus runs at 48 kHz, so nothing is resampled on the way."
    period_ms: int = 20
    "ALSA period; 20 ms is one Opus frame, so each period is encoded as soon as it is read."
    capture_periods: int = 4
    "ALSA capture buffer in periods. Only a slow reader makes it fill; it never adds latency by itself."
    playback_periods: int = 4
    """ALSA playback buffer in periods: only a ceiling. The playback thread keeps far less queued (see below)."""
    playout_floor_ms: int = 30
    """Least audio kept queued in the sound card: when nothing has arrived by then, silence is played. The margin for
    late packets and for stalls of the Python threads (garbage collection, the GIL). Measured on a 2-core VM with
    both peers in one process: 20 ms gave 57 ms mouth-to-ear but a glitch in about one call in three; 30 ms gave
    69 ms and none."""
    playout_target_ms: int = 40
    """Audio queued in the sound card when the first received period is written, and the most it may hold before a
    received period is written before the excess is cut (quietly). Each time audio comes too late, 5 ms of silence is
    played and stays as extra margin; this bound keeps those margins from adding up. It grows by 5 ms per late
    packet (up to ``playout_max_ms``) and decays slowly when the network is calm."""
    playout_max_ms: int = 60
    "Ceiling of that adaptive margin; received audio waiting beyond it is dropped, oldest first."
    aec_tail_ms: int = 200
    "Echo tail the canceller models: the speaker-to-microphone path, including the room's reverberation."
    aec_residual_suppression_db: int | None = 20
    """Attenuate the echo the linear filter leaves by up to this much (speex's suppressor; +10 ms latency, about
    +12 dB of echo reduction). None = linear cancellation only."""
    own_audio_playout: bool = True
    """Replace aiortc's audio jitter buffer, which holds every packet until four later ones arrived (80 ms), by one
    that releases at once; the playout buffer absorbs jitter instead. False keeps aiortc's (the benchmark baseline)."""
    prefer_encoded_video: bool = True
    """Send the camera's own H.264 (hardware on a Pi 4) when H.264 is negotiated. False makes aiortc encode raw
    frames itself, as it always does for VP8."""
    pace_audio: bool = False
    """Emulate a sound card's clock. Only for ALSA ``file``/``null`` PCMs (tests, benchmarks), which never block;
    real devices pace themselves."""
    host_addresses: tuple[str, ...] | None = None
    """Restrict ICE host candidates to these local addresses (tests use ``("127.0.0.1",)``); None = all
    interfaces."""
