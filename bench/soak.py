"""Months on a door in a few minutes: many calls in a row in one door process, and what it holds afterwards.

Starts ``intercom run --simulate`` as its own process (exactly as a user would) against a local Synapse, and the
scripted owner's phone (matrix-nio + aiortc) in this process. Calls alternate: the door calls (a press; the phone
answers) and the owner calls (the door answers by itself); each carries media both ways for ``--media-seconds``
and is hung up by the phone. Every call must connect and bring video to the phone, or the run fails.

The door's own figures come from ``intercom status`` (``process``: RSS, open fds, OS threads, asyncio tasks),
read a few seconds after a call ended, when the door is idle again (the smallest of three readings a second apart:
a pooled connection to the homeserver comes and goes), with the kinds of files it has open:

- ``idle``: after start-up, before the first call; ``after_call_10`` and ``after_call_N``.
- ``growth``: after call N over after call 10, for each figure. Target below 1.05 (each grows by less than 5 %).
- ``rss_over_idle``: RSS after call N over idle RSS. Target at most 1.3.
- ``rss_every_10``: RSS after every tenth call, to see the shape of any growth.

Usage: ``python bench/soak.py [--calls 200] [--media-seconds 3]``. Prints one JSON object; exits 1 if a call
failed (the figures are printed anyway).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from intercom_dev.testbed.door import SimulatedDoor, write_config  # noqa: E402
from intercom_dev.testbed.phone import Phone  # noqa: E402
from intercom_dev.testbed.synapse import Homeserver  # noqa: E402

SETTLE_SECONDS = 3.0
SAMPLES = 3
GROWTH_TARGET = 1.05
RSS_OVER_IDLE_TARGET = 1.3
FIGURES = ("rss_mb", "open_fds", "threads", "asyncio_tasks")


async def wait_idle(door: SimulatedDoor) -> dict:
    return await asyncio.to_thread(door.wait_for, lambda s: s["call_state"] == "idle", 30.0, "the call to end")


def fd_kinds(pid: int) -> dict[str, int]:
    """What the door's open files are (socket, pipe, anon_inode:[eventfd], a path...), counted."""
    kinds: collections.Counter[str] = collections.Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            kinds[target.split(":[")[0] if ":[" in target else target] += 1
    return dict(sorted(kinds.items()))


async def settled_figures(door: SimulatedDoor) -> dict:
    """The door's figures once idle; a connection to the homeserver may be open or not at any moment (aiohttp's
    pool), so the smallest count of SAMPLES a second apart is taken for files and tasks."""
    await wait_idle(door)
    await asyncio.sleep(SETTLE_SECONDS)
    samples = []
    for _ in range(SAMPLES):
        samples.append(((await asyncio.to_thread(door.status))["process"], fd_kinds(door.process.pid)))
        await asyncio.sleep(1.0)
    figures = {name: min(sample[name] for sample, _ in samples) for name in FIGURES}
    figures["open_fd_kinds"] = min((kinds for _, kinds in samples), key=lambda k: sum(k.values()))
    return figures


async def connected(phone: Phone, door: SimulatedDoor) -> None:
    """Until the phone's connection is up, the door says connected and the door's video reached the phone."""
    await asyncio.to_thread(door.wait_for, lambda s: s["call_state"] == "connected", 30.0, "the call to connect")
    deadline = time.monotonic() + 20
    while phone.received.video_frames == 0:
        if time.monotonic() > deadline:
            raise TimeoutError("no video from the door reached the phone")
        await asyncio.sleep(0.05)


async def door_calls(phone: Phone, door: SimulatedDoor) -> None:
    seen = len(phone.events)
    await asyncio.to_thread(door.press)
    invite = await phone.wait_for("m.call.invite", start=seen, timeout=30)
    await phone.answer(invite)


async def owner_calls(phone: Phone, door: SimulatedDoor, door_user: str) -> None:
    seen = len(phone.events)
    call_id = await phone.call(door_user)
    answer = await phone.wait_for("m.call.answer", lambda c: c.get("call_id") == call_id, start=seen, timeout=30)
    await phone.accept_answer(answer)


async def soak(server: Homeserver, work: Path, calls: int, media_seconds: float) -> dict:
    door_user, owner = server.register_user("soakdoor", "pw-door"), server.register_user("soakowner", "pw-owner")
    room = server.create_dm_room(owner.access_token, door_user.user_id)
    server.join_room(door_user.access_token, room)
    config = write_config(work / "door", homeserver=server.url, user_id=door_user.user_id, password="pw-door",
                          room_id=room, owner=owner.user_id)
    door = SimulatedDoor(config, work / "door")
    await asyncio.to_thread(door.start)
    phone = Phone(server.url, owner.user_id, "pw-owner", room, store_dir=work / "phone")
    result: dict = {"calls": calls, "media_seconds": media_seconds, "failures": []}
    try:
        await phone.start()
        await asyncio.sleep(5)  # first syncs and key uploads are over
        result["idle"] = await settled_figures(door)
        every_10 = []
        started = time.monotonic()
        for n in range(1, calls + 1):
            phone.new_call_stats()
            try:
                if n % 2:
                    await door_calls(phone, door)
                else:
                    await owner_calls(phone, door, door_user.user_id)
                await connected(phone, door)
                await asyncio.sleep(media_seconds)
                await phone.hangup()
            except Exception as exc:  # recorded; the run goes on so the figures are still measured
                result["failures"].append({"call": n, "error": f"{type(exc).__name__}: {exc}"[:300]})
                await phone.close_media()
            if n == 10 or n == calls or n % 10 == 0:
                figures = await settled_figures(door)
                every_10.append(figures["rss_mb"])
                if n == 10:
                    result["after_call_10"] = figures
                if n == calls:
                    result[f"after_call_{calls}"] = figures
            else:
                await wait_idle(door)
        result["seconds"] = round(time.monotonic() - started)
        result["rss_every_10"] = every_10
    finally:
        await phone.close()
        door.stop()
    first, last, idle = result.get("after_call_10"), result.get(f"after_call_{calls}"), result["idle"]
    if first and last:
        result["growth"] = {name: {"value": round(last[name] / first[name], 3), "target": f"< {GROWTH_TARGET}"}
                            for name in FIGURES}
        result["rss_over_idle"] = {"value": round(last["rss_mb"] / idle["rss_mb"], 3),
                                   "target": f"<= {RSS_OVER_IDLE_TARGET}"}
        result["meets_targets"] = (all(g["value"] < GROWTH_TARGET for g in result["growth"].values())
                                   and result["rss_over_idle"]["value"] <= RSS_OVER_IDLE_TARGET)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--media-seconds", type=float, default=3.0)
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="intercom-soak-"))
    with Homeserver(work / "synapse") as server:
        result = {"benchmark": "soak", **asyncio.run(soak(server, work, args.calls, args.media_seconds))}
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
