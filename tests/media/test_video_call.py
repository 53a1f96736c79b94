"""Video from the door's synthetic camera to a viewer, both built by MediaEngine, over loopback."""

import asyncio


from intercom.media import MediaEngine
from intercom.media import sdp
from intercom_dev.media import FrameLog, StateLog, connect, loopback_settings, peer_connection, write_raw
from intercom_dev.measure import pad, tone


def _engines(tmp_path, door_settings=None, viewer_codecs=("H264", "VP8")):
    for name in ("door_in.raw", "viewer_in.raw"):
        write_raw(tmp_path / name, pad(tone(440, 0.1), 0, 10))
    door_log, viewer_log, frames = StateLog(), StateLog(), FrameLog()
    door = MediaEngine(
        loopback_settings(tmp_path / "door_in.raw", tmp_path / "door_out.raw", camera="synthetic",
                          **(door_settings or {})),
        door_log,
    )
    viewer = MediaEngine(
        loopback_settings(tmp_path / "viewer_in.raw", tmp_path / "viewer_out.raw"),
        viewer_log,
        on_remote_video=frames,
        video_codecs=viewer_codecs,
    )
    return door, door_log, viewer, viewer_log, frames


def _increasing(counters):
    return all(b > a for a, b in zip(counters, counters[1:]))


async def _door_calls(tmp_path, viewer_codecs, door_settings=None):
    door, door_log, viewer, viewer_log, frames = _engines(tmp_path, door_settings, viewer_codecs)
    try:
        _, answer = await connect(door, door_log, viewer, viewer_log, "call-v")
        await frames.wait_for(lambda f: len(f) >= 30)
        return answer, list(frames.frames)
    finally:
        await frames.aclose()
        await door.close_all()
        await viewer.close_all()


def test_h264_from_the_camera_arrives_in_order_starting_with_a_keyframe(tmp_path):
    answer, frames = asyncio.run(_door_calls(tmp_path, ("H264", "VP8")))
    assert sdp.sending_codec(answer.sdp, "video") == "H264"
    counters = [c for c, _, _ in frames]
    assert frames[0][1], "the first decoded frame is not a keyframe"
    assert _increasing(counters), counters
    # Almost every frame arrives (a busy CI machine may make the camera skip one).
    assert counters[-1] - counters[0] < 1.5 * len(counters)


def test_vp8_fallback_for_a_peer_without_h264(tmp_path):
    answer, frames = asyncio.run(_door_calls(tmp_path, ("VP8",)))
    assert sdp.sending_codec(answer.sdp, "video") == "VP8"
    # (libvpx's decoder does not flag keyframes; that it decodes at all means the stream began with one.)
    counters = [c for c, _, _ in frames]
    assert _increasing(counters), counters
    assert counters[-1] - counters[0] < 1.5 * len(counters)


def test_a_pli_from_the_viewer_gets_a_keyframe_back(tmp_path):
    async def scenario():
        # No periodic keyframe during the test: the only IDRs are the first one and the one the PLI asks for.
        door, door_log, viewer, viewer_log, frames = _engines(tmp_path, {"keyframe_interval": 600.0})
        try:
            await connect(door, door_log, viewer, viewer_log, "call-p")
            await frames.wait_for(lambda f: len(f) >= 15)
            assert [k for _, k, _ in frames.frames].count(True) == 1
            receiver = next(t.receiver for t in peer_connection(viewer, "call-p").getTransceivers()
                            if t.kind == "video")
            ssrc = receiver.getSynchronizationSources()[0].source
            sent_at = len(frames.frames)
            await receiver._send_rtcp_pli(ssrc)
            await frames.wait_for(lambda f: any(k for _, k, _ in f[sent_at:]))
            return frames.frames, sent_at
        finally:
            await frames.aclose()
            await door.close_all()
            await viewer.close_all()

    frames, sent_at = asyncio.run(scenario())
    later_keyframes = [c for c, k, _ in frames[sent_at:] if k]
    assert len(later_keyframes) == 1
    assert _increasing([c for c, _, _ in frames])
