"""A ring group: how much longer does a press take to ring five residents than one?

Runs the real service on simulated hardware against a local Synapse, once per household size (1, 2 and 5
residents, each in their own room with the door, each with a scripted phone: ``intercom_dev.testbed.phone``).
Every press rings the whole household; each phone declines at once, and the next press waits until the door is
idle again.

- ``press_to_invite_ms.<n>.last``: press -> the last of the ``n`` invites stored on the homeserver (its
  ``origin_server_ts``, on the same clock as the press): when every resident's phone can ring. Median and max.
- ``press_to_invite_ms.<n>.first``: press -> the first invite stored.
- ``ratio_to_one``: the median ``last`` for 5 (and 2) residents over the median for 1. Target (issue 17): at most
  1.5 for 5 residents.

Prints one JSON object.
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
from intercom_dev.testbed.door import write_config  # noqa: E402
from intercom_dev.testbed.phone import Phone  # noqa: E402
from intercom_dev.testbed.synapse import Homeserver  # noqa: E402

SIZES = (1, 2, 5)
PRESSES = 12
WARM_UP = 2
TARGET = 1.5


async def ring(service: Service, phones: list[Phone]) -> tuple[float, float]:
    """One press, declined by every phone at once; returns press -> (first, last) invite stored, in ms."""
    while service.core.state.value != "idle" or service.orchestrator._sends:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    seen = [len(p.events) for p in phones]
    door = service.config.matrix.user_id
    pressed_wall = time.time()
    await service.press()
    stored = []
    for phone, start in zip(phones, seen):
        invite = await phone.wait_for("m.call.invite", sender=door, start=start, timeout=60)
        stored.append(next(t for kind, cid, t in phone.server_times
                           if kind == "m.call.invite" and cid == invite["call_id"]))
        phone.call_id = invite["call_id"]
    await asyncio.gather(*(p.send("m.call.reject", {}) for p in phones))
    return min(stored) - pressed_wall * 1000, max(stored) - pressed_wall * 1000


async def household(server: Homeserver, work: Path, size: int) -> dict:
    door_user = server.register_user(f"door{size}", "pw-door")
    residents, phones = [], []
    for n in range(size):
        user = server.register_user(f"r{size}x{n}", f"pw-{n}")
        room = server.create_dm_room(user.access_token, door_user.user_id)
        server.join_room(door_user.access_token, room)
        residents.append({"user_id": user.user_id, "room_id": room})
        phones.append(Phone(server.url, user.user_id, f"pw-{n}", room, store_dir=work / f"phone{size}-{n}"))
    config = write_config(work / f"door{size}", homeserver=server.url, user_id=door_user.user_id,
                          password="pw-door", residents=residents)
    service = Service(load_config(config), simulate=True, control_socket=work / f"control{size}.sock")
    task = asyncio.ensure_future(service.run())
    try:
        await asyncio.wait_for(service.ready.wait(), 60)
        await asyncio.gather(*(p.start() for p in phones))
        firsts, lasts = [], []
        for n in range(PRESSES + WARM_UP):
            first, last = await ring(service, phones)
            if n >= WARM_UP:
                firsts.append(first)
                lasts.append(last)
    finally:
        await asyncio.gather(*(p.close() for p in phones), return_exceptions=True)
        service.stop()
        await task
    return {"first": round(statistics.median(firsts), 1), "last": round(statistics.median(lasts), 1),
            "last_max": round(max(lasts), 1), "presses": len(lasts)}


async def run(server: Homeserver, work: Path) -> dict:
    results = {}
    for size in SIZES:
        results[str(size)] = await household(server, work, size)
    one = results["1"]["last"]
    ratios = {str(size): round(results[str(size)]["last"] / one, 3) for size in SIZES if size != 1}
    return {
        "press_to_invite_ms": results,
        "ratio_to_one": {**ratios, "target_for_5": TARGET, "meets_target": ratios["5"] <= TARGET},
    }


def main() -> None:
    import json
    import logging

    logging.basicConfig(level=logging.CRITICAL)
    work = Path(tempfile.mkdtemp(prefix="intercom-bench-"))
    with Homeserver(work / "synapse") as server:
        result = {"benchmark": "household", **asyncio.run(run(server, work))}
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
