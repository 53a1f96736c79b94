"""The door on MatrixRTC against Element Call's own libraries: a real door (simulated hardware, LiveKit's Python SDK,
matrix-nio) and the owner as matrix-js-sdk's MatrixRTC session with livekit-client in headless Chromium, on a real
Synapse with a real LiveKit server and our token service (the ``rtc_stack`` fixture).

What the owner's page saw is checked (the ring, the door's membership, decoded video of the door's camera, the
door's microphone heard) and what the door's speaker played (the owner's fake microphone).
"""

from __future__ import annotations

import asyncio

import pytest

from ..integration.helpers import Setup, running_door, wait_until
from ..interop.conftest import interop, measured  # noqa: F401 (fixtures: the built page served, the numbers)
from ..interop.door import door_hears
from ..interop.harness import open_browser

pytestmark = pytest.mark.integration


def door_identity(door) -> str:
    return f"{door.matrix.user_id}:{door.matrix.device_id}"


def own_membership(members: dict, user_id: str) -> list[dict]:
    return [m for m in members["members"] if m["userId"] == user_id]


def test_the_door_rings_the_owner_on_matrixrtc_and_they_talk(interop, rtc_stack, rtc_users, tmp_path, measured):
    hs = rtc_stack.homeserver
    rig = Setup(hs, rtc_users, tmp_path, preset="trusted_private_chat")  # a DM as Element's apps make it

    async def main():
        async with running_door(rig) as door, open_browser(interop, tmp_path / "browser") as browser:
            owner = await browser.client("owner")
            await owner.start(hs.url, rig.owner)
            await wait_until(lambda: door.rtc_state == "available", "the door to find the homeserver's focus")
            assert door.core.household_status()[0]["rung_by"] == "matrixrtc"
            loop = asyncio.get_running_loop()
            pressed = loop.time()
            await door.press()
            ring = await owner.wait_rtc_ring(rig.room_id, sender=door.matrix.user_id)
            measured["press_to_ring_seen_ms"] = round((loop.time() - pressed) * 1000)
            content = ring["content"]
            assert content["notification_type"] == "ring" and owner.user_id in content["m.mentions"]["user_ids"]
            assert ring["valid"] is True, ring  # js-sdk's own verdict: this rings (the door opened the slot)
            members = await owner.rtc_members(rig.room_id)
            (door_member,) = own_membership(members, door.matrix.user_id)
            assert content["m.relates_to"] == {"rel_type": "m.reference", "event_id": door_member["eventId"]}
            assert door.core.state.value == "ringing"

            joined = await owner.rtc_join(rig.room_id)
            frames = await owner.wait_rtc_frames(10, identity=door_identity(door))
            await owner.wait_rtc_audio(identity=door_identity(door))
            await wait_until(lambda: door.core.state.value == "connected", "the door to be in the call")
            peak, _ = await door_hears(door)
            call = await owner.rtc_call()
            measured["join_to_first_frame_ms"] = (frames["participant"]["element"]["firstFrame"]["wall"]
                                                  - call["times"]["joinStart"]["wall"])
            measured["frame_size"] = "x".join(map(str, frames["participant"]["element"]["lastFrameSize"]))
            measured["door_speaker_peak"] = round(peak, 3)
            assert joined

            await owner.rtc_leave()
            await wait_until(lambda: door.core.state.value != "connected", "the door to end the call")
            assert door.orchestrator.last_call.outcome.value == "completed"
            gone = await owner.wait_rtc_members(
                rig.room_id, lambda ms: not any(m["userId"] == door.matrix.user_id for m in ms),
                "the door to leave the room's call")
            assert gone

    asyncio.run(main())


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_the_owner_calls_and_the_door_joins_by_itself(interop, rtc_stack, rtc_users, tmp_path, measured, encrypted):
    hs = rtc_stack.homeserver
    rig = Setup(hs, rtc_users, tmp_path, preset="trusted_private_chat", encrypted=encrypted)  # a DM as Element makes

    async def main():
        async with open_browser(interop, tmp_path / "browser") as browser:
            owner = await browser.client("owner")
            await owner.start(hs.url, rig.owner, encryption=encrypted)  # before the door: trusted on first use
            async with running_door(rig) as door:
                await owner_calls(door, owner)

    async def owner_calls(door, owner):
        await owner.rtc_join(rig.room_id)
        frames = await owner.wait_rtc_frames(10, identity=door_identity(door))
        assert frames["e2ee"]["enabled"] is encrypted, frames["e2ee"]
        assert all(t["encrypted"] is encrypted for t in frames["participant"]["tracks"]), frames["participant"]
        await wait_until(lambda: door.core.state.value == "connected", "the door to join the owner's call")
        await door_hears(door)
        call = await owner.rtc_call()
        measured["owner_join_to_first_frame_ms"] = (frames["participant"]["element"]["firstFrame"]["wall"]
                                                    - call["times"]["joinStart"]["wall"])
        await owner.rtc_leave()
        await wait_until(lambda: door.core.state.value not in ("connected", "connecting"),
                         "the door to leave after the owner")

    asyncio.run(main())


def test_a_strangers_call_is_never_joined(interop, rtc_stack, rtc_users, tmp_path):
    hs = rtc_stack.homeserver
    rig = Setup(hs, rtc_users, tmp_path, preset="trusted_private_chat")  # a DM as Element's apps make it
    stranger = rtc_users("stranger")
    room = rig.room_with(stranger)

    async def main():
        async with running_door(rig) as door, open_browser(interop, tmp_path / "browser") as browser:
            page = await browser.client("stranger")
            await page.start(hs.url, stranger)
            await page.rtc_join(room)
            await asyncio.sleep(5)  # the door has seen the membership long before this (one sync)
            members = await page.rtc_members(room)
            assert not own_membership(members, door.matrix.user_id), members
            call = await page.rtc_call()
            assert all(p["identity"] != door_identity(door) for p in call["participants"]), call
            assert door.core.state.value == "idle"

    asyncio.run(main())


def test_encrypted_room_the_door_and_the_owner_exchange_media_keys_and_talk(interop, rtc_stack, rtc_users,
                                                                            tmp_path, measured):
    """In an encrypted room the media is end-to-end encrypted: the door's key reaches the owner's (trusted) device
    Olm-encrypted, the owner's key reaches the door, and LiveKit carries only GCM-encrypted tracks."""
    hs = rtc_stack.homeserver
    rig = Setup(hs, rtc_users, tmp_path, encrypted=True, preset="trusted_private_chat")

    async def main():
        async with open_browser(interop, tmp_path / "browser") as browser:
            owner = await browser.client("owner")
            await owner.start(hs.url, rig.owner, encryption=True)  # before the door: its device is trusted on first use
            async with running_door(rig) as door:
                await wait_until(lambda: door.rtc_state == "available", "the door to find the homeserver's focus")
                # (room version 12: the door is one of the DM's creators, with every power, listed nowhere else)
                assert door.core.household_status()[0]["rung_by"] == "matrixrtc", door.core.household_status()
                await door.press()
                ring = await owner.wait_rtc_ring(rig.room_id, sender=door.matrix.user_id)
                assert ring["encrypted"] is True and ring["valid"] is True, ring
                await owner.rtc_join(rig.room_id)
                frames = await owner.wait_rtc_frames(10, identity=door_identity(door))
                assert frames["e2ee"]["enabled"] is True, frames["e2ee"]
                assert all(t["encrypted"] for t in frames["participant"]["tracks"]), frames["participant"]
                await owner.wait_rtc_audio(identity=door_identity(door))
                await wait_until(lambda: door.core.state.value == "connected", "the door to be in the call")
                await door_hears(door)
                keys = [m for m in await owner.rtc_to_device() if m["sender"] == door.matrix.user_id]
                assert keys and keys[0]["encrypted"] is True, keys
                assert keys[0]["content"]["member"] == {"id": door_identity(door),
                                                        "claimed_device_id": door.matrix.device_id}, keys[0]
                from livekit import api
                from livekit.protocol import models
                async with api.LiveKitAPI(rtc_stack.livekit.http_url, rtc_stack.livekit.api_key,
                                          rtc_stack.livekit.api_secret) as lk:
                    listed = await lk.room.list_participants(api.ListParticipantsRequest(room=rig.room_id))
                tracks = [t for p in listed.participants for t in p.tracks]
                assert tracks and all(t.encryption == models.Encryption.Type.GCM for t in tracks), tracks
                measured["door_tracks_encrypted"] = len(tracks)
                await owner.rtc_leave()
                await wait_until(lambda: door.core.state.value != "connected", "the door to end the call")

    asyncio.run(main())


def test_a_killed_doors_membership_disappears_through_its_delayed_leave(interop, rtc_stack, rtc_users, tmp_path):
    """The door is killed (SIGKILL, no goodbye) in the middle of a call: the homeserver sends its delayed leave,
    so the owner's app does not keep showing a ghost door in the call."""
    import os
    import signal
    import subprocess
    import sys

    hs = rtc_stack.homeserver
    rig = Setup(hs, rtc_users, tmp_path, preset="trusted_private_chat")

    async def main():
        async with open_browser(interop, tmp_path / "browser") as browser:
            owner = await browser.client("owner")
            await owner.start(hs.url, rig.owner)
            log = open(tmp_path / "door.log", "w")
            door = subprocess.Popen([sys.executable, "-m", "intercom.cli", "run", "--simulate", "--config",
                                     str(rig.config_path), "--socket", str(tmp_path / "door.sock")],
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                await owner.rtc_join(rig.room_id)  # the owner calls; the door joins by itself
                try:
                    present = await owner.wait_rtc_members(
                        rig.room_id, lambda ms: any(m["userId"] == rig.door.user_id for m in ms),
                        "the door to join the owner's call", timeout=60)
                except Exception:
                    raise AssertionError((tmp_path / "door.log").read_text()[-3000:]) from None
                assert present
                os.kill(door.pid, signal.SIGKILL)
                door.wait(10)
                loop = asyncio.get_running_loop()
                killed = loop.time()
                await owner.wait_rtc_members(
                    rig.room_id, lambda ms: not any(m["userId"] == rig.door.user_id for m in ms),
                    "the killed door's membership to end", timeout=60)
                # the delayed leave fires LEAVE_DELAY_MS after the last renewal
                from intercom.matrix.rtc import LEAVE_DELAY_MS
                assert loop.time() - killed <= LEAVE_DELAY_MS / 1000 + 10
            finally:
                if door.poll() is None:
                    door.kill()
                    door.wait(10)
                log.close()

    asyncio.run(main())


def test_encrypted_call_the_door_gives_a_new_key_only_to_the_devices_still_there(interop, rtc_stack, rtc_users,
                                                                                tmp_path, measured):
    """The owner is in the door's call on two devices; one leaves: the door encrypts with a new key from then on
    and sends it only to the device still in the call (as Element Call rotates when someone leaves)."""
    hs = rtc_stack.homeserver
    rig = Setup(hs, rtc_users, tmp_path, encrypted=True, preset="trusted_private_chat")

    async def main():
        async with open_browser(interop, tmp_path / "browser") as browser:
            phone, laptop = await browser.client("phone"), await browser.client("laptop")
            await phone.start(hs.url, rig.owner, encryption=True)
            await laptop.start(hs.url, rig.owner, encryption=True)  # both trusted on first use by the door
            async with running_door(rig) as door:
                await wait_until(lambda: door.rtc_state == "available", "the door to find the homeserver's focus")
                await door.press()
                await phone.wait_rtc_ring(rig.room_id, sender=door.matrix.user_id)
                await phone.rtc_join(rig.room_id)
                await laptop.rtc_join(rig.room_id)
                await phone.wait_rtc_frames(10, identity=door_identity(door))
                await laptop.wait_rtc_frames(10, identity=door_identity(door))
                await laptop.rtc_leave()

                async def new_key_at_phone():
                    return [m for m in await phone.rtc_to_device()
                            if m["sender"] == door.matrix.user_id and m["content"]["keys"]["index"] == 1]
                await phone.wait_for(new_key_at_phone, "the door's new media key at the phone")
                assert not [m for m in await laptop.rtc_to_device()
                            if m["sender"] == door.matrix.user_id and m["content"]["keys"]["index"] == 1]
                before = (await phone.rtc_stats())
                decoded = next(p for p in before["participants"] if p["identity"] == door_identity(door))
                count = decoded["element"]["videoFrames"]
                try:
                    await phone.wait_rtc_frames(count + 30, identity=door_identity(door))  # still decoding
                except Exception as exc:
                    keys = [k for k in await phone.rtc_keys() if not k["own"]]
                    errors = (await phone.rtc_call())["encryptionErrors"]
                    raise AssertionError(f"keys at the phone: {keys}\nerrors: {errors[-5:]}") from exc
                measured["frames_after_rotation"] = 30

    asyncio.run(main())
