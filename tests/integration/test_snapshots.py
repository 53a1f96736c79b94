"""Ring everywhere: the visitor's picture in the room, missed/declined notices, !snapshot, bounded storage."""

from __future__ import annotations

import asyncio
import io

import av
import numpy as np
import pytest

from intercom.media import MediaEngine, MediaSettings
from intercom.media.synthetic import read_frame_counter
from intercom.snapshots import SnapshotStore

from .helpers import Setup, running_door, send_text, wait_until

pytestmark = pytest.mark.integration


def decode_jpeg(data: bytes) -> av.VideoFrame:
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    with av.open(io.BytesIO(data), format="image2pipe") as container:
        return next(container.decode(video=0))


async def check_ring_picture(setup: Setup, encrypted: bool) -> None:
    phone = setup.phone()
    await phone.start()
    async with running_door(setup) as door:
        await door.press()
        await wait_until(lambda: phone.images, "the picture", timeout=10)
        sender, content, _ = phone.images[0]  # how soon: bench/doorbell.py press_to_picture_ms
        assert sender == setup.door.user_id
        assert content["msgtype"] == "m.image" and content["body"] == "Someone is at the door"
        assert content["m.mentions"] == {"user_ids": [setup.owner.user_id]}
        assert ("file" in content) is encrypted and ("url" in content) is not encrypted
        info = content["info"]
        assert (info["w"], info["h"], info["mimetype"]) == (640, 480, "image/jpeg")
        data = await phone.download_image(content)
        assert len(data) == info["size"]
        frame = decode_jpeg(data)
        assert (frame.width, frame.height) == (640, 480)
        assert read_frame_counter(frame.reformat(format="yuv420p")) >= 0  # the synthetic frame, counter readable
        assert np.std(frame.to_ndarray(format="gray")) > 10  # a picture, not a blank
        invite = await phone.wait_for("m.call.invite", sender=setup.door.user_id)
        assert invite  # the call went out too
    await phone.close()


def test_press_posts_the_visitors_picture(setup):
    asyncio.run(check_ring_picture(setup, encrypted=False))


def test_picture_in_an_encrypted_room_is_encrypted_and_opens(homeserver, matrix_users, tmp_path):
    setup = Setup(homeserver, matrix_users, tmp_path, encrypted=True)
    asyncio.run(check_ring_picture(setup, encrypted=True))


@pytest.mark.parametrize("ending, notice", [("no answer", "Missed call from the door"),
                                            ("declined", "was declined"), ("answered", None)])
def test_notice_after_a_missed_or_declined_call_only(homeserver, matrix_users, tmp_path, ending, notice):
    setup = Setup(homeserver, matrix_users, tmp_path, extra="[calls]\nring_timeout = 10\n")

    async def main():
        phone = setup.phone()
        await phone.start()
        async with running_door(setup) as door:
            await door.press()
            invite = await phone.wait_for("m.call.invite", sender=setup.door.user_id)
            phone.call_id = invite["call_id"]
            if ending == "declined":
                await phone.send("m.call.reject", {})
            elif ending == "answered":
                await phone.answer(invite)
                await wait_until(lambda: door.core.state.value == "connected", "the call to connect")
                await phone.hangup()
            await wait_until(lambda: door.core.state.value == "idle", "the call to end", timeout=20)
            await asyncio.sleep(1.5)
            notices = [body for sender, body in phone.messages if sender == setup.door.user_id]
            if notice is None:
                assert notices == []
            else:
                assert len(notices) == 1 and notice in notices[0]
                assert "No picture" not in notices[0]  # it refers to the ring's picture
        await phone.close()

    asyncio.run(main())


def test_snapshot_command_only_for_the_owner(setup, matrix_users):
    stranger = matrix_users("stranger")
    their_room = setup.room_with(stranger)

    async def main():
        phone = setup.phone()
        await phone.start()
        async with running_door(setup):
            send_text(setup.server, stranger, their_room, "!snapshot")
            await asyncio.sleep(2.0)
            assert phone.images == []
            await phone.client.room_send(setup.room_id, "m.room.message", {"msgtype": "m.text", "body": "!snapshot"})
            await wait_until(lambda: phone.images, "the requested picture", timeout=10)
            assert phone.images[0][1]["body"] == "The door now"
            assert decode_jpeg(await phone.download_image(phone.images[0][1])).width == 640
        await phone.close()

    asyncio.run(main())


def test_kept_pictures_stay_within_the_bound_after_100_rings(tmp_path):
    """100 ring pictures from the camera into a store that keeps 10: never more than 10 on disk."""
    settings = MediaSettings(capture_device="null", playback_device="null", echo_cancellation=False,
                             camera="synthetic", width=640, height=480, framerate=30, bitrate_kbps=500,
                             keyframe_interval=2.0)
    store = SnapshotStore(tmp_path / "snapshots", keep=10)

    async def main():
        engine = MediaEngine(settings, lambda *args: None)
        largest = 0
        for _ in range(100):
            still = await engine.snapshot()
            largest = max(largest, len(still.jpeg))
            store.save(still.jpeg, still.taken_at, "ring")
            assert len(store.pictures()) <= 10
        return largest

    largest = asyncio.run(main())
    assert len(store.pictures()) == 10
    assert store.total_bytes() <= 10 * largest
