"""The door against matrix-js-sdk's legacy MatrixCall (what Element Web/Desktop runs) in headless Chromium.

Each test runs a real door (simulated hardware, real aiortc and matrix-nio) and a js-sdk page on the test Synapse,
and checks what each side saw: js-sdk's call state, hangup party and reason, the decoded remote video and the remote
audio's energy; the door's call state, LEDs, call outcome, and what its speaker played.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from .door import Rig, door_hears, door_remote_candidates, hang_up_at_the_door, running_door, wait_until
from .harness import open_browser

pytestmark = pytest.mark.integration


def page_ms(call: dict, state: str) -> int | None:
    """When (page clock, ms) a js-sdk call first reached ``state``."""
    return next((s["t"] for s in call["states"] if s["state"] == state), None)


def media_numbers(stats: dict, measured: dict, prefix: str = "") -> None:
    video, audio, element = stats.get("video") or {}, stats["audio"], stats["element"] or {}
    if video:
        measured[f"{prefix}frames"] = video["framesDecoded"]
        measured[f"{prefix}size"] = f"{video['frameWidth']}x{video['frameHeight']}"
        measured[f"{prefix}codec"] = video["codec"]
        measured[f"{prefix}fps"] = stats.get("fps")
    measured[f"{prefix}audio_level"] = round(audio["audioLevel"], 3)
    measured[f"{prefix}audio_energy"] = round(audio["totalAudioEnergy"], 4)
    measured[f"{prefix}analyser_peak_rms"] = round(element.get("peakRms", 0), 3)
    measured[f"{prefix}pair"] = (stats.get("pair") or {}).get("local")


@pytest.fixture
def rig(homeserver, matrix_users, tmp_path):
    return Rig(homeserver, matrix_users, tmp_path)


def test_door_calls_js_sdk_answers_media_flows_and_js_sdk_hangs_up(interop, homeserver, rig, tmp_path, measured):
    async def main():
        async with open_browser(interop, tmp_path / "browser") as browser:
            owner = await browser.client("owner")
            await owner.start(homeserver.url, rig.owner)
            async with running_door(rig) as door:
                await door.press()
                ringing = await owner.wait_incoming()
                call_id = ringing["callId"]
                assert ringing["state"] == "ringing" and ringing["type"] == "video"
                invite = await owner.wait_event("m.call.invite", call_id=call_id)
                assert invite["content"]["version"] == "1" and invite["content"]["invitee"] == rig.owner.user_id
                assert door.core.led.value == "calling"

                await owner.answer(call_id)
                connected = await owner.wait_state(call_id, "connected")
                # js-sdk picked up the door's stream as its usermedia feed (sdp_stream_metadata keyed right).
                assert [f["purpose"] for f in connected["remoteFeeds"]] == ["m.usermedia"]
                assert connected["remoteFeeds"][0]["video"] == 1 and connected["remoteFeeds"][0]["audio"] == 1
                metadata = invite["content"].get("sdp_stream_metadata")
                assert metadata is None or list(metadata) == [connected["remoteFeeds"][0]["streamId"]]
                stats = await owner.live_media(call_id)
                assert stats["video"]["frameWidth"] > 0 and stats["video"]["frameHeight"] > 0
                peak, rms = await door_hears(door)
                await wait_until(lambda: door.core.state.value == "connected", "the door to be connected")
                assert door.core.call_id == call_id and door.core.led.value == "in_call"
                await owner.wait_event("m.call.select_answer", call_id=call_id)

                measured["ring_to_connected_ms"] = page_ms(connected, "connected") - page_ms(connected, "ringing")
                measured["answer_to_connected_ms"] = (page_ms(connected, "connected")
                                                      - page_ms(connected, "wait_local_media"))
                media_numbers(stats, measured)
                measured["door_speaker_peak"] = round(peak, 3)

                await owner.hangup(call_id)
                ended = await owner.wait_state(call_id, "ended")
                assert ended["hangupParty"] == "local" and ended["hangupReason"] == "user_hangup"
                await wait_until(lambda: door.core.state.value == "idle", "the door to end the call")
                last = door.orchestrator.last_call
                assert last.call_id == call_id and last.outcome.value == "completed" and last.reason == "user_hangup"
                assert door.core.led.value == "ended"

    asyncio.run(main())


def test_door_hangs_up_and_js_sdk_ends_with_the_reason(interop, homeserver, rig, tmp_path, measured):
    async def main():
        async with open_browser(interop, tmp_path / "browser") as browser:
            owner = await browser.client("owner")
            await owner.start(homeserver.url, rig.owner)
            async with running_door(rig) as door:
                await door.press()
                call_id = (await owner.wait_incoming())["callId"]
                await owner.answer(call_id)
                await owner.live_media(call_id)
                await wait_until(lambda: door.core.state.value == "connected", "the door to be connected")

                hang_up_at_the_door(door)
                ended = await owner.wait_state(call_id, "ended", timeout=10)
                assert ended["hangupParty"] == "remote" and ended["hangupReason"] == "user_hangup"
                hangup = await owner.wait_event("m.call.hangup", call_id=call_id)
                assert hangup["sender"] == rig.door.user_id
                measured["door_hangup_to_js_sdk_ended_ms"] = ended["ended"] - hangup["t"] if hangup["t"] else None
                await wait_until(lambda: door.core.state.value == "idle", "the door to be idle")
                assert door.orchestrator.last_call.outcome.value == "completed"

    asyncio.run(main())


@pytest.mark.parametrize("video", [True, False], ids=["video call", "voice call"])
def test_owner_call_is_answered_with_media_both_ways(interop, homeserver, rig, tmp_path, measured, video):
    """Element's video button, and its "voice call" (an audio-only offer: the door answers audio only)."""

    async def main():
        async with open_browser(interop, tmp_path / "browser") as browser:
            owner = await browser.client("owner")
            await owner.start(homeserver.url, rig.owner)
            async with running_door(rig) as door:
                call_id = await owner.place(rig.room_id, video=video)
                invite = await owner.wait_event("m.call.invite", call_id=call_id)
                assert ("m=video" in invite["content"]["offer"]["sdp"]) == video
                connected = await owner.wait_state(call_id, "connected")
                assert connected["type"] == ("video" if video else "voice")
                answer = await owner.wait_event("m.call.answer", call_id=call_id)
                assert answer["sender"] == rig.door.user_id and answer["content"]["version"] == "1"
                # One media section per offered one: audio and video, or audio only.
                assert answer["content"]["answer"]["sdp"].count("\r\nm=") == (2 if video else 1)
                stats = await owner.live_media(call_id, video=video)
                assert (stats["video"] is None) == (not video)
                peak, _ = await door_hears(door)
                await wait_until(lambda: door.core.state.value == "connected", "the door to be connected")
                assert door.core.call_id == call_id and door.core.direction.value == "incoming"

                measured["invite_to_connected_ms"] = page_ms(connected, "connected") - page_ms(connected, "invite_sent")
                media_numbers(stats, measured)
                measured["door_speaker_peak"] = round(peak, 3)

                await owner.hangup(call_id)
                await wait_until(lambda: door.core.state.value == "idle", "the door to end the call")
                assert door.orchestrator.last_call.outcome.value == "completed"

    asyncio.run(main())


def test_a_strangers_call_is_never_answered_and_stops_ringing_at_once(interop, homeserver, rig, matrix_users,
                                                                      tmp_path, measured):
    stranger = matrix_users("stranger")
    their_room = rig.room_with(stranger)

    async def main():
        async with open_browser(interop, tmp_path / "browser") as browser:
            caller = await browser.client("stranger")
            await caller.start(homeserver.url, stranger)
            async with running_door(rig) as door:
                call_id = await caller.place(their_room, video=True)
                ended = await caller.wait_state(call_id, "ended", timeout=15)
                reject = await caller.wait_event("m.call.reject", call_id=call_id)
                assert reject["sender"] == rig.door.user_id
                assert ended["hangupParty"] == "remote"
                assert not await caller.events("m.call.answer", call_id=call_id)
                measured["invite_to_ended_ms"] = ended["ended"] - page_ms(ended, "invite_sent")
                assert measured["invite_to_ended_ms"] < 10_000  # js-sdk would ring for 60 s
                await asyncio.sleep(1.0)
                assert door.core.state.value == "idle" and door.core.led.value == "idle"
                last = door.orchestrator.last_call
                assert last.call_id == call_id and last.outcome.value == "refused"

    asyncio.run(main())


def test_js_sdk_rejects_the_doors_call_and_the_door_shows_declined(interop, homeserver, rig, tmp_path, measured):
    async def main():
        async with open_browser(interop, tmp_path / "browser") as browser:
            owner = await browser.client("owner")
            await owner.start(homeserver.url, rig.owner)
            async with running_door(rig) as door:
                await door.press()
                call_id = (await owner.wait_incoming())["callId"]
                rejected_at = asyncio.get_running_loop().time()
                await owner.reject(call_id)
                ended = await owner.wait_state(call_id, "ended")
                assert ended["hangupParty"] == "local"
                await wait_until(lambda: door.core.led.value == "declined", "the door to show declined", timeout=10)
                measured["reject_to_declined_ms"] = round((asyncio.get_running_loop().time() - rejected_at) * 1000)
                assert door.core.state.value == "idle"
                last = door.orchestrator.last_call
                assert last.call_id == call_id and last.outcome.value == "declined"
                reject = await owner.wait_event("m.call.reject", call_id=call_id)
                assert reject["sender"] == rig.owner.user_id

    asyncio.run(main())


def test_hold_and_resume_from_js_sdk_renegotiates_and_media_comes_back(interop, homeserver, rig, tmp_path,
                                                                        measured):
    """Element's hold button: two ``m.call.negotiate`` offers (inactive, then sendrecv) the door must answer."""

    async def main():
        async with open_browser(interop, tmp_path / "browser") as browser:
            owner = await browser.client("owner")
            await owner.start(homeserver.url, rig.owner)
            async with running_door(rig) as door:
                call_id = await owner.place(rig.room_id, video=True)
                await owner.wait_state(call_id, "connected")
                await owner.live_media(call_id)

                await owner.call("hold", call_id, True)
                negotiate = await owner.wait_event("m.call.negotiate", call_id=call_id, timeout=10)
                assert negotiate["sender"] == rig.owner.user_id
                answers = await owner.wait_for(lambda: _negotiate_answers(owner, rig, call_id, 1), "the door's answer")
                assert "a=inactive" in answers[0]["content"]["description"]["sdp"]
                held = await owner.state(call_id)
                assert held["state"] == "connected" and held["remoteOnHold"]

                await owner.call("hold", call_id, False)
                await owner.wait_for(lambda: _negotiate_answers(owner, rig, call_id, 2), "the door's second answer")
                before = await owner.stats(call_id)
                resumed_at = asyncio.get_running_loop().time()

                async def video_back():
                    now = await owner.stats(call_id)
                    return now if now["video"]["framesDecoded"] >= before["video"]["framesDecoded"] + 10 else None
                after = await owner.wait_for(video_back, "video to come back after resume", timeout=10, interval=0.05)
                measured["resume_to_10_frames_ms"] = round((asyncio.get_running_loop().time() - resumed_at) * 1000)
                measured["keyframes_plis"] = (f"{after['video']['keyFramesDecoded'] - before['video']['keyFramesDecoded']}"
                                              f"/{after['video']['pliCount'] - before['video']['pliCount']}")
                await asyncio.sleep(1.0)
                later = await owner.stats(call_id)
                assert later["audio"]["totalAudioEnergy"] > before["audio"]["totalAudioEnergy"]
                assert later["video"]["framesDecoded"] > after["video"]["framesDecoded"] + 10
                await door_hears(door)
                assert door.core.state.value == "connected" and not (await owner.state(call_id))["remoteOnHold"]

                await owner.hangup(call_id)
                await wait_until(lambda: door.core.state.value == "idle", "the door to end the call")
                assert door.orchestrator.last_call.outcome.value == "completed"

    asyncio.run(main())


async def _negotiate_answers(owner, rig, call_id: str, count: int) -> list[dict] | None:
    answers = [e for e in await owner.events("m.call.negotiate", call_id=call_id)
               if e["sender"] == rig.door.user_id and e["content"]["description"]["type"] == "answer"]
    return answers if len(answers) >= count else None


def test_door_hangs_up_before_js_sdk_answers_and_js_sdk_stops_ringing(interop, homeserver, rig, tmp_path,
                                                                     measured):
    async def main():
        async with open_browser(interop, tmp_path / "browser") as browser:
            owner = await browser.client("owner")
            await owner.start(homeserver.url, rig.owner)
            async with running_door(rig) as door:
                await door.press()
                call_id = (await owner.wait_incoming())["callId"]
                hang_up_at_the_door(door)
                ended = await owner.wait_state(call_id, "ended", timeout=10)
                assert ended["hangupParty"] == "remote" and ended["hangupReason"] == "user_hangup"
                await wait_until(lambda: door.core.state.value == "idle", "the door to be idle")
                assert door.orchestrator.last_call.outcome.value == "cancelled"

    asyncio.run(main())


def test_an_ice_restart_from_js_sdk_is_answered_and_media_goes_on(interop, homeserver, rig, tmp_path, measured):
    """js-sdk restarts ICE after a network change (m.call.negotiate with new ICE credentials). The door answers
    with new credentials of its own, under the same call, and media keeps flowing. (Across a real change of
    network, in namespaces: tests/network.)"""

    async def main():
        async with open_browser(interop, tmp_path / "browser") as browser:
            owner = await browser.client("owner")
            await owner.start(homeserver.url, rig.owner)
            async with running_door(rig) as door:
                call_id = await owner.place(rig.room_id, video=True)
                await owner.wait_state(call_id, "connected")
                await owner.live_media(call_id)
                offer = (await owner.wait_event("m.call.invite", call_id=call_id))["content"]["offer"]["sdp"]
                first = (await owner.wait_event("m.call.answer", call_id=call_id))["content"]["answer"]["sdp"]

                await owner.call("restartIce", call_id)
                restart = await owner.wait_event("m.call.negotiate", call_id=call_id, timeout=10)
                answers = await owner.wait_for(lambda: _negotiate_answers(owner, rig, call_id, 1),
                                               "the door to answer the restart", timeout=15)
                await owner.live_media(call_id)
                assert (await owner.state(call_id))["state"] == "connected"
                assert door.core.state.value == "connected"
                await owner.hangup(call_id)
                await wait_until(lambda: door.core.state.value == "idle", "the door to end the call")
                return (offer, first, restart["content"]["description"]["sdp"],
                        answers[0]["content"]["description"]["sdp"])

    offer, first, restart, answer = asyncio.run(main())
    ufrag = lambda sdp: re.search(r"a=ice-ufrag:(\S+)", sdp).group(1)  # noqa: E731
    assert ufrag(restart) != ufrag(offer), "js-sdk did not restart ICE"
    assert ufrag(answer) not in (ufrag(first), ufrag(restart)), "the door's answer must carry new ICE credentials"
    measured["outcome"] = "restarted"


@pytest.mark.parametrize("door_calls", [False, True], ids=["owner-calls", "door-calls"])
def test_candidates_that_come_only_trickled_connect(interop, homeserver, rig, tmp_path, measured, door_calls):
    """js-sdk's SDP without candidates: every candidate arrives in m.call.candidates (nio sees js-sdk's
    end-of-candidates batch as a BadEvent), and the door must still connect."""

    async def main():
        async with open_browser(interop, tmp_path / "browser") as browser:
            owner = await browser.client("owner")
            await owner.start(homeserver.url, rig.owner, trickle_only=True)
            async with running_door(rig) as door:
                if door_calls:
                    await door.press()
                    call_id = (await owner.wait_incoming())["callId"]
                    await owner.answer(call_id)
                    description = (await owner.wait_event("m.call.answer", call_id=call_id))["content"]["answer"]
                else:
                    call_id = await owner.place(rig.room_id, video=True)
                    description = (await owner.wait_event("m.call.invite", call_id=call_id))["content"]["offer"]
                assert "a=candidate" not in description["sdp"]
                connected = await owner.wait_state(call_id, "connected", timeout=20)
                await owner.live_media(call_id)
                await door_hears(door)
                await wait_until(lambda: door.core.state.value == "connected", "the door to be connected")
                async def all_trickled():
                    sent = [c for e in await owner.events("m.call.candidates", call_id=call_id)
                            if e["sender"] == rig.owner.user_id for c in e["content"]["candidates"]]
                    return sent if any(c["candidate"] == "" for c in sent) else None
                trickled = await owner.wait_for(all_trickled, "js-sdk's end-of-candidates")
                udp = {"{4}:{5}".format(*c["candidate"].split()) for c in trickled
                       if c["candidate"] and c["candidate"].split()[2] == "udp"}
                assert udp, trickled
                # The door's ICE agent took them (the connection itself may also come from peer-reflexive checks).
                await wait_until(lambda: udp <= door_remote_candidates(door, call_id),
                                 f"the door to hold js-sdk's trickled candidates {udp}")
                measured["trickled_candidates"] = len(trickled)
                start = page_ms(connected, "ringing" if door_calls else "invite_sent")
                measured["to_connected_ms"] = page_ms(connected, "connected") - start
                await owner.hangup(call_id)
                await wait_until(lambda: door.core.state.value == "idle", "the door to end the call")

    asyncio.run(main())


def test_owner_without_camera_answers_the_doors_video_call(interop, homeserver, rig, tmp_path, measured):
    """js-sdk answers with audio only (a laptop with no camera): it still sees the door, the door still hears it."""

    async def main():
        async with open_browser(interop, tmp_path / "browser") as browser:
            owner = await browser.client("owner")
            await owner.start(homeserver.url, rig.owner)
            async with running_door(rig) as door:
                await door.press()
                call_id = (await owner.wait_incoming())["callId"]
                await owner.answer(call_id, video=False)
                await owner.wait_state(call_id, "connected")
                stats = await owner.live_media(call_id)
                assert stats["videoOut"] is None or stats["videoOut"]["frames"] == 0
                await door_hears(door)
                await wait_until(lambda: door.core.state.value == "connected", "the door to be connected")
                measured["frames"] = stats["video"]["framesDecoded"]
                await owner.hangup(call_id)
                await wait_until(lambda: door.core.state.value == "idle", "the door to end the call")
                assert door.orchestrator.last_call.outcome.value == "completed"

    asyncio.run(main())


@pytest.mark.parametrize("second_device", ["answered-elsewhere", "rejects-first"])
def test_two_owner_devices_ring_and_one_takes_the_call(interop, homeserver, rig, tmp_path, measured,
                                                       second_device):
    """The owner has Element open twice (two devices): both ring; the first to answer gets the door and the other
    stops ringing (select_answer names the other party); a reject from one device declines on all of them."""

    async def main():
        async with open_browser(interop, tmp_path / "browser") as browser:
            desk = await browser.client("desk")
            laptop = await browser.client("laptop")
            await desk.start(homeserver.url, rig.owner)
            await laptop.start(homeserver.url, rig.owner)
            async with running_door(rig) as door:
                await door.press()
                call_id = (await desk.wait_incoming())["callId"]
                assert (await laptop.wait_incoming())["callId"] == call_id
                if second_device == "answered-elsewhere":
                    await desk.answer(call_id)
                    await desk.wait_state(call_id, "connected")
                    ended = await laptop.wait_state(call_id, "ended", timeout=10)
                    assert ended["hangupReason"] == "answered_elsewhere"
                    select = await desk.wait_event("m.call.select_answer", call_id=call_id)
                    assert select["content"]["selected_party_id"] == desk.device_id
                    await desk.live_media(call_id)
                    await door_hears(door)
                    await desk.hangup(call_id)
                    await wait_until(lambda: door.core.state.value == "idle", "the door to end the call")
                    assert door.orchestrator.last_call.outcome.value == "completed"
                else:
                    await laptop.reject(call_id)
                    ended = await desk.wait_state(call_id, "ended", timeout=10)
                    measured["other_device_reason"] = ended["hangupReason"]
                    await wait_until(lambda: door.core.led.value == "declined", "the door to show declined")
                    assert door.orchestrator.last_call.outcome.value == "declined"
                assert not [c for c in await desk.calls() + await laptop.calls() if c["state"] not in ("ended",)]

    asyncio.run(main())


def test_a_second_owner_device_calling_during_a_call_is_refused_at_once(interop, homeserver, rig, tmp_path,
                                                                        measured):
    """Busy: the door is in a call with one of the owner's devices; another device's call gets m.call.reject
    (a v1 caller ignores a hangup before it has chosen an answer) and the first call goes on."""

    async def main():
        async with open_browser(interop, tmp_path / "browser") as browser:
            desk = await browser.client("desk")
            laptop = await browser.client("laptop")
            await desk.start(homeserver.url, rig.owner)
            await laptop.start(homeserver.url, rig.owner)
            async with running_door(rig) as door:
                first = await desk.place(rig.room_id, video=True)
                await desk.wait_state(first, "connected")
                await wait_until(lambda: door.core.state.value == "connected", "the door to be connected")
                second = await laptop.place(rig.room_id, video=True)
                ended = await laptop.wait_state(second, "ended", timeout=10)
                assert ended["hangupParty"] == "remote"
                reject = await laptop.wait_event("m.call.reject", call_id=second)
                assert reject["sender"] == rig.door.user_id
                measured["invite_to_ended_ms"] = ended["ended"] - page_ms(ended, "invite_sent")
                assert (await desk.state(first))["state"] == "connected"
                assert door.core.call_id == first
                await desk.live_media(first)
                await desk.hangup(first)
                await wait_until(lambda: door.core.state.value == "idle", "the door to end the call")

    asyncio.run(main())
