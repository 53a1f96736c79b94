"""MediaEngine's contract with the orchestrator: SDP shaping, candidates, renegotiation, errors, close."""

import asyncio
import contextlib
import logging
import re

import aioice.stun
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from intercom.media import IceServer, MediaEngine, MediaError
from intercom.media.ice import restrict_host_addresses, rtc_ice_servers
from intercom_dev.measure import pad, tone
from intercom.media.restart import IceRestart
from intercom.media.sdp import bundled_candidates, parse_sections, remote_ice_parameters, sending_codec
from intercom_dev.media import StateLog, connect, loopback_settings, peer_connection, write_raw


@pytest.fixture
def files(tmp_path):
    for name in ("a_in.raw", "b_in.raw"):
        write_raw(tmp_path / name, pad(tone(440, 0.1), 0, 10))
    return tmp_path


def _engine(files, side, log=None, **kwargs):
    settings = {k: kwargs.pop(k) for k in list(kwargs) if k not in ("on_remote_video", "video_codecs")}
    return MediaEngine(
        loopback_settings(files / f"{side}_in.raw", files / f"{side}_out.raw", **settings),
        log if log is not None else StateLog(),
        **kwargs,
    )


async def _raw_phone_offer(*kinds):
    """An offer from a bare aiortc peer (loopback only, no STUN), trickle-style: no end-of-candidates in it."""
    phone = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for kind in kinds:
        phone.addTransceiver(kind, direction="sendrecv")
    restrict_host_addresses(phone, ["127.0.0.1"])
    await phone.setLocalDescription(await phone.createOffer())
    return phone, phone.localDescription.sdp.replace("a=end-of-candidates\r\n", "")


def _directions(sdp_text):
    return {s.kind: s.direction for s in parse_sections(sdp_text)}


def test_offer_is_max_bundle_with_loopback_candidates_and_the_real_msid(files):
    async def scenario():
        door = _engine(files, "a", camera="synthetic")
        try:
            offer = await door.create_offer("c1", [])
            ice = peer_connection(door, "c1").getTransceivers()[0].receiver.transport.transport
            # The explicit empty list reached aioice: no STUN server (aiortc's default would be a public one).
            assert ice.iceGatherer._connection.stun_server is None
            return offer
        finally:
            await door.close_all()

    offer = asyncio.run(scenario())
    assert [s.kind for s in parse_sections(offer.sdp)] == ["audio", "video"]
    assert re.search(r"^a=group:BUNDLE 0 1\r?$", offer.sdp, re.M)
    candidates = re.findall(r"^a=candidate:.*$", offer.sdp, re.M)
    assert candidates and all(" 127.0.0.1 " in c and "typ host" in c for c in candidates)
    msids = set(re.findall(r"^a=msid:(\S+) ", offer.sdp, re.M))
    assert msids == {offer.stream_id}
    assert _directions(offer.sdp)["video"] == "sendonly"


def test_ice_servers_are_passed_in_order_udp_turn_first():
    servers = rtc_ice_servers([
        IceServer(urls=("turns:t.example:443?transport=tcp", "turn:t.example:3478?transport=tcp",
                        "turn:t.example:3478?transport=udp"), username="u", credential="p"),
        IceServer(urls=("stun:s.example:3478",)),
    ])
    assert servers[0].urls == ["turn:t.example:3478?transport=udp", "turn:t.example:3478?transport=tcp",
                               "turns:t.example:443?transport=tcp"]
    assert (servers[0].username, servers[0].credential) == ("u", "p")
    assert servers[1].urls == ["stun:s.example:3478"]
    assert rtc_ice_servers([]) == []


def test_audio_only_offer_gets_an_audio_only_answer_from_a_camera_door(files):
    async def scenario():
        phone, offer = await _raw_phone_offer("audio")
        door = _engine(files, "a", camera="synthetic")
        try:
            answer = await door.create_answer("c1", offer, [])
            await phone.setRemoteDescription(RTCSessionDescription(answer.sdp, "answer"))
            return answer
        finally:
            await door.close_all()
            await phone.close()

    answer = asyncio.run(scenario())
    assert [s.kind for s in parse_sections(answer.sdp)] == ["audio"]
    assert answer.stream_id is not None


def test_video_offer_to_a_door_without_camera_is_answered_inactive(files):
    async def scenario():
        log_a, log_b = StateLog(), StateLog()
        viewer = _engine(files, "a", log_a, on_remote_video=lambda call_id, track: None)
        door = _engine(files, "b", log_b)
        try:
            offer, answer = await connect(viewer, log_a, door, log_b, "c1")
            return offer, answer
        finally:
            await viewer.close_all()
            await door.close_all()

    offer, answer = asyncio.run(scenario())
    assert _directions(offer.sdp) == {"audio": "sendrecv", "video": "recvonly"}
    assert _directions(answer.sdp) == {"audio": "sendrecv", "video": "inactive"}


def test_the_door_answers_with_h264_first_even_if_the_offer_prefers_vp8(files):
    async def scenario():
        log_a, log_b = StateLog(), StateLog()
        viewer = _engine(files, "a", log_a, on_remote_video=lambda call_id, track: None, video_codecs=("VP8", "H264"))
        door = _engine(files, "b", log_b, camera="synthetic")
        try:
            offer = await viewer.create_offer("c1", [])
            answer = await door.create_answer("c1", offer.sdp, [])
            return offer, answer
        finally:
            await viewer.close_all()
            await door.close_all()

    offer, answer = asyncio.run(scenario())
    assert sending_codec(offer.sdp, "video") == "VP8"
    assert sending_codec(answer.sdp, "video") == "H264"
    assert _directions(answer.sdp)["video"] == "sendonly"


def test_candidates_prefix_end_of_candidates_and_garbage_never_raise(files, caplog):
    caplog.set_level(logging.INFO, logger="intercom.media")
    async def scenario():
        door = _engine(files, "a")
        phone, offer = await _raw_phone_offer("audio")
        try:
            await door.create_answer("c1", offer, [])
            await door.add_remote_candidates("c1", [
                {"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host", "sdpMid": "0",
                 "sdpMLineIndex": 0},
                {"candidate": "candidate:garbage", "sdpMid": "0", "sdpMLineIndex": 0},
                {"candidate": "candidate:2 1 udp 2130706431 127.0.0.1 40001 typ host"},  # neither mid nor index
                {"candidate": 5},
                "not a dict",
                {"candidate": ""},
                {"candidate": "candidate:3 1 udp 2130706431 127.0.0.1 40002 typ host", "sdpMid": "0"},
                {"candidate": ""},
            ])
            remote = peer_connection(door, "c1").getTransceivers()[0].receiver.transport.transport
            return [c.port for c in remote.getRemoteCandidates()]
        finally:
            await door.close_all()
            await phone.close()

    ports = asyncio.run(scenario())
    assert 40000 in ports and 40001 not in ports and 40002 not in ports
    assert "skipping remote candidate" in caplog.text
    assert "after end-of-candidates" in caplog.text


def test_every_method_raises_media_error_for_an_unknown_call(files):
    async def scenario():
        engine = _engine(files, "a")
        for coro in (engine.apply_answer("nope", "v=0"), engine.add_remote_candidates("nope", []),
                     engine.answer_renegotiation("nope", "v=0")):
            with pytest.raises(MediaError, match="nope"):
                await coro
        await engine.close("nope")  # idempotent, and silent for an unknown call

    asyncio.run(scenario())


def test_bad_sdp_and_duplicate_calls_raise_media_error_and_leave_nothing_open(files):
    async def scenario():
        log = StateLog()
        engine = _engine(files, "a", log)
        with pytest.raises(MediaError, match="c1"):
            await engine.create_answer("c1", "this is not sdp", [])
        await engine.create_offer("c2", [])
        with pytest.raises(MediaError, match="already exists"):
            await engine.create_offer("c2", [])
        with pytest.raises(MediaError, match="c2"):
            await engine.apply_answer("c2", "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n")
        with pytest.raises(MediaError, match="ICE server"):
            await engine.create_offer("c3", [IceServer(urls=("http://not-a-turn-server",))])
        await engine.close("c2")
        await engine.close("c2")
        assert engine._calls == {}
        return log.events

    events = asyncio.run(scenario())
    assert events.count(("c2", "closed")) == 1


@contextlib.asynccontextmanager
async def _door_call(files):
    """A connected call "c1" between a phone engine (receiving video) and a door engine with a camera."""
    log_a, log_b = StateLog(), StateLog()
    phone = _engine(files, "a", log_a, on_remote_video=lambda call_id, track: None)
    door = _engine(files, "b", log_b, camera="synthetic")
    try:
        await connect(phone, log_a, door, log_b, "c1")
        yield phone, door, log_b
    finally:
        await phone.close_all()
        await door.close_all()


def test_renegotiation_hold_is_answered_and_new_sections_are_refused(files):
    async def scenario():
        async with _door_call(files) as (phone, door, _):
            pc = peer_connection(phone, "c1")
            for transceiver in pc.getTransceivers():
                transceiver.direction = "inactive"  # what a hold looks like
            await pc.setLocalDescription(await pc.createOffer())
            hold = pc.localDescription.sdp
            answer = await door.answer_renegotiation("c1", hold)
            await pc.setRemoteDescription(RTCSessionDescription(answer.sdp, "answer"))

            fewer = hold[: hold.index("m=video")]
            fewer = fewer.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0")
            with pytest.raises(MediaError, match="media sections"):
                await door.answer_renegotiation("c1", fewer)
            return answer

    answer = asyncio.run(scenario())
    assert _directions(answer.sdp) == {"audio": "inactive", "video": "inactive"}


async def _restart_offer(phone, call_id):
    """The phone restarts ICE the way a browser does: a new ICE agent, then an offer with its new ufrag and pwd."""
    pc = peer_connection(phone, call_id)
    transport = pc.getTransceivers()[0].receiver.transport.transport
    restart = await IceRestart.begin(transport, lambda: restrict_host_addresses(pc, ["127.0.0.1"]))
    await pc.setLocalDescription(await pc.createOffer())
    return pc, transport, restart, pc.localDescription.sdp


async def _inbound_packets(pc):
    return sum(s.packetsReceived for s in (await pc.getStats()).values() if s.type == "inbound-rtp")


def test_an_ice_restart_gets_new_credentials_and_media_moves_to_the_new_path_under_the_same_call(files):
    async def scenario():
        async with _door_call(files) as (phone, door, log_b):
            door_pc = peer_connection(door, "c1")
            door_ice = door_pc.getTransceivers()[0].receiver.transport.transport
            first = door_ice._connection
            pc, transport, restart, offer = await _restart_offer(phone, "c1")
            answer = await door.answer_renegotiation("c1", offer)
            assert log_b.events[-1] == ("c1", "disconnected")
            await pc.setRemoteDescription(RTCSessionDescription(answer.sdp, "answer"))
            for candidate in bundled_candidates(answer.sdp)[0]:
                await pc.addIceCandidate(candidate)
            phone_done = asyncio.get_running_loop().create_future()
            restart.start(remote_ice_parameters(answer.sdp), phone_done.set_result)
            await door.add_remote_candidates("c1", [{"candidate": ""}])
            for _ in range(200):
                if log_b.events.count(("c1", "connected")) == 2:
                    break
                await asyncio.sleep(0.05)
            assert log_b.events == [("c1", "connected"), ("c1", "disconnected"), ("c1", "connected")], log_b.events
            assert await asyncio.wait_for(phone_done, 10) is True
            # Media now flows on the new connections only: the old ones are closed.
            assert first._closed and door_ice._connection is not first
            assert door_ice._send.__self__ is door_ice._connection and door_pc.connectionState == "connected"
            before = await _inbound_packets(pc)
            await asyncio.sleep(0.5)
            after = await _inbound_packets(pc)
        await restart.close()  # the phone's side, which the engine does not own here
        return offer, answer, before, after

    offer, answer, before, after = asyncio.run(scenario())
    ufrag = lambda sdp: re.search(r"a=ice-ufrag:(\S+)", sdp).group(1)  # noqa: E731
    assert ufrag(answer.sdp) != ufrag(offer)
    assert answer.candidates_complete and "a=candidate:" in answer.sdp
    assert after > before, (before, after)


def test_a_second_ice_restart_before_the_first_connected_replaces_it(files):
    """The phone changes networks twice in a row: the first restart never connects, the second one does."""
    async def scenario():
        async with _door_call(files) as (phone, door, log_b):
            door_ice = peer_connection(door, "c1").getTransceivers()[0].receiver.transport.transport
            _, _, first_restart, first_offer = await _restart_offer(phone, "c1")
            await door.answer_renegotiation("c1", first_offer)  # its answer never reaches the phone
            abandoned = door_ice._connection
            pc, _, restart, offer = await _restart_offer(phone, "c1")
            answer = await door.answer_renegotiation("c1", offer)
            await pc.setRemoteDescription(RTCSessionDescription(answer.sdp, "answer"))
            for candidate in bundled_candidates(answer.sdp)[0]:
                await pc.addIceCandidate(candidate)
            restart.start(remote_ice_parameters(answer.sdp), lambda ok: None)
            for _ in range(200):
                if log_b.events.count(("c1", "connected")) == 2:
                    break
                await asyncio.sleep(0.05)
            before = await _inbound_packets(pc)
            await asyncio.sleep(0.5)
            after = await _inbound_packets(pc)
            result = log_b.events[:], abandoned._closed, door_ice._connection is not abandoned, before, after
        await restart.close()
        await first_restart.close()
        return result

    events, abandoned_closed, replaced, before, after = asyncio.run(scenario())
    assert events == [("c1", "connected"), ("c1", "disconnected"), ("c1", "disconnected"), ("c1", "connected")]
    assert abandoned_closed and replaced
    assert after > before, (before, after)


def test_an_ice_restart_that_finds_no_path_reports_failed_and_closes_cleanly(files, monkeypatch):
    # A check that gets no valid answer fails after aioice's STUN retransmissions (about 30 s); fewer of them
    # here. In a call the core's reconnect grace (10 s) ends it sooner anyway.
    monkeypatch.setattr(aioice.stun, "RETRY_MAX", 1)

    async def scenario():
        async with _door_call(files) as (phone, door, log_b):
            _, _, restart, offer = await _restart_offer(phone, "c1")
            # Every check of the new paths fails: the phone's new agent answers the door's checks with 401, as the
            # door signs them with a password the phone never gave.
            offer = re.sub(r"a=ice-pwd:\S+", "a=ice-pwd:" + "x" * 22, offer)
            await door.answer_renegotiation("c1", offer)
            await door.add_remote_candidates("c1", [{"candidate": ""}])
            await log_b.wait("c1", "failed")
            await door.close("c1")
        await restart.close()
        return log_b.events

    events = asyncio.run(scenario())
    assert events == [("c1", "connected"), ("c1", "disconnected"), ("c1", "failed"), ("c1", "closed")], events


def test_connection_states_are_reported_on_both_sides(files):
    async def scenario():
        log_a, log_b = StateLog(), StateLog()
        a, b = _engine(files, "a", log_a), _engine(files, "b", log_b)
        await connect(a, log_a, b, log_b, "c1")
        await a.close("c1")
        await log_b.wait("c1", "disconnected")
        await b.close("c1")
        return log_a.events, log_b.events

    events_a, events_b = asyncio.run(scenario())
    assert events_a == [("c1", "connected"), ("c1", "closed")]
    assert events_b == [("c1", "connected"), ("c1", "disconnected"), ("c1", "closed")]


def test_an_answer_with_candidates_only_in_the_bundle_tagged_section_gives_the_door_all_of_them(files):
    """Browsers put a bundled answer's candidates in its first section only; aiortc alone adds none of them for an
    offerer (its setRemoteDescription keeps the last section per transport). Through TURN that broke every call the
    door placed: it never learned where the phone was, so it never sent to it."""

    async def scenario():
        door = _engine(files, "a", camera="synthetic")
        phone = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            offer = await door.create_offer("c1", [])
            await phone.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
            restrict_host_addresses(phone, ["127.0.0.1"])
            await phone.setLocalDescription(await phone.createAnswer())
            answer = phone.localDescription.sdp.replace("a=end-of-candidates\r\n", "")
            # As Chromium writes it: every candidate under the first m= section, none under the second.
            first, second = answer.split("\r\nm=video", 1)
            second = "\r\n".join(line for line in second.split("\r\n") if not line.startswith("a=candidate:"))
            answer = first + "\r\nm=video" + second
            wanted = {line.split()[4:6][0] + ":" + line.split()[5] for line in first.split("\r\n")
                      if line.startswith("a=candidate:")}
            await door.apply_answer("c1", answer)
            ice = peer_connection(door, "c1").getTransceivers()[0].receiver.transport.transport
            return wanted, {f"{c.ip}:{c.port}" for c in ice.getRemoteCandidates()}
        finally:
            await phone.close()
            await door.close_all()

    wanted, known = asyncio.run(scenario())
    assert wanted and known == wanted


def test_every_turn_uri_is_kept_for_relays_in_udp_tcp_tls_order():
    from intercom.media.ice import turn_uris

    servers = rtc_ice_servers([IceServer(urls=("turns:t.example:5349?transport=tcp", "turn:t.example:3478?transport=tcp",
                                               "stun:s.example:3478", "turn:t.example:3478?transport=udp",
                                               "turn:t.example:3478"), username="u", credential="p")])
    found = turn_uris(servers)
    assert [(u.transport, u.ssl) for u in found] == [("udp", False), ("tcp", False), ("tcp", True)]
    assert all(u.username == "u" and u.password == "p" for u in found)
    assert [u.local_preference for u in found] == sorted((u.local_preference for u in found), reverse=True)


def test_a_silent_turn_server_never_holds_up_the_offer_and_gathering_ends_later(files, monkeypatch):
    """Trickle: the offer comes with the host candidates while TURN is still being asked; its end-of-candidates
    follows through on_candidates, never before the offer was handed on."""
    import socket

    from intercom.media import ice as ice_module

    monkeypatch.setattr(ice_module, "GATHER_TIMEOUT", 1.0)
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))  # takes the allocation request and never answers
    reports = []

    async def scenario():
        door = MediaEngine(loopback_settings(files / "a_in.raw", files / "a_out.raw"), StateLog(),
                           on_candidates=lambda call_id, entries, done: reports.append((call_id, entries, done)))
        try:
            server = IceServer(urls=(f"turn:127.0.0.1:{silent.getsockname()[1]}?transport=udp",), username="u",
                               credential="p")
            offer = await door.create_offer("c1", [server])
            early = list(reports)
            for _ in range(100):
                if reports:
                    break
                await asyncio.sleep(0.05)
            return offer, early
        finally:
            await door.close_all()

    try:
        offer, early = asyncio.run(scenario())
    finally:
        silent.close()
    assert not offer.candidates_complete and "a=end-of-candidates" not in offer.sdp
    assert re.findall(r"^a=candidate:.* typ host", offer.sdp, re.M)
    assert early == []
    assert reports == [("c1", [], True)]
