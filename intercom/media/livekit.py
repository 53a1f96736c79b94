"""MatrixRTC media: the door in a LiveKit room (Element Call's SFU), beside the aiortc engine for legacy calls.

:class:`RtcMediaEngine` joins the room with the LiveKit Python SDK (``livekit``, a Rust core behind an FFI) and uses
the door's devices exactly as :class:`~intercom.media.engine.MediaEngine` does: the ALSA microphone through the same
:class:`~intercom.media.audio.MicrophoneTrack` (echo canceller, tap, overrun handling), the camera's raw frames, and
the speaker through the same :class:`~intercom.media.audio.SpeakerSink` and playout settings. Opus and video encoding,
the transport and the frame encryption are LiveKit's.

What it decides:

- Only the peer user's participants count: identities are ``@user:server:DEVICE`` (minted by the token service), and
  the door subscribes to nothing else (``auto_subscribe`` is off), so another user in the room is neither played nor
  makes the call connected. It subscribes to the peer's audio only: the door shows no picture, so receiving video
  would cost bandwidth and decoding for nothing. The peer counts as present once it has a subscribed audio track or
  a published video track.
- The devices open when a participant of the peer user is in the room, not at ``connect``: a door ringing an owner
  who never joins never holds the microphone or the camera (as the aiortc engine opens them only once connected).
- E2EE follows Element Call: per-participant keys (no shared key), HKDF key derivation, the default ratchet salt,
  a ratchet window of 10 and a key ring of 256 (see :func:`_e2ee_options`).
- Video is one VP8 encoding (no simulcast) of the camera's raw frames, or, with ``video_codec="H264"``, the camera's
  own H.264 as it is (the Pi 4's hardware encoder; not with E2EE, see ``RtcMediaEngine``). The microphone goes to
  an unbuffered audio source, so the sound card's clock paces it and nothing queues up in front of the encoder.

``livekit`` is imported only inside this module's functions, so importing :mod:`intercom.media` does not load the
native library on a door that never makes a MatrixRTC call.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fractions
import gc
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError

from .aec import EchoCanceller, create_echo_canceller
from .audio import AudioTap, MicrophoneTrack, SpeakerSink
from .camera import Camera, EncodedFrame, create_camera
from .errors import MediaError
from .engine import device_configs, open_speaker
from .settings import MediaSettings

logger = logging.getLogger(__name__)

StateCallback = Callable[[str, str], None]
CameraFactory = Callable[[str], "Camera | None"]
AudioTapFactory = Callable[[str], "AudioTap | None"]

KEY_BYTES = 16
"Length of the door's media keys: matrix-js-sdk makes 16 random bytes (``secureRandomBase64Url(16)``)."
KEY_RING_SIZE = 256
"Key indices 0-255: matrix-js-sdk's ``getNewEncryptionKeyIndex`` wraps at 256, Element Call's key ring holds 256."
RATCHET_WINDOW_SIZE = 10
"Element Call's ``MatrixKeyProvider``/``ParticipationKeyProvider``: ``ratchetWindowSize: 10``."
RATCHET_SALT = b"LKFrameEncryptionKey"
"livekit-client's default salt (``SALT`` in ``src/e2ee/constants.ts``); Element Call does not change it."
FAILURE_TOLERANCE = 10
"livekit-client's ``DECRYPTION_FAILURE_TOLERANCE``: consecutive failures before a key is taken as invalid."
VIDEO_CODECS = ("VP8", "H264")
"How the camera is published: raw frames that LiveKit encodes to VP8, or the camera's own H.264."
CONNECT_TIMEOUT = 20.0
"Seconds ``connect`` may take in all (the SDK's own timeout is per signalling attempt)."


def _e2ee_options():
    """Frame encryption as Element Call sets it up in livekit-client.

    Element Call imports each 16-byte Matrix media key as HKDF key material (``importKey("raw", key, "HKDF", ...)``
    in ``src/e2ee/matrixKeyProvider.ts``), so livekit-client derives the AES-GCM key with HKDF-SHA256, salt
    ``LKFrameEncryptionKey`` and 128 zero bytes of info (``getAlgoOptions`` in ``src/e2ee/utils.ts``), which is what
    the native frame cryptor's ``DeriveHkdfSha256FromSecret`` does with ``KeyDerivationFunction.HKDF``. The Python
    SDK's defaults (PBKDF2, a window of 16, a ring of 16, no failure tolerance) would not interoperate.
    """
    from livekit import rtc
    from livekit.rtc._proto import e2ee_pb2

    return rtc.E2EEOptions(
        key_provider_options=rtc.KeyProviderOptions(
            shared_key=None,
            ratchet_salt=RATCHET_SALT,
            ratchet_window_size=RATCHET_WINDOW_SIZE,
            failure_tolerance=FAILURE_TOLERANCE,
            key_ring_size=KEY_RING_SIZE,
            key_derivation_function=e2ee_pb2.KeyDerivationFunction.HKDF,
        ),
        encryption_type=e2ee_pb2.EncryptionType.GCM,
    )


class RemoteAudio:
    """The peer's audio as a track for :class:`SpeakerSink`: ``await recv()`` returns ``av.AudioFrame`` s16.

    One object for the whole call, fed by whichever of the peer's LiveKit audio tracks is current (:meth:`attach`), so
    the speaker stays open when the peer's device changes or LiveKit re-subscribes after a reconnect. Decoded 20 ms
    frames wait in a short deque that drops the oldest; between tracks, ``recv()`` simply waits (the playout buffer
    plays silence meanwhile). ``recv()`` raises ``MediaStreamError`` once closed, which ends the sink's loop.
    """

    def __init__(self, rate: int, channels: int, period_ms: int, max_queued: int = 5) -> None:
        self._rate = rate
        self._channels = channels
        self._period_ms = period_ms
        self._layout = "mono" if channels == 1 else "stereo"
        self._time_base = fractions.Fraction(1, rate)
        self._frames: collections.deque = collections.deque(maxlen=max_queued)
        self._ready = asyncio.Event()
        self._stream: Any = None
        self._pump: asyncio.Task | None = None
        self._closed = False
        self._pts = 0
        self.source: str | None = None
        "The track sid now being played, None between tracks."

    def attach(self, track: Any) -> None:
        """Play ``track`` (a ``livekit.rtc.RemoteAudioTrack``) from now on, instead of the previous one."""
        from livekit import rtc

        self._detach()
        if self._closed:
            return
        self._stream = rtc.AudioStream(track, sample_rate=self._rate, num_channels=self._channels,
                                       frame_size_ms=self._period_ms)
        self.source = track.sid
        self._pump = asyncio.ensure_future(self._run_pump(self._stream))

    def detach(self) -> None:
        """Stop playing the current track (it was unsubscribed)."""
        self._detach()

    def _detach(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None
        if self._stream is not None:
            stream, self._stream = self._stream, None
            asyncio.ensure_future(self._close_stream(stream))
        self.source = None

    @staticmethod
    async def _close_stream(stream: Any) -> None:
        with contextlib.suppress(Exception):
            await stream.aclose()

    async def _run_pump(self, stream: Any) -> None:
        try:
            async for event in stream:
                self._frames.append(event.frame)
                self._ready.set()
        except asyncio.CancelledError:
            pass
        except Exception:
            logger.exception("receiving the peer's audio failed")

    async def recv(self) -> av.AudioFrame:
        while not self._frames:
            if self._closed:
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        data = self._frames.popleft()
        samples = data.samples_per_channel
        frame = av.AudioFrame(format="s16", layout=self._layout, samples=samples)
        frame.planes[0].update(bytes(data.data))
        frame.pts = self._pts
        frame.sample_rate = self._rate
        frame.time_base = self._time_base
        self._pts += samples
        return frame

    async def aclose(self) -> None:
        self._closed = True
        self._ready.set()
        pump, stream = self._pump, self._stream
        self._pump = self._stream = None
        self.source = None
        if pump is not None:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
        if stream is not None:
            await self._close_stream(stream)


@dataclass(eq=False)
class _RtcCall:
    """Everything one MatrixRTC call owns, so that ``close`` can release all of it."""

    call_id: str
    peer_user: str
    e2ee: bool
    room: Any = None  #: livekit.rtc.Room
    identity: str | None = None  #: the door's own participant identity (from the token)
    key: bytes | None = None  #: the door's current media key
    key_index: int = 0
    #: A new key of the door that is sent but not used yet (key, index).
    pending_key: tuple[bytes, int] | None = None
    peer_keys: list[tuple[str, bytes, int]] = field(default_factory=list)  #: set before the room was joined
    echo_canceller: EchoCanceller | None = None
    audio_tap: AudioTap | None = None
    microphone: MicrophoneTrack | None = None
    audio_source: Any = None  #: livekit.rtc.AudioSource
    microphone_task: asyncio.Task | None = None
    camera: Camera | None = None
    video_source: Any = None  #: livekit.rtc.VideoSource
    camera_started: bool = False
    video_encoded: bool = False  #: the camera's own H.264 is published (else raw frames that LiveKit encodes)
    remote_audio: RemoteAudio | None = None
    speaker: SpeakerSink | None = None
    speaker_task: asyncio.Task | None = None
    peer_audio: dict[str, tuple[str, Any]] = field(default_factory=dict)  #: sid -> (identity, subscribed track)
    peer_video: dict[str, str] = field(default_factory=dict)  #: sid -> identity of published video tracks
    devices_started: bool = False
    reconnecting: bool = False
    connected: bool = False  #: what was last reported
    joined: bool = False
    closing: bool = False
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class RtcMediaEngine:
    """Joins, runs and leaves the LiveKit rooms of the door's MatrixRTC calls (one room per call id)."""

    def __init__(
        self,
        settings: MediaSettings,
        on_state: StateCallback,
        *,
        camera_factory: CameraFactory | None = None,
        audio_tap: AudioTapFactory | None = None,
        freeze_gc: bool = True,
        video_codec: str = "VP8",
        on_peer: Callable[[str, str, bool], None] | None = None,
    ) -> None:
        """
        :param on_state: ``(call_id, state)`` with ``"connected"`` (the peer user is in the room and sends media),
            ``"disconnected"`` (LiveKit reconnects, or the peer's tracks are gone), ``"failed"`` (the room was lost for
            good) and ``"closed"`` (after :meth:`close`).
        :param camera_factory: makes the camera for a call (by call id) instead of ``settings.camera``.
        :param audio_tap: makes an :class:`AudioTap` per call, to observe audio at the ALSA boundary.
        :param freeze_gc: ``gc.freeze()`` when the speaker starts, undone once the last call is closed (as
            :class:`~intercom.media.engine.MediaEngine` does, for the same reason: short collector pauses).
        :param on_peer: ``(call_id, identity, present)``: a participant of the peer user joined (True) or left
            (False) the LiveKit room; in an encrypted call the door then gives a newcomer its media key, or the
            others a new key, as Element Call does.
        :param video_codec: ``"VP8"``: the camera's raw frames, encoded by LiveKit (what livekit-client publishes by
            default, so every Element Call client decodes it; 0.35-0.45 cores more at 720p30 on the x86 test VM).
            ``"H264"``: the camera's own H.264 (the Pi 4's hardware encoder) published as it is, without re-encoding
            (about 0.01 cores); every receiver must then decode H.264. Not with E2EE (livekit 1.2.0 sends such a
            track undecodable when it is encrypted): E2EE calls fall back to VP8.
        """
        if video_codec not in VIDEO_CODECS:
            raise ValueError(f"video_codec must be one of {', '.join(VIDEO_CODECS)}, not {video_codec!r}")
        self._video_codec = video_codec
        self._on_peer = on_peer
        self._settings = settings
        self._on_state = on_state
        self._camera_factory = camera_factory
        self._audio_tap = audio_tap
        self._freeze_gc = freeze_gc
        self._frozen = False
        self._calls: dict[str, _RtcCall] = {}
        self._camera_config, self._capture_config, self._playback_config = device_configs(settings)

    # -- the orchestrator's API ----------------------------------------------------------------------------------

    async def connect(self, call_id: str, *, url: str, jwt: str, peer_user: str, e2ee: bool = False) -> None:
        """Join the LiveKit room ``jwt`` grants at ``url`` and publish the door's microphone and camera.

        Returns once the tracks are published; ``on_state(call_id, "connected")`` follows when the peer user's media
        arrives. With ``e2ee`` the door's own key is made here (:meth:`local_key`); the peer's keys come through
        :meth:`set_peer_key` (before or after this returns). Raises :class:`MediaError` and leaves nothing behind on
        failure.
        """
        if call_id in self._calls:
            raise MediaError(f"call {call_id} already exists")
        if not peer_user.startswith("@") or ":" not in peer_user:
            raise MediaError(f"call {call_id}: {peer_user!r} is not a Matrix user id")
        call = _RtcCall(call_id=call_id, peer_user=peer_user, e2ee=e2ee)
        self._calls[call_id] = call
        try:
            await asyncio.wait_for(self._join(call, url, jwt), CONNECT_TIMEOUT)
        except MediaError:
            await self.close(call_id)
            raise
        except asyncio.TimeoutError:
            await self.close(call_id)
            raise MediaError(f"call {call_id}: joining the LiveKit room at {url} took over {CONNECT_TIMEOUT:.0f} s")
        except Exception as exc:
            await self.close(call_id)
            raise MediaError(f"call {call_id}: joining the LiveKit room at {url} failed: {exc}") from exc

    def local_key(self, call_id: str) -> tuple[bytes, int]:
        """The door's current media key and its index, to send to the other participants."""
        call = self._e2ee_call(call_id, joined=True)
        return call.key, call.key_index

    def rotate_key(self, call_id: str, *, switch: bool = True) -> tuple[bytes, int]:
        """A new random media key at the next index (Element Call rotates when someone leaves, so that they cannot
        decrypt what follows). Returns it, to be sent to those who stay. With ``switch`` the door's media is
        encrypted with it from now on; without, only once :meth:`use_key` says so (Element Call sends the new key
        first and uses it a moment later, so that the others have it before the first frame that needs it)."""
        call = self._e2ee_call(call_id, joined=True)
        key, index = secrets.token_bytes(KEY_BYTES), (call.key_index + 1) % KEY_RING_SIZE
        try:
            if switch:
                self._use_own_key(call, key, index)
            else:
                call.room.e2ee_manager.key_provider.set_key(call.identity, key, index)
                call.pending_key = (key, index)
        except Exception as exc:
            raise MediaError(f"call {call_id}: rotating the door's media key failed: {exc}") from exc
        return key, index

    def use_key(self, call_id: str, index: int) -> None:
        """Encrypt the door's media with the key :meth:`rotate_key` made at ``index`` (without ``switch``)."""
        call = self._e2ee_call(call_id, joined=True)
        pending = call.pending_key
        if pending is None or pending[1] != index:
            raise MediaError(f"call {call_id}: no new media key at index {index} to use")
        call.pending_key = None
        try:
            self._use_own_key(call, *pending)
        except Exception as exc:
            raise MediaError(f"call {call_id}: using the door's new media key failed: {exc}") from exc

    def set_peer_key(self, call_id: str, participant_identity: str, key: bytes, index: int) -> None:
        """A media key another participant sent (``@user:server:DEVICE``), to decrypt its media."""
        call = self._e2ee_call(call_id)
        if not 0 <= index < KEY_RING_SIZE:
            raise MediaError(f"call {call_id}: key index {index} is outside 0-{KEY_RING_SIZE - 1}")
        if not key:
            raise MediaError(f"call {call_id}: empty media key from {participant_identity}")
        if call.room is None or not call.joined:
            call.peer_keys.append((participant_identity, bytes(key), index))
            return
        try:
            call.room.e2ee_manager.key_provider.set_key(participant_identity, bytes(key), index)
        except Exception as exc:
            raise MediaError(f"call {call_id}: setting the key of {participant_identity} failed: {exc}") from exc

    def participants(self, call_id: str) -> list[str]:
        """The identities of the other participants now in the call's LiveKit room."""
        call = self._call(call_id)
        if call.room is None or not call.joined:
            return []
        return sorted(call.room.remote_participants)

    async def close(self, call_id: str) -> None:
        """Leave the room, stop every thread, release the devices, then report ``closed``.

        Idempotent: closing an unknown or already closed call does nothing. Never raises; failures are logged.
        """
        call = self._calls.get(call_id)
        if call is None:
            return
        if call.closing:
            await call.closed.wait()
            return
        call.closing = True
        if call.microphone_task is not None:
            call.microphone_task.cancel()
            await asyncio.gather(call.microphone_task, return_exceptions=True)
        if call.speaker_task is not None:
            await asyncio.gather(call.speaker_task, return_exceptions=True)
        if call.room is not None:
            try:
                await asyncio.wait_for(call.room.disconnect(), 10)
            except Exception:
                logger.exception("call %s: leaving the LiveKit room failed", call_id)
        # A receive task created just now must have run once before it is cancelled: SpeakerSink.aclose waits for
        # the exit event that task sets on its way out, which a task cancelled before its first step never does.
        await asyncio.sleep(0)
        for part in (call.speaker, call.remote_audio, call.microphone):
            if part is None:
                continue
            try:
                await part.aclose()
            except Exception:
                logger.exception("call %s: closing %s failed", call_id, type(part).__name__)
        if call.camera is not None:
            try:
                await asyncio.to_thread(call.camera.stop)
            except Exception:
                logger.exception("call %s: stopping the camera failed", call_id)
        for source in (call.audio_source, call.video_source):
            if source is not None:
                with contextlib.suppress(Exception):
                    await source.aclose()
        del self._calls[call_id]
        call.closed.set()
        if self._frozen and not self._calls:
            self._thaw()
        self._report(call, "closed")

    async def close_all(self) -> None:
        """Close every call (at shutdown)."""
        await asyncio.gather(*(self.close(call_id) for call_id in list(self._calls)))

    # -- joining -------------------------------------------------------------------------------------------------

    async def _join(self, call: _RtcCall, url: str, jwt: str) -> None:
        from livekit import rtc

        call.audio_tap = self._audio_tap(call.call_id) if self._audio_tap else None
        if self._settings.echo_cancellation:
            call.echo_canceller = create_echo_canceller(
                self._capture_config.period_frames,
                self._settings.sample_rate,
                self._settings.aec_tail_ms,
                self._settings.aec_residual_suppression_db,
            )
        try:
            call.camera = (self._camera_factory(call.call_id) if self._camera_factory is not None
                           else create_camera(self._settings.camera, self._camera_config))
        except Exception as exc:
            raise MediaError(f"call {call.call_id}: cannot create the camera: {exc}") from exc

        room = call.room = rtc.Room()
        self._listen(call, room)
        # dynacast off: with one video layer it can only pause it, and a subscriber leaving (another device of the
        # resident) paused the door's video for the device still watching (seen in 2 of 4 runs; 0 of 4 without it)
        options = rtc.RoomOptions(auto_subscribe=False, dynacast=False,
                                  encryption=_e2ee_options() if call.e2ee else None)
        try:
            await room.connect(url, jwt, options)
        except rtc.ConnectError as exc:
            raise MediaError(f"call {call.call_id}: the LiveKit server at {url} refused the connection: "
                             f"{exc.message}") from exc
        if call.closing:
            raise MediaError(f"call {call.call_id} was closed while joining the LiveKit room")
        call.joined = True
        call.identity = room.local_participant.identity
        logger.info("call %s: joined LiveKit room %s as %s (%s)", call.call_id, room.name, call.identity,
                    "E2EE" if call.e2ee else "no E2EE")
        if call.e2ee:
            # The own key before the first publication, so that no frame leaves unencrypted or under no key.
            self._use_own_key(call, secrets.token_bytes(KEY_BYTES), 0)
            for identity, key, index in call.peer_keys:
                room.e2ee_manager.key_provider.set_key(identity, key, index)
            call.peer_keys.clear()
        await self._publish(call, room)
        for participant in list(room.remote_participants.values()):
            self._on_participant(call, participant)
            for publication in list(participant.track_publications.values()):
                self._on_published(call, publication, participant)

    async def _publish(self, call: _RtcCall, room: Any) -> None:
        from livekit import rtc

        settings = self._settings
        call.audio_source = rtc.AudioSource(settings.sample_rate, 1, queue_size_ms=0)
        audio = rtc.LocalAudioTrack.create_audio_track("microphone", call.audio_source)
        # DTX and RED (redundant Opus) as livekit-client publishes a microphone by default.
        audio_options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE, dtx=True, red=True)
        await room.local_participant.publish_track(audio, audio_options)
        if call.camera is None:
            return
        video_options = rtc.TrackPublishOptions(
            source=rtc.TrackSource.SOURCE_CAMERA,
            simulcast=False,  # one encoding: a Pi cannot afford three
            video_encoding=rtc.VideoEncoding(max_bitrate=settings.bitrate_kbps * 1000,
                                             max_framerate=settings.framerate),
        )
        call.video_encoded = self._video_codec == "H264"
        if call.video_encoded and call.e2ee:
            # livekit 1.2.0: a pre-encoded H.264 track with frame encryption reaches the receiver undecodable (no
            # frame decodes, while its key and its encryption state are fine), so encrypted calls send VP8.
            logger.warning("call %s: the camera's H.264 cannot be sent encrypted; LiveKit encodes VP8 instead",
                           call.call_id)
            call.video_encoded = False
        if call.video_encoded:
            call.video_source = rtc.EncodedVideoSource(settings.width, settings.height)
            video_options.video_codec = rtc.VideoCodec.H264
            video_options.video_encoder = rtc.VideoEncoderBackend.ENCODER_BACKEND_PRE_ENCODED
        else:
            call.video_source = rtc.VideoSource(settings.width, settings.height)
            video_options.video_codec = rtc.VideoCodec.VP8
        video = rtc.LocalVideoTrack.create_video_track("camera", call.video_source)
        await room.local_participant.publish_track(video, video_options)

    def _use_own_key(self, call: _RtcCall, key: bytes, index: int) -> None:
        """Set the door's own key at ``index`` and make its published tracks encrypt with that index.

        The native frame cryptor encrypts with its own key index (``set_key`` does not move it, unlike
        livekit-client's), so the door's cryptors are moved explicitly; receivers read the index from each frame.
        """
        manager = call.room.e2ee_manager
        manager.key_provider.set_key(call.identity, key, index)
        call.key, call.key_index = key, index
        for cryptor in manager.frame_cryptors():
            if cryptor.participant_identity == call.identity and cryptor.key_index != index:
                cryptor.set_key_index(index)

    # -- devices -------------------------------------------------------------------------------------------------

    def _start_devices(self, call: _RtcCall) -> None:
        """The peer user is in the room: open the microphone and the camera (once per call)."""
        if call.devices_started or call.closing or call.audio_source is None:
            return
        call.devices_started = True
        logger.info("call %s: %s is in the room; starting the microphone%s", call.call_id, call.peer_user,
                    " and the camera" if call.camera is not None else "")
        call.microphone = MicrophoneTrack(self._capture_config, call.echo_canceller, call.audio_tap)
        call.microphone_task = asyncio.ensure_future(self._run_microphone(call))
        if call.camera is not None and call.video_source is not None:
            self._start_camera(call)

    async def _run_microphone(self, call: _RtcCall) -> None:
        """Each 20 ms microphone period (echo-cancelled) into LiveKit's audio source, which encodes Opus."""
        from livekit import rtc

        source = call.audio_source
        rate = self._settings.sample_rate
        ten_ms = rate // 100
        try:
            while True:
                frame = await call.microphone.recv()
                # MicrophoneTrack duplicates the mono period into stereo for aiortc's encoder: take one channel back.
                stereo = np.frombuffer(frame.planes[0], dtype=np.int16, count=frame.samples * 2)
                mono = stereo[::2]
                # An unbuffered source (queue_size_ms=0) goes straight to the encoder, paced by the sound card rather
                # than by a timer of LiveKit's, but takes 10 ms frames only.
                for start in range(0, frame.samples - ten_ms + 1, ten_ms):
                    chunk = mono[start : start + ten_ms].tobytes()
                    await source.capture_frame(rtc.AudioFrame(chunk, rate, 1, ten_ms))
        except (asyncio.CancelledError, MediaStreamError):
            pass
        except Exception:
            logger.exception("call %s: sending the microphone failed", call.call_id)

    def _start_camera(self, call: _RtcCall) -> None:
        """The camera's frames, from its own thread, straight into LiveKit's video source.

        ``capture_frame`` is a synchronous FFI call that copies the frame, made from the camera thread: the event
        loop never touches 30 full frames a second.
        """
        try:
            if call.video_encoded:
                call.camera.start_encoded(self._encoded_sink(call))
            else:
                call.camera.start_raw(self._raw_sink(call))
            call.camera_started = True
        except Exception as exc:  # no camera, picamera2 missing off the Pi, device busy
            logger.error("call %s: the camera did not start (%s: %s); the call goes on without video",
                         call.call_id, type(exc).__name__, exc)

    def _raw_sink(self, call: _RtcCall) -> Callable[[av.VideoFrame], None]:
        """Raw frames as I420 into a ``VideoSource``: LiveKit encodes them (VP8)."""
        from livekit import rtc

        source = call.video_source
        i420 = rtc.VideoBufferType.I420
        first_pts: list[int] = []

        def on_frame(frame: av.VideoFrame) -> None:
            if call.closing:
                return
            try:
                if frame.format.name != "yuv420p":
                    frame = frame.reformat(format="yuv420p")
                planes = frame.to_ndarray()  # (height * 3 / 2, width): I420, without the planes' padding
                timestamp_us = 0
                if frame.pts is not None and frame.time_base is not None:
                    if not first_pts:
                        first_pts.append(frame.pts)
                    timestamp_us = int((frame.pts - first_pts[0]) * frame.time_base * 1_000_000)
                video = rtc.VideoFrame(frame.width, frame.height, i420, memoryview(planes.reshape(-1)))
                source.capture_frame(video, timestamp_us=timestamp_us)
            except Exception:
                logger.exception("call %s: a camera frame could not be sent", call.call_id)

        return on_frame

    def _encoded_sink(self, call: _RtcCall) -> Callable[[EncodedFrame], None]:
        """The camera's H.264 access units into an ``EncodedVideoSource``, which only packetizes them.

        Keyframe requests (a new subscriber, a PLI) reach the source, not an encoder: they are polled with each frame
        and passed to the camera. The stream starts at an IDR, as a decoder needs.
        """
        from livekit import rtc

        source = call.video_source
        camera = call.camera
        width, height = self._settings.width, self._settings.height
        key, delta = rtc.EncodedFrameType.ENCODED_FRAME_KEY, rtc.EncodedFrameType.ENCODED_FRAME_DELTA
        started = [False]

        def on_unit(unit: EncodedFrame) -> None:
            if call.closing:
                return
            try:
                if source.take_feedback().keyframe_requested:
                    camera.request_keyframe()
                if not started[0]:
                    if not unit.keyframe:
                        camera.request_keyframe()
                        return
                    started[0] = True
                source.capture_frame(rtc.EncodedVideoFrame(
                    data=unit.data, width=width, height=height, codec=rtc.VideoCodec.H264,
                    frame_type=key if unit.keyframe else delta, timestamp_us=unit.timestamp_us))
            except Exception:
                logger.exception("call %s: a camera access unit could not be sent", call.call_id)

        return on_unit

    async def _start_speaker(self, call: _RtcCall) -> None:
        if call.speaker is not None or call.remote_audio is None:
            return
        if self._freeze_gc:
            # See MediaEngine._start_speaker: shorter collector pauses while audio plays; undone after the last call.
            gc.freeze()
            self._frozen = True
        # even if closing meanwhile: close() awaits this task, then closes the speaker
        call.speaker = await open_speaker(call.call_id, call.remote_audio, self._playback_config, self._settings,
                                          echo_canceller=call.echo_canceller, tap=call.audio_tap)

    def _thaw(self) -> None:
        self._frozen = False
        gc.unfreeze()
        gc.collect()

    # -- events from LiveKit -------------------------------------------------------------------------------------

    def _listen(self, call: _RtcCall, room: Any) -> None:
        room.on("participant_connected", lambda participant: self._on_participant(call, participant))
        room.on("participant_disconnected", lambda participant: self._on_participant_left(call, participant))
        room.on("track_published", lambda publication, participant: self._on_published(call, publication,
                                                                                        participant))
        room.on("track_unpublished", lambda publication, participant: self._on_unpublished(call, publication,
                                                                                            participant))
        room.on("track_subscribed", lambda track, publication, participant: self._on_subscribed(call, track,
                                                                                                 participant))
        room.on("track_unsubscribed", lambda track, publication, participant: self._on_unsubscribed(call,
                                                                                                     publication))
        room.on("reconnecting", lambda: self._on_reconnecting(call))
        room.on("reconnected", lambda: self._on_reconnected(call))
        room.on("disconnected", lambda reason=None: self._on_disconnected(call, reason))
        room.on("e2ee_state_changed", lambda participant, state: self._on_e2ee_state(call, participant, state))

    def _is_peer(self, call: _RtcCall, identity: str) -> bool:
        return identity.startswith(call.peer_user + ":")

    def _on_participant(self, call: _RtcCall, participant: Any) -> None:
        if call.closing:
            return
        if not self._is_peer(call, participant.identity):
            logger.info("call %s: %s joined the room; not %s, so ignored", call.call_id, participant.identity,
                        call.peer_user)
            return
        logger.info("call %s: %s joined the room", call.call_id, participant.identity)
        self._start_devices(call)
        self._report_peer(call, participant.identity, True)

    def _report_peer(self, call: _RtcCall, identity: str, present: bool) -> None:
        if self._on_peer is not None:
            try:
                self._on_peer(call.call_id, identity, present)
            except Exception:
                logger.exception("on_peer(%s, %s, %s) raised", call.call_id, identity, present)

    def _on_published(self, call: _RtcCall, publication: Any, participant: Any) -> None:
        from livekit import rtc

        if call.closing or not self._is_peer(call, participant.identity):
            return
        if publication.kind == rtc.TrackKind.KIND_AUDIO:
            if not publication.subscribed:
                publication.set_subscribed(True)
        elif publication.kind == rtc.TrackKind.KIND_VIDEO:
            call.peer_video[publication.sid] = participant.identity
            self._update_state(call)

    def _on_unpublished(self, call: _RtcCall, publication: Any, participant: Any) -> None:
        if call.peer_video.pop(publication.sid, None) is not None:
            self._update_state(call)

    def _on_subscribed(self, call: _RtcCall, track: Any, participant: Any) -> None:
        from livekit import rtc

        if call.closing:
            return
        if not self._is_peer(call, participant.identity):
            # Only reachable if someone subscribed for us; never played.
            logger.info("call %s: ignoring a track of %s", call.call_id, participant.identity)
            return
        if track.kind != rtc.TrackKind.KIND_AUDIO:
            return
        call.peer_audio[track.sid] = (participant.identity, track)
        if call.remote_audio is None:
            settings = self._settings
            call.remote_audio = RemoteAudio(settings.sample_rate, self._playback_config.channels, settings.period_ms)
        if call.remote_audio.source is None:
            call.remote_audio.attach(track)
            logger.info("call %s: playing the audio of %s", call.call_id, participant.identity)
        if call.speaker is None and call.speaker_task is None:
            call.speaker_task = asyncio.ensure_future(self._start_speaker(call))
        self._update_state(call)

    def _on_unsubscribed(self, call: _RtcCall, publication: Any) -> None:
        if call.peer_audio.pop(publication.sid, None) is None:
            return
        if call.remote_audio is not None and call.remote_audio.source == publication.sid:
            call.remote_audio.detach()
            if call.peer_audio and not call.closing:  # another device of the peer user: play that one instead
                identity, track = next(iter(call.peer_audio.values()))
                call.remote_audio.attach(track)
                logger.info("call %s: playing the audio of %s", call.call_id, identity)
        self._update_state(call)

    def _on_participant_left(self, call: _RtcCall, participant: Any) -> None:
        if not self._is_peer(call, participant.identity):
            return
        logger.info("call %s: %s left the room", call.call_id, participant.identity)
        self._report_peer(call, participant.identity, False)
        for sid in [sid for sid, identity in call.peer_video.items() if identity == participant.identity]:
            del call.peer_video[sid]
        for sid in [sid for sid, (identity, _) in call.peer_audio.items() if identity == participant.identity]:
            self._on_unsubscribed(call, _Sid(sid))
        self._update_state(call)

    def _on_reconnecting(self, call: _RtcCall) -> None:
        logger.warning("call %s: LiveKit lost the connection and reconnects", call.call_id)
        call.reconnecting = True
        self._update_state(call)

    def _on_reconnected(self, call: _RtcCall) -> None:
        logger.info("call %s: LiveKit reconnected", call.call_id)
        call.reconnecting = False
        # After a full reconnect the peer's tracks are announced again while the session is still being rebuilt, and a
        # subscription asked for then is dropped ("no confirmed transport"): ask again now.
        for participant in list(call.room.remote_participants.values()):
            for publication in list(participant.track_publications.values()):
                self._on_published(call, publication, participant)
        self._update_state(call)

    def _on_disconnected(self, call: _RtcCall, reason: Any) -> None:
        if call.closing or not call.joined:
            return
        logger.error("call %s: the LiveKit room is lost (reason %s)", call.call_id, reason)
        call.connected = False
        self._report(call, "failed")

    def _on_e2ee_state(self, call: _RtcCall, participant: Any, state: Any) -> None:
        from livekit.rtc._proto import e2ee_pb2

        identity = participant.identity if participant is not None else "?"
        name = e2ee_pb2.EncryptionState.Name(state) if isinstance(state, int) else state
        log = logger.warning if name in ("DECRYPTION_FAILED", "MISSING_KEY", "ENCRYPTION_FAILED",
                                         "INTERNAL_ERROR") else logger.debug
        log("call %s: media encryption of %s: %s", call.call_id, identity, name)

    def _update_state(self, call: _RtcCall) -> None:
        """Report ``connected``/``disconnected`` when the peer's presence (as media) changes."""
        if call.closing:
            return
        present = bool(call.peer_audio or call.peer_video) and not call.reconnecting
        if present and not call.connected:
            call.connected = True
            self._report(call, "connected")
        elif not present and call.connected:
            call.connected = False
            self._report(call, "disconnected")

    # -- helpers -------------------------------------------------------------------------------------------------

    def _report(self, call: _RtcCall, state: str) -> None:
        try:
            self._on_state(call.call_id, state)
        except Exception:
            logger.exception("on_state(%s, %s) raised", call.call_id, state)

    def _call(self, call_id: str) -> _RtcCall:
        call = self._calls.get(call_id)
        if call is None or call.closing:
            raise MediaError(f"unknown call {call_id}")
        return call

    def _e2ee_call(self, call_id: str, joined: bool = False) -> _RtcCall:
        call = self._call(call_id)
        if not call.e2ee:
            raise MediaError(f"call {call_id} was joined without E2EE, so it has no media keys")
        if joined and call.key is None:
            raise MediaError(f"call {call_id} has no media key yet: it is still joining the LiveKit room")
        return call


@dataclass(frozen=True)
class _Sid:
    """A stand-in publication (only its sid) for tracks whose participant left."""

    sid: str
