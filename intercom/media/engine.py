"""The media engine: one aiortc peer connection per call, with the door's microphone, speaker and camera.

The orchestrator drives it with the core's actions (offer, answer, candidates, renegotiation, close) and hears back
through ``on_state(call_id, state)``. Every public coroutine raises only :class:`MediaError`, whose message says
which call and which step failed; the orchestrator turns it into a hangup.

What the engine decides so that the peers at the other end work (shared notes, protocol.md §0 and §5):

- ICE servers are always an explicit list (aiortc falls back to a public STUN server on None), ordered UDP first
  because aiortc uses only the first TURN URI; bundle policy is max-bundle, as Element uses.
- An answer has media sections only for the kinds the offer has (aiortc 1.16 fails on a video track added before
  answering an audio-only offer); the door's video is ``sendonly`` (the door shows no picture, so it should not spend
  bandwidth and CPU receiving one) or ``inactive`` without a camera.
- Video goes out as H.264 from the camera's own encoder when H.264 is negotiated; otherwise (VP8 for Nheko) as raw
  frames that aiortc encodes.
- The msid stream id of the local SDP is returned for ``sdp_stream_metadata``.
- Devices (microphone, speaker, camera) open only when the connection is up, so a call that never connects (the
  losing side of glare, an unanswered invite) never holds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack

from .aec import EchoCanceller, create_echo_canceller
from .alsa import AlsaError, PcmConfig
from .audio import AudioTap, MicrophoneTrack, SpeakerSink
from .camera import Camera, CameraConfig, create_camera
from .errors import MediaError
from .ice import Trickle, restrict_host_addresses, rtc_ice_servers
from .playout import install_low_latency_audio
from .restart import IceRestart
from .sdp import (bundled_candidates, candidate_from_matrix, local_stream_id, parse_sections, remote_ice_parameters,
                  sending_codec)
from .settings import IceServer, LocalDescription, MediaSettings
from .still import Still, take_still
from .video import CameraTrack, install_keyframe_hook

logger = logging.getLogger(__name__)

StateCallback = Callable[[str, str], None]
CandidatesCallback = Callable[[str, list, bool], None]
CameraFactory = Callable[[str], "Camera | None"]
RemoteVideoCallback = Callable[[str, MediaStreamTrack], None]
AudioTapFactory = Callable[[str], "AudioTap | None"]

VIDEO_CODECS = ("H264", "VP8")
"Video codecs the door offers and accepts, most preferred first: H.264 can come pre-encoded from the camera."


@dataclass(eq=False)
class _Call:
    """Everything one call owns, so that ``close`` can release all of it."""

    call_id: str
    pc: RTCPeerConnection
    echo_canceller: EchoCanceller | None = None
    microphone: MicrophoneTrack | None = None
    camera_track: CameraTrack | None = None
    speaker: SpeakerSink | None = None
    remote_audio: MediaStreamTrack | None = None
    audio_tap: AudioTap | None = None
    speaker_task: asyncio.Task | None = None
    candidates_ended: bool = False
    trickle: Trickle | None = None
    restart: IceRestart | None = None  #: the latest ICE restart (the peer's network changed)
    ice_servers: list = field(default_factory=list)  #: aiortc RTCIceServer objects the call was made with
    connected: bool = False
    closing: bool = False
    closed: asyncio.Event = field(default_factory=asyncio.Event)


def device_configs(settings: MediaSettings) -> tuple[CameraConfig, PcmConfig, PcmConfig]:
    """The camera's, the microphone's and the speaker's configs from the media settings (one place for both call
    technologies' engines)."""
    camera = CameraConfig(width=settings.width, height=settings.height, framerate=settings.framerate,
                          bitrate_kbps=settings.bitrate_kbps, keyframe_interval=settings.keyframe_interval)
    period_frames = settings.sample_rate * settings.period_ms // 1000

    def pcm(device: str, periods: int) -> PcmConfig:
        return PcmConfig(device=device, rate=settings.sample_rate, period_frames=period_frames, periods=periods,
                         pace=settings.pace_audio)

    return camera, pcm(settings.capture_device, settings.capture_periods), pcm(settings.playback_device,
                                                                                settings.playback_periods)


async def open_speaker(call_id: str, remote_audio, playback: PcmConfig, settings: MediaSettings, *,
                       echo_canceller: EchoCanceller | None, tap: AudioTap | None) -> SpeakerSink | None:
    """Start playing a call's remote audio on the door's speaker (both call technologies' engines); None when the
    speaker cannot be opened: the call goes on without sound at the door, and the log says why."""
    speaker = SpeakerSink(remote_audio, playback, playout_max_ms=settings.playout_max_ms,
                          playout_target_ms=settings.playout_target_ms, playout_floor_ms=settings.playout_floor_ms,
                          echo_canceller=echo_canceller, tap=tap)
    try:
        await speaker.start()
    except AlsaError as exc:
        logger.error("call %s: %s; the call goes on without sound at the door", call_id, exc)
        return None
    return speaker


class MediaEngine:
    """Creates, negotiates and closes the peer connections of the door's calls."""

    def __init__(
        self,
        settings: MediaSettings,
        on_state: StateCallback,
        *,
        camera_factory: CameraFactory | None = None,
        on_remote_video: RemoteVideoCallback | None = None,
        audio_tap: AudioTapFactory | None = None,
        video_codecs: Sequence[str] = VIDEO_CODECS,
        freeze_gc: bool = True,
        on_candidates: CandidatesCallback | None = None,
    ) -> None:
        """
        :param on_candidates: ``(call_id, entries, complete)``: local candidates found after the offer or answer
            was returned (server-reflexive, relay), as ``m.call.candidates`` entries; ``complete`` once gathering
            is over. Without it those candidates are not signalled (loopback tests need none).
        :param camera_factory: makes the camera for a call (by call id) instead of ``settings.camera``; tests and
            benchmarks pass instrumented cameras.
        :param on_remote_video: if given, the door also receives video and hands each remote video track to it
            (the caller must consume it). Otherwise the door's video is send-only.
        :param audio_tap: makes an :class:`AudioTap` per call, to observe audio at the ALSA boundary.
        :param video_codecs: video codecs to offer and accept, most preferred first (a subset of ``VIDEO_CODECS``).
        :param freeze_gc: ``gc.freeze()`` when a call's media starts, so that garbage collection pauses stay shorter
            than the playout margin; undone (``gc.unfreeze()`` and a collection) once the last call is closed, so
            what the calls left behind is collected between calls instead of staying for good.
        """
        self._settings = settings
        self._on_state = on_state
        self._on_candidates = on_candidates
        self._camera_factory = camera_factory
        self._on_remote_video = on_remote_video
        self._audio_tap = audio_tap
        self._video_codecs = tuple(video_codecs)
        self._freeze_gc = freeze_gc
        self._frozen = False
        self._calls: dict[str, _Call] = {}
        self._camera_config, self._capture_config, self._playback_config = device_configs(settings)

    # -- the orchestrator's API ----------------------------------------------------------------------------------

    async def create_offer(self, call_id: str, ice_servers: Sequence[IceServer]) -> LocalDescription:
        """Start an outgoing call: a new peer connection with microphone and camera, and its offer."""
        call = self._new_call(call_id, ice_servers)
        async with self._closed_on_failure(call_id, "creating the offer"):
            self._add_audio(call)
            self._add_video(call, offered=True)
            return await self._set_local(call, await call.pc.createOffer())

    async def create_answer(
        self, call_id: str, offer_sdp: str, ice_servers: Sequence[IceServer]
    ) -> LocalDescription:
        """Answer an incoming call, with media only for the kinds the offer has."""
        try:
            sections = parse_sections(offer_sdp)
        except ValueError as exc:
            raise MediaError(f"call {call_id}: the offer is not valid SDP: {exc}") from exc
        kinds = [section.kind for section in sections]
        if "audio" not in kinds and "video" not in kinds:
            raise MediaError(f"call {call_id}: the offer has no audio or video section")
        call = self._new_call(call_id, ice_servers)
        async with self._closed_on_failure(call_id, "answering the offer"):
            # Transceivers are created in the offer's order before setRemoteDescription, which adopts them; this
            # is the only way to give the answer our video codec preference (H.264 first).
            for kind in kinds:
                if kind == "audio" and call.microphone is None:
                    self._add_audio(call)
                elif kind == "video" and not any(t.kind == "video" for t in call.pc.getTransceivers()):
                    self._add_video(call, offered=False)
            await call.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            return await self._set_local(call, await call.pc.createAnswer())

    @contextlib.asynccontextmanager
    async def _closed_on_failure(self, call_id: str, what: str) -> AsyncIterator[None]:
        """Building a call's media: on any failure, close what was built and raise :class:`MediaError`."""
        try:
            yield
        except MediaError:
            await self.close(call_id)
            raise
        except Exception as exc:
            await self.close(call_id)
            raise MediaError(f"call {call_id}: {what} failed: {exc}") from exc

    async def apply_answer(self, call_id: str, answer_sdp: str) -> None:
        """Apply the peer's answer to our offer."""
        call = self._call(call_id)
        try:
            await call.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))
            await self._add_sdp_candidates(call, answer_sdp)
            if call.trickle is not None:
                call.trickle.open_relays(call.pc)
            self._choose_video_mode(call, answer_sdp)
        except Exception as exc:
            raise MediaError(f"call {call_id}: applying the answer failed: {exc}") from exc

    async def add_remote_candidates(self, call_id: str, candidates: Sequence[Mapping]) -> None:
        """Add trickled remote candidates (Matrix ``m.call.candidates`` entries).

        ``{"candidate": ""}`` is end-of-candidates; aiortc rejects candidates after it, so later ones (a peer
        restarting ICE resets its own flag) are ignored. Malformed entries are logged and skipped.
        """
        call = self._call(call_id)
        for entry in candidates:
            try:
                candidate = candidate_from_matrix(entry)
            except ValueError as exc:
                logger.warning("call %s: skipping remote candidate: %s", call_id, exc)
                continue
            if call.candidates_ended:
                logger.info("call %s: ignoring a remote candidate after end-of-candidates", call_id)
                continue
            if candidate is None:
                await self._end_remote_candidates(call)
                continue
            try:
                await call.pc.addIceCandidate(candidate)
            except Exception as exc:
                logger.warning("call %s: aiortc refused remote candidate %r: %s", call_id, entry, exc)
        if call.trickle is not None:
            call.trickle.open_relays(call.pc)

    async def answer_renegotiation(self, call_id: str, offer_sdp: str) -> LocalDescription:
        """Answer an ``m.call.negotiate`` offer, if aiortc can: the same media sections.

        Hold and resume only change directions, which aiortc answers. An ICE restart (new ufrag, what js-sdk sends
        after a network change) gets a new ICE agent under the same call (:meth:`_restart_ice`). Added or removed
        sections are beyond aiortc 1.16 and raise :class:`MediaError`.
        """
        call = self._call(call_id)
        pc = call.pc
        if pc.signalingState != "stable" or pc.remoteDescription is None:
            raise MediaError(f"call {call_id}: cannot renegotiate in signaling state {pc.signalingState!r}")
        try:
            new = parse_sections(offer_sdp)
            old = parse_sections(pc.remoteDescription.sdp)
        except ValueError as exc:
            raise MediaError(f"call {call_id}: the renegotiation offer is not valid SDP: {exc}") from exc
        if [(s.kind, s.mid) for s in new] != [(s.kind, s.mid) for s in old]:
            raise MediaError(f"call {call_id}: the renegotiation changes the media sections, which aiortc cannot do")
        restarting = {s.ice_ufrag for s in new} != {s.ice_ufrag for s in old}
        try:
            remote_ice = remote_ice_parameters(offer_sdp)
        except ValueError as exc:
            raise MediaError(f"call {call_id}: the renegotiation offer is not valid SDP: {exc}") from exc
        try:
            if restarting:
                await self._restart_ice(call)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            await self._add_sdp_candidates(call, offer_sdp)
            answer = await self._set_local(call, await pc.createAnswer(), renegotiation=True)
            if restarting:
                call.restart.start(remote_ice, lambda ok, _call=call: self._restart_done(_call, ok))
            return answer
        except MediaError:
            raise
        except Exception as exc:
            raise MediaError(f"call {call_id}: answering the renegotiation failed: {exc}") from exc

    async def _restart_ice(self, call: _Call) -> None:
        """The phone restarts ICE (its network changed): a new ICE agent under the same call (see ``restart.py``).

        Until it connects the call counts as disconnected, so the core's reconnect grace bounds the wait.
        """
        logger.info("call %s: the peer restarts ICE; gathering afresh under the same call", call.call_id)
        self._report(call.call_id, "disconnected")
        if call.restart is not None:
            call.restart.abandon()
        if call.trickle is not None:
            call.trickle.close()
            call.trickle = None  # the new connection gets a trickle of its own
        call.candidates_ended = False
        transport = call.pc.getTransceivers()[0].receiver.transport.transport
        call.restart = await IceRestart.begin(transport, lambda: self._prepare_gathering(call))

    def _restart_done(self, call: _Call, connected: bool) -> None:
        if call.closing:
            return
        logger.info("call %s: ICE restart %s", call.call_id, "connected" if connected else "found no path")
        self._report(call.call_id, "connected" if connected else "failed")

    async def _add_sdp_candidates(self, call: _Call, remote_sdp: str) -> None:
        """The remote SDP's candidates, given to the bundle's transport (see :func:`.sdp.bundled_candidates`)."""
        candidates, complete = bundled_candidates(remote_sdp)
        for candidate in candidates:
            try:
                await call.pc.addIceCandidate(candidate)
            except Exception as exc:
                logger.warning("call %s: aiortc refused a candidate of the remote SDP: %s", call.call_id, exc)
        if complete and not call.candidates_ended:
            await self._end_remote_candidates(call)

    async def _end_remote_candidates(self, call: _Call) -> None:
        """The peer's end-of-candidates: to aiortc now, or once our own gathering is over (see ``Trickle``)."""
        call.candidates_ended = True
        if call.trickle is None or not call.trickle.end_of_remote_candidates(lambda: call.pc.addIceCandidate(None)):
            try:
                await call.pc.addIceCandidate(None)
            except Exception as exc:
                logger.warning("call %s: aiortc refused end-of-candidates: %s", call.call_id, exc)

    async def close(self, call_id: str) -> None:
        """End a call: close the connection, stop every thread, release the devices, then report ``closed``.

        Idempotent: closing an unknown or already closed call does nothing. Never raises; failures are logged.
        """
        call = self._calls.get(call_id)
        if call is None:
            return
        if call.closing:
            await call.closed.wait()
            return
        call.closing = True
        if call.trickle is not None:
            call.trickle.close()
        if call.restart is not None:
            call.restart.abandon()
        try:
            await call.pc.close()
        except Exception:
            logger.exception("call %s: closing the peer connection failed", call_id)
        if call.restart is not None:
            await call.restart.close()
        if call.speaker_task is not None:
            await asyncio.gather(call.speaker_task, return_exceptions=True)
        for part in (call.speaker, call.microphone, call.camera_track):
            if part is None:
                continue
            try:
                await part.aclose()
            except Exception:
                logger.exception("call %s: closing %s failed", call_id, type(part).__name__)
        del self._calls[call_id]
        call.closed.set()
        if self._frozen and not self._calls:
            self._thaw()
        self._report(call_id, "closed")

    def _thaw(self) -> None:
        """After the last call: give the objects frozen while it ran (its own included) back to the collector, and
        collect now, while no audio is playing; a freeze is never undone during a call."""
        self._frozen = False
        gc.unfreeze()
        gc.collect()

    async def snapshot(self) -> Still:
        """A still picture from the camera (for the room), taken with a camera of its own, off the event loop."""
        camera = self._make_camera("snapshot")
        if camera is None:
            raise MediaError("no camera is configured, so there is no picture")
        try:
            return await asyncio.to_thread(take_still, camera)
        except MediaError:
            raise
        except Exception as exc:
            raise MediaError(f"taking a picture failed: {exc}") from exc

    async def close_all(self) -> None:
        """Close every call (at shutdown)."""
        await asyncio.gather(*(self.close(call_id) for call_id in list(self._calls)))

    # -- building a call -----------------------------------------------------------------------------------------

    def _new_call(self, call_id: str, ice_servers: Sequence[IceServer]) -> _Call:
        if call_id in self._calls:
            raise MediaError(f"call {call_id} already exists")
        try:
            configuration = RTCConfiguration(
                iceServers=rtc_ice_servers(ice_servers), bundlePolicy=RTCBundlePolicy.MAX_BUNDLE
            )
            pc = RTCPeerConnection(configuration)
        except Exception as exc:
            raise MediaError(f"call {call_id}: bad ICE server list: {exc}") from exc
        call = _Call(call_id=call_id, pc=pc, ice_servers=list(configuration.iceServers or []))
        call.audio_tap = self._audio_tap(call_id) if self._audio_tap else None
        if self._settings.echo_cancellation:
            call.echo_canceller = create_echo_canceller(
                self._capture_config.period_frames,
                self._settings.sample_rate,
                self._settings.aec_tail_ms,
                self._settings.aec_residual_suppression_db,
            )
        self._calls[call_id] = call

        @pc.on("connectionstatechange")
        def on_connection_state() -> None:
            self._on_connection_state(call)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._on_remote_track(call, track)

        return call

    def _add_audio(self, call: _Call) -> None:
        call.microphone = MicrophoneTrack(self._capture_config, call.echo_canceller, call.audio_tap)
        call.pc.addTrack(call.microphone)

    def _add_video(self, call: _Call, offered: bool) -> None:
        """The video transceiver: send-only with a camera, receive-only for a viewer, else none (offer) or inactive."""
        camera = self._make_camera(call.call_id)
        receive = self._on_remote_video is not None
        if camera is not None:
            call.camera_track = CameraTrack(camera)
            sender = call.pc.addTrack(call.camera_track)
            transceiver = self._transceiver_of(call.pc, sender)
            transceiver.direction = "sendrecv" if receive else "sendonly"
            install_keyframe_hook(sender)
        elif receive:
            transceiver = call.pc.addTransceiver("video", direction="recvonly")
        elif offered:
            return
        else:
            transceiver = call.pc.addTransceiver("video", direction="inactive")
        transceiver.setCodecPreferences(self._video_capabilities())

    def _make_camera(self, call_id: str) -> Camera | None:
        try:
            if self._camera_factory is not None:
                return self._camera_factory(call_id)
            return create_camera(self._settings.camera, self._camera_config)
        except Exception as exc:
            raise MediaError(f"call {call_id}: cannot create the camera: {exc}") from exc

    def _video_capabilities(self):
        capabilities = RTCRtpSender.getCapabilities("video").codecs
        preferred = [c for name in self._video_codecs for c in capabilities if c.name == name]
        return preferred + [c for c in capabilities if c.name == "rtx"]

    @staticmethod
    def _transceiver_of(pc: RTCPeerConnection, sender: RTCRtpSender) -> RTCRtpTransceiver:
        return next(t for t in pc.getTransceivers() if t.sender is sender)

    async def _set_local(
        self, call: _Call, description: RTCSessionDescription, renegotiation: bool = False
    ) -> LocalDescription:
        """setLocalDescription (which gathers every candidate), then pick the video mode if this was the answer."""
        self._prepare_gathering(call)
        if self._settings.own_audio_playout:
            for transceiver in call.pc.getTransceivers():
                if transceiver.kind == "audio":
                    install_low_latency_audio(transceiver.receiver)
        await call.pc.setLocalDescription(description)
        if call.closing:
            raise MediaError(f"call {call.call_id} was closed while gathering candidates")
        sdp = call.pc.localDescription.sdp
        if description.type == "answer" and not renegotiation:
            self._choose_video_mode(call, sdp)
        complete = not call.trickle.pending
        if not complete:
            sdp = sdp.replace("a=end-of-candidates\r\n", "")  # more follow in m.call.candidates
        call.trickle.release()
        return LocalDescription(sdp=sdp, stream_id=local_stream_id(sdp), candidates_complete=complete)

    def _prepare_gathering(self, call: _Call) -> None:
        """Before the call's ICE connections gather: host addresses restricted where asked, and the trickle that
        sends STUN/TURN candidates after the description. Connections already prepared are left as they are."""
        if self._settings.host_addresses is not None:
            restrict_host_addresses(call.pc, self._settings.host_addresses)
        if call.trickle is None:
            call.trickle = Trickle(call.ice_servers, lambda entries, complete, _id=call.call_id:
                                   self._report_candidates(_id, entries, complete))
        call.trickle.install(call.pc)

    def _report_candidates(self, call_id: str, entries: list[dict], complete: bool) -> None:
        if self._on_candidates is None:
            return
        try:
            self._on_candidates(call_id, entries, complete)
        except Exception:
            logger.exception("on_candidates(%s) raised", call_id)

    def _choose_video_mode(self, call: _Call, answer_sdp: str) -> None:
        """H.264 from the camera's encoder if H.264 goes out, else raw frames for aiortc's encoder (VP8)."""
        track = call.camera_track
        if track is None:
            return
        codec = sending_codec(answer_sdp, "video")
        track.use_encoded(codec == "H264" and self._settings.prefer_encoded_video)
        logger.info("call %s: video goes out as %s (%s)", call.call_id, codec,
                    "camera's H.264" if track.encoded else "encoded by aiortc")

    # -- events from aiortc --------------------------------------------------------------------------------------

    def _on_remote_track(self, call: _Call, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and call.remote_audio is None:
            call.remote_audio = track
        elif track.kind == "video" and self._on_remote_video is not None:
            self._on_remote_video(call.call_id, track)

    def _on_connection_state(self, call: _Call) -> None:
        state = call.pc.connectionState
        logger.info("call %s: connection %s", call.call_id, state)
        if call.closing:
            return
        if state == "connected" and not call.connected:
            call.connected = True
            call.speaker_task = asyncio.ensure_future(self._start_speaker(call))
            self._report(call.call_id, "connected")
        elif state == "failed":
            self._report(call.call_id, "failed")
        elif state == "closed":
            # Not our close(): the peer closed its DTLS session (a browser does on hangup) and aiortc closed the
            # connection for good. Reported as "disconnected", since the hangup event usually follows.
            self._report(call.call_id, "disconnected")

    async def _start_speaker(self, call: _Call) -> None:
        if call.remote_audio is None or call.speaker is not None:
            return
        if self._freeze_gc:
            # The cyclic collector's full passes stop every Python thread, the playback thread included, for as
            # long as they take: 13 ms measured in the test process, more with matrix-nio's heap on a Pi. Moving
            # what exists now (the long-lived state) into the permanent generation makes later passes scan only
            # what was allocated since. Undone when the last call closes (see _thaw).
            gc.freeze()
            self._frozen = True
        call.speaker = await open_speaker(call.call_id, call.remote_audio, self._playback_config, self._settings,
                                          echo_canceller=call.echo_canceller, tap=call.audio_tap)

    def _report(self, call_id: str, state: str) -> None:
        try:
            self._on_state(call_id, state)
        except Exception:
            logger.exception("on_state(%s, %s) raised", call_id, state)

    def _call(self, call_id: str) -> _Call:
        call = self._calls.get(call_id)
        if call is None or call.closing:
            raise MediaError(f"unknown call {call_id}")
        return call
