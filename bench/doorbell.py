"""The doorbell as a visitor and an owner feel it: press to LED, press to ring, answer to picture, idle cost.

Runs the real service on simulated hardware against a local Synapse, with the scripted owner's phone:

- ``press_to_led_ms``: from the button pin going low to the call LED pin going high (MockPin timestamps), over
  presses made while the service runs its Matrix sync and media. Target 20 ms p99; the requirement is 100 ms.
- ``press_to_invite_ms``: from the press to the invite's ``origin_server_ts`` on the homeserver (same clock).
  Target 300 ms median on loopback.
- ``picture_cost``: press -> invite with the ring picture on over the same with it off, from presses alternating
  between the two in one run (the owner declines each call at once). Target at most 1.1: the picture must never
  delay the call.
- ``answer_to_video_ms``: from the phone sending its answer to the first decoded video frame at the phone.
  Target 500 ms.
- ``press_to_picture_ms``: from the press to the ring picture's arrival at the phone. Target 1000 ms.
- ``idle``: ``intercom run --simulate`` as its own process, idle and connected: RSS and CPU. Targets 120 MB and
  1 % of a core.

Each figure comes with its target and ratio (figure / target; below 1 meets it). Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from intercom.app import Service  # noqa: E402
from intercom.service.config import load_config  # noqa: E402
from intercom_dev.testbed.door import SimulatedDoor, write_config  # noqa: E402
from intercom_dev.testbed.phone import Phone  # noqa: E402
from intercom_dev.testbed.synapse import Homeserver  # noqa: E402

PRESSES = 20
PICTURE_PRESSES = 100
IDLE_SECONDS = 20.0


def p99(values):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def figure(value, target, unit):
    return {"value": round(value, 3), "unit": unit, "target": target, "ratio_to_target": round(value / target, 3)}


async def calls(server: Homeserver, work: Path) -> dict:
    door_user, owner = server.register_user("door", "pw-door"), server.register_user("owner", "pw-owner")
    room = server.create_dm_room(owner.access_token, door_user.user_id)
    server.join_room(door_user.access_token, room)
    config = write_config(work / "door", homeserver=server.url, user_id=door_user.user_id, password="pw-door",
                          room_id=room, owner=owner.user_id)
    service = Service(load_config(config), simulate=True, control_socket=work / "control.sock")
    task = asyncio.ensure_future(service.run())
    await asyncio.wait_for(service.ready.wait(), 60)
    phone = Phone(server.url, owner.user_id, "pw-owner", room, store_dir=work / "phone")
    await phone.start()
    led, to_invite, to_video, to_picture = [], [], [], []
    button, call_led = service.pin_factory.pin(17), service.pin_factory.pin(22)
    try:
        for n in range(PRESSES):
            while service.core.state.value != "idle":
                await asyncio.sleep(0.05)
            while call_led.state:  # the "ended" blinks must be over, so the press shows as a rise
                await asyncio.sleep(0.01)
            seen = len(phone.events)
            call_led.clear_states()
            button.clear_states()
            pictures = len(phone.images)
            pressed_wall, pressed_mono = time.time(), time.monotonic()
            button.drive_low()
            await asyncio.sleep(0.15)
            button.drive_high()
            pressed_at = button.states[1].timestamp
            rise = next(s.timestamp for s in call_led.states[1:] if s.state)
            led.append((rise - pressed_at) * 1000)
            invite = await phone.wait_for("m.call.invite", start=seen)
            ts = next(t for kind, cid, t in phone.server_times if kind == "m.call.invite" and cid == invite["call_id"])
            to_invite.append(ts - pressed_wall * 1000)
            phone.new_call_stats()
            answered = time.monotonic()
            await phone.answer(invite)
            while phone.received.first_video_at is None:
                await asyncio.sleep(0.005)
            to_video.append((phone.received.first_video_at - answered) * 1000)
            await phone.hangup()
            while len(phone.images) <= pictures:
                await asyncio.sleep(0.01)
            to_picture.append((phone.images[pictures][2] - pressed_mono) * 1000)
        cost = await picture_cost(service, phone)
    finally:
        await phone.close()
        service.stop()
        await task
    return {
        "picture_cost": cost,
        "press_to_led_ms": {**figure(p99(led), 20, "ms p99"), "median": round(statistics.median(led), 1),
                            "requirement_ms": 100, "samples": len(led)},
        "press_to_invite_ms": figure(statistics.median(to_invite), 300, "ms median"),
        "answer_to_video_ms": {**figure(statistics.median(to_video), 500, "ms median"),
                               "max": round(max(to_video), 1)},
        "press_to_picture_ms": {**figure(statistics.median(to_picture), 1000, "ms median"),
                                "max": round(max(to_picture), 1)},
    }


async def picture_cost(service: Service, phone: Phone) -> dict:
    """Press -> invite stored, alternating ring pictures on and off; the owner declines each call at once."""
    times: dict[bool, list[float]] = {True: [], False: []}
    for n in range(PICTURE_PRESSES):
        pictures = service.snapshots.ring_pictures = n % 2 == 0
        while service.core.state.value != "idle":
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # the previous picture and notice are out
        seen = len(phone.events)
        pressed_wall = time.time()
        await service.press()
        invite = await phone.wait_for("m.call.invite", start=seen)
        ts = next(t for kind, cid, t in phone.server_times if kind == "m.call.invite" and cid == invite["call_id"])
        times[pictures].append(ts - pressed_wall * 1000)
        phone.call_id = invite["call_id"]
        await phone.send("m.call.reject", {})
    on, off = statistics.median(times[True]), statistics.median(times[False])
    return {**figure(on / off, 1.1, "ratio of press->invite medians, ring pictures on/off"),
            "with_picture_ms": round(on, 1), "without_picture_ms": round(off, 1), "presses": PICTURE_PRESSES}


def idle(server: Homeserver, work: Path) -> dict:
    door_user, owner = server.register_user("idledoor", "pw-door"), server.register_user("idleowner", "pw-owner")
    room = server.create_dm_room(owner.access_token, door_user.user_id)
    server.join_room(door_user.access_token, room)
    config = write_config(work / "idle", homeserver=server.url, user_id=door_user.user_id, password="pw-door",
                          room_id=room, owner=owner.user_id)
    door = SimulatedDoor(config, work / "idle")
    door.start()
    try:
        time.sleep(5)  # settle: first syncs, key upload
        pid = door.process.pid
        tick = 100  # os.sysconf("SC_CLK_TCK") on Linux

        def cpu() -> float:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / tick

        start_cpu, start = cpu(), time.monotonic()
        time.sleep(IDLE_SECONDS)
        share = (cpu() - start_cpu) / (time.monotonic() - start) * 100
        rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("VmRSS")) / 1024
    finally:
        door.stop()
    return {"idle_rss_mb": figure(rss, 120, "MB"), "idle_cpu_percent": figure(share, 1.0, "% of a core")}


def main() -> None:
    import json
    import logging

    logging.basicConfig(level=logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="intercom-bench-"))
    with Homeserver(work / "synapse") as server:
        result = {"benchmark": "doorbell", **asyncio.run(calls(server, work)), **idle(server, work)}
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
