"""The door's MatrixRTC media (``RtcMediaEngine``) in a real LiveKit room, against a peer made with the LiveKit SDK.

The door runs on the simulated devices (ALSA ``file`` PCMs for microphone and speaker, the synthetic camera); the
peer is ``livekit.rtc`` used directly, as Element Call's livekit-client would be: it publishes a tone, decodes the
door's video and audio, and with E2EE derives its keys with HKDF as Element Call does.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from intercom.media import MediaError
from intercom.media.livekit import RtcMediaEngine
from intercom.media.synthetic import read_frame_counter
from intercom_dev.measure import peak_frequency, tone
from intercom_dev.media import StateLog, loopback_settings, read_raw, use_alsa_file_devices, write_raw
from intercom_dev.testbed.livekit import LiveKitServer, LiveKitUnavailable, ensure_livekit

from .test_livekit_server import _b64, access_token

pytestmark = pytest.mark.integration

# libasound reads its configuration when the first device opens; set the path before any test can open one.
use_alsa_file_devices()

ROOM = "!intercom:example.org"
DOOR = "@door:example.org:DOORDEV"
OWNER = "@owner:example.org"
PHONE = f"{OWNER}:PHONE"
OTHER = "@mallory:example.org:LAPTOP"
DOOR_TONE, PHONE_TONE, OTHER_TONE = 1000.0, 440.0, 1700.0
WIDTH, HEIGHT = 320, 240
DEVICE_THREADS = ("alsa-capture", "alsa-playback", "synthetic-camera")


@pytest.fixture
def server(tmp_path):
    """A LiveKit server of the test's own (as the ``livekit`` fixture, kept here so this file stands alone)."""
    try:
        binary = ensure_livekit()
    except LiveKitUnavailable as exc:
        pytest.skip(f"no LiveKit server for the MatrixRTC tests: {exc}")
    with LiveKitServer(tmp_path / "livekit", binary) as lk:
        yield lk


def _token(server, identity: str) -> str:
    return access_token(server.api_key, server.api_secret, ROOM, identity)


def _remove_participant(server, identity: str) -> None:
    """Have the server remove a participant (its RoomService API, with a room-admin token)."""
    now = int(time.time())
    claims = {"iss": server.api_key, "sub": "test-admin", "nbf": now - 10, "exp": now + 600,
              "video": {"room": ROOM, "roomAdmin": True}}
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing = f"{header}.{_b64(json.dumps(claims).encode())}"
    token = f"{signing}.{_b64(hmac.new(server.api_secret.encode(), signing.encode(), hashlib.sha256).digest())}"
    request = urllib.request.Request(
        f"{server.http_url}/twirp/livekit.RoomService/RemoveParticipant",
        data=json.dumps({"room": ROOM, "identity": identity}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 200


def _door(tmp_path: Path, log: StateLog, video_codec: str = "VP8", **overrides) -> RtcMediaEngine:
    write_raw(tmp_path / "door_in.raw", tone(DOOR_TONE, 60, amplitude=0.3))
    settings = loopback_settings(tmp_path / "door_in.raw", tmp_path / "door_out.raw", camera="synthetic",
                                 width=WIDTH, height=HEIGHT, **overrides)
    return RtcMediaEngine(settings, log, video_codec=video_codec)


def _element_call_e2ee(rtc):
    """What Element Call gives livekit-client: HKDF key material, ratchet window 10, key ring 256, default salt."""
    from livekit.rtc._proto import e2ee_pb2

    return rtc.E2EEOptions(key_provider_options=rtc.KeyProviderOptions(
        ratchet_window_size=10, key_ring_size=256, failure_tolerance=10,
        key_derivation_function=e2ee_pb2.KeyDerivationFunction.HKDF))


class Peer:
    """A participant made with the LiveKit SDK: publishes a tone, records what it decodes of the others."""

    def __init__(self, identity: str) -> None:
        from livekit import rtc

        self.rtc = rtc
        self.identity = identity
        self.room = rtc.Room()
        self.video: list[tuple[str, int, int, int]] = []  #: (sender, width, height, frame counter)
        self.audio: dict[str, list[np.ndarray]] = {}
        self._tasks: list[asyncio.Task] = []
        self._streams: list = []
        self.mime_types: dict[str, str] = {}  #: track sid -> mime type of the others' subscribed tracks
        self.room.on("track_subscribed", self._on_track)

    async def join(self, server, *, e2ee: bool = False, key: bytes | None = None) -> Peer:
        options = self.rtc.RoomOptions(auto_subscribe=True, encryption=_element_call_e2ee(self.rtc) if e2ee else None)
        await self.room.connect(server.url, _token(server, self.identity), options)
        if key is not None:
            self.set_key(self.identity, key, 0)
        return self

    def set_key(self, identity: str, key: bytes, index: int) -> None:
        self.room.e2ee_manager.key_provider.set_key(identity, key, index)

    async def publish_tone(self, frequency: float) -> str:
        """Publish a microphone track playing a tone; returns its sid."""
        rtc = self.rtc
        source = rtc.AudioSource(48000, 1)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
        publication = await self.room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
        signal = tone(frequency, 1.0, amplitude=0.3)

        async def run() -> None:
            position = 0
            while True:  # AudioSource buffers up to a second, then capture_frame waits: that paces the loop
                chunk = np.take(signal, range(position, position + 960), mode="wrap")
                position = (position + 960) % len(signal)
                await source.capture_frame(rtc.AudioFrame(chunk.astype(np.int16).tobytes(), 48000, 1, 960))

        self._tasks.append(asyncio.ensure_future(run()))
        return publication.sid

    def _on_track(self, track, publication, participant) -> None:
        rtc = self.rtc
        self.mime_types[publication.sid] = publication.mime_type
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            stream = rtc.VideoStream(track)
            self._tasks.append(asyncio.ensure_future(self._run_video(stream, participant.identity)))
        else:
            stream = rtc.AudioStream(track, sample_rate=48000, num_channels=1)
            self._tasks.append(asyncio.ensure_future(self._run_audio(stream, participant.identity)))
        self._streams.append(stream)

    async def _run_video(self, stream, sender: str) -> None:
        import av

        async for event in stream:
            frame = event.frame.convert(self.rtc.VideoBufferType.I420)
            counter = -1
            if (frame.width, frame.height) == (WIDTH, HEIGHT):
                planes = np.frombuffer(frame.data, dtype=np.uint8).reshape(HEIGHT * 3 // 2, WIDTH)
                counter = read_frame_counter(av.VideoFrame.from_ndarray(planes, format="yuv420p"))
            self.video.append((sender, frame.width, frame.height, counter))

    async def _run_audio(self, stream, sender: str) -> None:
        async for event in stream:
            self.audio.setdefault(sender, []).append(np.frombuffer(event.frame.data, dtype=np.int16).copy())

    def heard(self, sender: str, seconds: float = 1.0) -> np.ndarray:
        """The last ``seconds`` of what this peer decoded from ``sender``."""
        chunks = self.audio.get(sender, [])
        samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        return samples[-int(seconds * 48000):]

    async def leave(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for stream in self._streams:
            await asyncio.wait_for(stream.aclose(), 5)
        await self.room.disconnect()


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0


def _band_rms(samples: np.ndarray, frequency: float, rate: int = 48000) -> float:
    """RMS of ``samples`` within ±50 Hz of ``frequency``."""
    spectrum = np.fft.rfft(samples.astype(np.float64))
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    band = spectrum[(freqs > frequency - 50) & (freqs < frequency + 50)]
    return float(np.sqrt(2 * np.sum(np.abs(band) ** 2)) / len(samples))


async def _until(predicate, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        await asyncio.sleep(0.05)


def _device_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in DEVICE_THREADS]


def test_the_door_sends_camera_and_microphone_and_plays_only_the_peer_user(server, tmp_path):
    """Connected only once the owner publishes; video of the door's size and its tone reach the owner; the door's
    speaker plays the owner's tone, never a third user's, who does not make the call connected either."""

    async def scenario():
        log = StateLog()
        door = _door(tmp_path, log)
        await door.connect("c1", url=server.url, jwt=_token(server, DOOR), peer_user=OWNER)
        other = await Peer(OTHER).join(server)
        await other.publish_tone(OTHER_TONE)
        await asyncio.sleep(2)
        assert ("c1", "connected") not in log.events
        assert door.participants("c1") == [OTHER]

        phone = await Peer(PHONE).join(server)
        await _until(lambda: _device_threads(), what="the door's devices start when the owner is in the room")
        await asyncio.sleep(1)
        assert ("c1", "connected") not in log.events  # present, but nothing published yet
        await phone.publish_tone(PHONE_TONE)
        await log.wait("c1", "connected")
        assert sorted(door.participants("c1")) == sorted([OTHER, PHONE])

        await _until(lambda: len([v for v in phone.video if v[0] == DOOR]) >= 30, what="30 video frames")
        await _until(lambda: _rms(phone.heard(DOOR)) > 1000, what="the door's audio")
        await asyncio.sleep(3)  # the speaker plays the owner for a while
        await other.leave()
        await phone.leave()
        await door.close("c1")
        return log, phone

    log, phone = asyncio.run(scenario())
    frames = [v for v in phone.video if v[0] == DOOR]
    assert {(w, h) for _, w, h, _ in frames} == {(WIDTH, HEIGHT)}
    counters = [c for *_, c in frames]
    assert counters == sorted(counters) and len(set(counters)) > 20  # real, moving camera frames, in order
    heard = phone.heard(DOOR)
    assert abs(peak_frequency(heard) - DOOR_TONE) < 5

    played = read_raw(tmp_path / "door_out.raw")
    tail = played[-48000 * 2:]
    assert _rms(tail) > 1000, "the door's speaker stayed silent"
    assert abs(peak_frequency(tail) - PHONE_TONE) < 5
    assert _band_rms(played, OTHER_TONE) < 0.01 * _band_rms(played, PHONE_TONE), "another user's audio was played"
    assert log.events[0] == ("c1", "connected") and log.events[-1] == ("c1", "closed")


@pytest.mark.parametrize("video_codec", ["VP8", "H264"])
def test_e2ee_with_hkdf_keys_exchanged_decodes_and_a_wrong_key_does_not(server, tmp_path, video_codec):
    """Per-participant keys as Element Call has them: with the door's key the owner decodes its video and audio,
    and the door plays the owner; with a wrong key nothing decodes, until the door rotates to a key the owner
    then gets, which also shows that the door's frames follow its new key index. A door set to send the camera's
    own H.264 sends VP8 here: that cannot be encrypted."""

    async def scenario():
        log = StateLog()
        door = _door(tmp_path, log, video_codec=video_codec)
        await door.connect("c2", url=server.url, jwt=_token(server, DOOR), peer_user=OWNER, e2ee=True)
        door_key, door_index = door.local_key("c2")
        assert len(door_key) == 16 and door_index == 0
        phone_key = secrets.token_bytes(16)
        phone = await Peer(PHONE).join(server, e2ee=True, key=phone_key)
        door.set_peer_key("c2", PHONE, phone_key, 0)
        phone.set_key(DOOR, secrets.token_bytes(16), door_index)  # the wrong key
        await phone.publish_tone(PHONE_TONE)
        await log.wait("c2", "connected")
        await asyncio.sleep(4)
        wrong = (len(phone.video), _rms(phone.heard(DOOR)))

        rotated_key, rotated_index = door.rotate_key("c2")
        assert rotated_index == door_index + 1 and rotated_key != door_key
        assert door.local_key("c2") == (rotated_key, rotated_index)
        phone.set_key(DOOR, rotated_key, rotated_index)
        await _until(lambda: len(phone.video) >= 30, what="30 decrypted video frames")
        await _until(lambda: _rms(phone.heard(DOOR)) > 1000, what="the door's decrypted audio")
        await asyncio.sleep(2)
        await phone.leave()
        await door.close("c2")
        return wrong, phone

    (wrong_frames, wrong_rms), phone = asyncio.run(scenario())
    assert "video/VP8" in phone.mime_types.values()
    assert wrong_frames == 0, "video decoded under a wrong key"
    assert wrong_rms < 100, "audio decoded under a wrong key"
    assert {(w, h) for _, w, h, _ in phone.video} == {(WIDTH, HEIGHT)}
    counters = [c for *_, c in phone.video]
    assert counters == sorted(counters) and len(set(counters)) > 20
    assert abs(peak_frequency(phone.heard(DOOR)) - DOOR_TONE) < 5
    tail = read_raw(tmp_path / "door_out.raw")[-48000 * 2:]
    assert _rms(tail) > 1000 and abs(peak_frequency(tail) - PHONE_TONE) < 5


def test_the_cameras_own_h264_is_published_as_it_is(server, tmp_path):
    """With ``video_codec="H264"`` (no E2EE) the camera's access units go out unchanged: an H.264 track whose frames
    decode in order, keyframe requests of a new subscriber included (it joins after the first IDR)."""

    async def scenario():
        log = StateLog()
        door = _door(tmp_path, log, video_codec="H264", keyframe_interval=30.0)
        await door.connect("c6", url=server.url, jwt=_token(server, DOOR), peer_user=OWNER)
        phone = await Peer(PHONE).join(server)
        await phone.publish_tone(PHONE_TONE)
        await log.wait("c6", "connected")
        await asyncio.sleep(1.5)
        late = await Peer(OTHER).join(server)  # sees the door's video only after its keyframe request
        await _until(lambda: len([v for v in phone.video if v[0] == DOOR]) >= 30, what="30 H.264 frames")
        await _until(lambda: len([v for v in late.video if v[0] == DOOR]) >= 10, what="frames for a late subscriber")
        await late.leave()
        await phone.leave()
        await door.close("c6")
        return phone, late

    phone, late = asyncio.run(scenario())
    assert "video/H264" in phone.mime_types.values()
    for peer in (phone, late):
        frames = [v for v in peer.video if v[0] == DOOR]
        assert {(w, h) for _, w, h, _ in frames} == {(WIDTH, HEIGHT)}
        counters = [c for *_, c in frames]
        assert counters == sorted(counters) and len(set(counters)) >= 10


def test_the_peers_tracks_going_a_reconnect_and_losing_the_server_are_reported(server, tmp_path):
    """``disconnected`` while the owner has no track (it stays in the room) and while LiveKit reconnects,
    ``connected`` again when it is back, ``failed`` once the room is gone for good."""

    async def scenario():
        from livekit import rtc

        log = StateLog()
        door = _door(tmp_path, log)
        await door.connect("c5", url=server.url, jwt=_token(server, DOOR), peer_user=OWNER)
        phone = await Peer(PHONE).join(server)
        sid = await phone.publish_tone(PHONE_TONE)
        await log.wait("c5", "connected")
        await phone.room.local_participant.unpublish_track(sid)
        await log.wait("c5", "disconnected")
        assert door.participants("c5") == [PHONE]
        await phone.publish_tone(PHONE_TONE)
        await _until(lambda: log.events.count(("c5", "connected")) == 2, what="connected again")

        await door._calls["c5"].room.simulate_scenario(rtc.SimulateScenarioKind.SIMULATE_FULL_RECONNECT)
        await _until(lambda: log.events.count(("c5", "disconnected")) == 2, what="disconnected while reconnecting")
        await _until(lambda: log.events.count(("c5", "connected")) == 3, what="connected after the reconnect")
        before = (tmp_path / "door_out.raw").stat().st_size
        await asyncio.sleep(2)
        played = read_raw(tmp_path / "door_out.raw")[before // 2:]
        assert _rms(played[-48000:]) > 1000, "the speaker went silent after the reconnect"

        await phone.leave()
        await asyncio.to_thread(_remove_participant, server, DOOR)  # the room is lost for good (as when the SFU
        await log.wait("c5", "failed")                             # goes away, which the SDK takes 35 s to accept)
        await door.close("c5")
        return log

    log = asyncio.run(scenario())
    states = [state for call_id, state in log.events]
    assert states == ["connected", "disconnected", "connected", "disconnected", "connected", "disconnected",
                      "failed", "closed"]


def test_close_is_idempotent_releases_the_devices_and_leaves_the_room(server, tmp_path):
    async def scenario():
        log = StateLog()
        door = _door(tmp_path, log)
        await door.connect("c3", url=server.url, jwt=_token(server, DOOR), peer_user=OWNER)
        phone = await Peer(PHONE).join(server)
        await phone.publish_tone(PHONE_TONE)
        await log.wait("c3", "connected")
        await _until(lambda: set(_device_threads()) == set(DEVICE_THREADS), what="microphone, speaker and camera")
        await asyncio.gather(door.close("c3"), door.close("c3"))
        await door.close("c3")
        await door.close_all()
        assert _device_threads() == []
        with pytest.raises(MediaError, match="unknown call"):
            door.participants("c3")
        await _until(lambda: DOOR not in phone.room.remote_participants, what="the door leaves the room")
        await phone.leave()
        return log

    log = asyncio.run(scenario())
    assert log.events.count(("c3", "closed")) == 1


def test_a_refused_token_is_a_media_error_and_leaves_nothing(server, tmp_path):
    async def scenario():
        door = _door(tmp_path, StateLog())
        forged = access_token(server.api_key, "not-the-secret", ROOM, DOOR)
        with pytest.raises(MediaError, match="c4: the LiveKit server .* refused"):
            await door.connect("c4", url=server.url, jwt=forged, peer_user=OWNER)
        with pytest.raises(MediaError, match="unknown call"):
            door.participants("c4")
        assert _device_threads() == []

    asyncio.run(scenario())


def test_importing_the_media_package_does_not_load_livekit():
    code = ("import sys, intercom.media, intercom.media.livekit; "
            "sys.exit('livekit' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
