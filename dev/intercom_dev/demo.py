"""The demo (``bash scripts/demo``): a doorbell press becoming a call with real media, on simulated hardware.

It starts a local Synapse (installed into a cached virtualenv on first use), creates the door's account and a
household of two residents (the owner and a partner), each in a two-person room with the door, runs the door exactly
as a user would (``intercom run --simulate``: mock GPIO, ALSA file devices, the synthetic camera) and plays both
residents' phones with scripted clients (matrix-nio + aiortc). The button is pressed and rings both phones; the
owner answers, the partner's phone stops ringing, media flows both ways, the owner hangs up; then the owner's phone
calls the door and the door answers by itself. It prints a timeline in milliseconds and what flowed, and exits 0, or says what
failed and exits 1.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

import numpy as np

from intercom_dev.testbed.door import SimulatedDoor, write_config
from intercom_dev.testbed.phone import Phone
from intercom_dev.testbed.synapse import Homeserver

MEDIA_SECONDS = 4.0


class DemoFailed(Exception):
    pass


class Timeline:
    def __init__(self, out: TextIO) -> None:
        self.out, self.t0 = out, time.monotonic()

    def zero(self) -> None:
        self.t0 = time.monotonic()

    def at(self, when: float | None, what: str) -> None:
        stamp = "       -" if when is None else f"{(when - self.t0) * 1000:8.0f}"
        print(f"  {stamp} ms  {what}", file=self.out)

    def now(self, what: str) -> None:
        self.at(time.monotonic(), what)

    def say(self, text: str) -> None:
        print(text, file=self.out)


def speaker_level(path: Path) -> tuple[float, float]:
    """RMS (0..1) and dominant frequency (Hz) of what the door's speaker played."""
    samples = np.frombuffer(path.read_bytes(), dtype="<i2").astype(np.float64) / 32768.0 if path.exists() else []
    if len(samples) < 4800:
        return 0.0, 0.0
    samples = samples[-48000 * 2:]
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.sqrt(np.mean(samples ** 2))), float(np.argmax(spectrum) * 48000 / len(samples))


async def _flow(tl: Timeline, phone: Phone, door: SimulatedDoor) -> None:
    """Let media flow, then report what arrived at both ends."""
    deadline = time.monotonic() + 15
    while (phone.received.video_frames == 0 or phone.received.audio_frames == 0) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    tl.at(phone.connected_at, "media connected (ICE + DTLS)")
    tl.at(phone.received.first_audio_at, "first audio from the door at the phone")
    tl.at(phone.received.first_video_at, "first video frame from the door decoded at the phone")
    await asyncio.sleep(MEDIA_SECONDS)
    r = phone.received
    rms, freq = speaker_level(door.speaker_file)
    size = f"{r.video_size[0]}x{r.video_size[1]}" if r.video_size else "no"
    tl.say(f"             flowed: {r.video_frames} video frames ({size}) and {r.audio_frames} audio frames to the "
           f"phone (level {20 * np.log10(max(r.audio_rms, 1e-9)):.0f} dBFS); the door's speaker played the "
           f"phone's {freq:.0f} Hz tone at {20 * np.log10(max(rms, 1e-9)):.0f} dBFS")
    if r.video_frames == 0 or r.audio_frames == 0 or rms < 0.01:
        raise DemoFailed("media did not flow both ways (see the numbers above)")


async def _demo(out: TextIO, work: Path) -> None:
    tl = Timeline(out)
    tl.say("Starting a local Synapse homeserver (the first run installs it, about 30 s)...")
    server = Homeserver(work / "synapse").start()
    door = phone = partner = None
    try:
        door_user = server.register_user("door", "door-password")
        owner = server.register_user("owner", "owner-password")
        mate = server.register_user("partner", "partner-password")
        room_id = server.create_dm_room(owner.access_token, door_user.user_id)
        server.join_room(door_user.access_token, room_id)
        mate_room = server.create_dm_room(mate.access_token, door_user.user_id)
        server.join_room(door_user.access_token, mate_room)
        tl.say(f"Homeserver {server.url}: door {door_user.user_id}; residents {owner.user_id} (room {room_id}) and "
               f"{mate.user_id} (room {mate_room})")

        config = write_config(work / "door", homeserver=server.url, user_id=door_user.user_id,
                              password="door-password", residents=[
                                  {"user_id": owner.user_id, "room_id": room_id},
                                  {"user_id": mate.user_id, "room_id": mate_room}])
        tl.say("Starting the door: intercom run --simulate (mock GPIO, ALSA file devices, synthetic camera)...")
        door = SimulatedDoor(config, work / "door")
        await asyncio.to_thread(door.start)
        phone = Phone(server.url, owner.user_id, "owner-password", room_id, store_dir=work / "phone")
        partner = Phone(server.url, mate.user_id, "partner-password", mate_room, store_dir=work / "partner")
        await asyncio.gather(phone.start(), partner.start())
        tl.say("The door is online and idle; both residents' phones are listening.\n")

        tl.say("1. A visitor presses the doorbell: the door rings both residents at once")
        tl.zero()
        reply = await asyncio.to_thread(door.press)
        tl.now(f"button pressed; the door's LEDs show {reply['led']}")
        invite, other = await asyncio.gather(phone.wait_for("m.call.invite", sender=door_user.user_id),
                                             partner.wait_for("m.call.invite", sender=door_user.user_id))
        tl.now(f"the phone rings: m.call.invite {invite['call_id']} (version {invite['version']}, "
               f"lifetime {invite['lifetime']} ms)")
        tl.now(f"the partner's phone rings too: m.call.invite {other['call_id']} in the partner's room")
        await phone.answer(invite)
        tl.now("the owner answers: m.call.answer sent")
        await phone.wait_for("m.call.select_answer", lambda c: c["call_id"] == invite["call_id"])
        tl.now("the door selects the answer (m.call.select_answer)")
        await partner.wait_for("m.call.hangup", lambda c: c["call_id"] == other["call_id"])
        tl.now("the partner's phone stops ringing (m.call.hangup; a notice says who answered)")
        await _flow(tl, phone, door)
        status = await asyncio.to_thread(door.status)
        ring = status.get("ring") or {}
        tl.now(f"door status: call {status['call_state']}, LEDs {status['led']}; the ring rang "
               f"{', '.join(ring.get('rung') or [])}, answered by {ring.get('answered_by')}")
        await phone.hangup()
        tl.now("the owner hangs up (m.call.hangup)")
        status = await asyncio.to_thread(door.wait_for, lambda s: s["call_state"] == "idle", 15, "the call to end")
        tl.now(f"the door ended the call; LEDs {status['led']}; {status['last_call']['summary']}")

        tl.say("\n2. The owner calls the door from the phone")
        phone.new_call_stats()
        tl.zero()
        call_id = await phone.call(door_user.user_id)
        tl.now(f"the phone calls: m.call.invite {call_id}")
        answer = await phone.wait_for("m.call.answer", lambda c: c["call_id"] == call_id)
        tl.now("the door answers by itself (m.call.answer)")
        await phone.accept_answer(answer)
        await _flow(tl, phone, door)
        await phone.hangup()
        tl.now("the owner hangs up")
        status = await asyncio.to_thread(door.wait_for, lambda s: s["call_state"] == "idle", 15, "the call to end")
        tl.now(f"the door is idle again; {status['last_call']['summary']}")
    finally:
        for resident in (phone, partner):
            if resident is not None:
                await resident.close()
        if door is not None:
            code = await asyncio.to_thread(door.stop)
            if code not in (0, None):
                tl.say(f"the door exited with status {code}; its log:\n{door.log_tail()}")
        server.stop()


def main(out: TextIO = sys.stdout, keep: bool = False) -> int:
    # nio warns about every candidates event without sdpMid (as matrix-js-sdk and the door send): not news here.
    logging.getLogger("nio").setLevel(logging.CRITICAL)
    print("Doorbell demo: a real homeserver, the door on simulated hardware, two residents' scripted phones\n",
          file=out)
    work = Path(tempfile.mkdtemp(prefix="intercom-demo-"))
    try:
        asyncio.run(_demo(out, work))
    except (DemoFailed, TimeoutError, RuntimeError, OSError) as exc:
        print(f"\nDEMO FAILED: {exc}", file=out)
        print(f"(logs are in {work})", file=out)
        return 1
    print("\nDemo passed: a press rang both residents and became a call with two-way media for the one who answered, "
          "and the owner's call was answered.", file=out)
    if not keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


def cli(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="bash scripts/demo",
                                     description="show a doorbell press becoming a call, on simulated hardware")
    parser.add_argument("--keep", action="store_true", help="keep the logs and files of the run")
    return main(keep=parser.parse_args(argv).keep)


if __name__ == "__main__":
    sys.exit(cli())
