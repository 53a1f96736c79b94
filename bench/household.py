"""A ring group: how much longer does a press take to ring five residents than one?

Runs the real service on simulated hardware against a local Synapse, once per household size (1, 2 and 5
residents, each in their own room with the door). Every press rings the whole household; the residents are plain
HTTP clients (no Matrix client library in the door's process to compete with it for the CPU) that read the stored
invites and decline each at once; the next press waits until the door is idle again.

- ``press_to_invite_ms.<n>.last``: press -> the last of the ``n`` invites stored on the homeserver (its
  ``origin_server_ts``, on the same clock as the press): when every resident's phone can ring. Median and max.
- ``press_to_invite_ms.<n>.first``: press -> the first invite stored.
- ``ratio_to_one``: the median ``last`` for 5 (and 2) residents over the median for 1. Target (issue 17): at most
  1.5 for 5 residents.
- ``press_to_invite_ms.<n>.homeserver_floor``: the same ``n`` rooms, a plain client sending one event of the
  invite's size to each at once: time until the last is stored. This is what the homeserver itself needs for ``n``
  events (the test Synapse: SQLite, one process, on the same two cores as the door), so its ratio
  (``homeserver_floor_ratio_to_one``) bounds what any door can reach here; ``door_share`` is the door's median
  minus it.

Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from intercom.app import Service  # noqa: E402
from intercom.service.config import load_config  # noqa: E402
from intercom_dev.testbed.door import write_config  # noqa: E402
from intercom_dev.testbed.synapse import Homeserver  # noqa: E402

from _common import report  # noqa: E402

SIZES = (1, 2, 5)
PRESSES = 12
WARM_UP = 2
TARGET = 1.5


class Rooms:
    """The residents' side over plain HTTP: read a room's latest events, send an event as a resident."""

    def __init__(self, session: aiohttp.ClientSession, server: Homeserver) -> None:
        self.session, self.server = session, server

    async def events(self, room: str, token: str) -> list[dict[str, Any]]:
        url = f"{self.server.url}/_matrix/client/v3/rooms/{quote(room, safe='')}/messages?dir=b&limit=20"
        async with self.session.get(url, headers={"Authorization": f"Bearer {token}"}) as reply:
            return (await reply.json())["chunk"]

    async def send(self, room: str, token: str, event_type: str, content: dict[str, Any]) -> str:
        url = (f"{self.server.url}/_matrix/client/v3/rooms/{quote(room, safe='')}/send/{event_type}/"
               f"b{time.monotonic_ns()}")
        async with self.session.put(url, json=content, headers={"Authorization": f"Bearer {token}"}) as reply:
            return (await reply.json())["event_id"]

    async def stored(self, room: str, token: str, event_id: str) -> int:
        url = f"{self.server.url}/_matrix/client/v3/rooms/{quote(room, safe='')}/event/{quote(event_id, safe='')}"
        async with self.session.get(url, headers={"Authorization": f"Bearer {token}"}) as reply:
            return (await reply.json())["origin_server_ts"]


async def idle(service: Service) -> None:
    while service.core.state.value != "idle" or service.orchestrator._sends:
        await asyncio.sleep(0.01)


async def ring(service: Service, rooms: Rooms, residents: list[dict[str, Any]]) -> tuple[float, float, dict]:
    """One press, declined by every resident once all invites are out; returns press -> (first, last) invite
    stored in ms, and one invite's content."""
    await idle(service)
    await asyncio.sleep(0.3)
    pressed_wall = time.time()
    await service.press()
    while len(service.core._calls) < len(residents) or any(
            c.state.value != "ringing" for c in service.core._calls.values()) or service.orchestrator._sends:
        await asyncio.sleep(0.01)
    calls = set(service.core._calls)
    stored, invite = [], {}
    for resident in residents:
        events = await rooms.events(resident["room_id"], resident["token"])
        event = next(e for e in events if e["type"] == "m.call.invite" and e["content"]["call_id"] in calls)
        stored.append(event["origin_server_ts"])
        invite = event["content"]
        await rooms.send(resident["room_id"], resident["token"], "m.call.reject",
                         {"call_id": event["content"]["call_id"], "party_id": "BENCH", "version": "1"})
    return min(stored) - pressed_wall * 1000, max(stored) - pressed_wall * 1000, invite


async def homeserver_floor(rooms: Rooms, token: str, room_ids: list[str], content: dict) -> float:
    """One invite-sized event to every room at once, by a plain HTTP client: ms until the last is stored."""
    await rooms.send(room_ids[0], token, "m.call.invite", content)  # warm
    started = time.time()
    ids = await asyncio.gather(*(rooms.send(room, token, "m.call.invite", content) for room in room_ids))
    times = [await rooms.stored(room, token, event_id) for room, event_id in zip(room_ids, ids)]
    return max(times) - started * 1000


async def household(server: Homeserver, work: Path, size: int) -> dict:
    door_user = server.register_user(f"door{size}", "pw-door")
    residents = []
    for n in range(size):
        user = server.register_user(f"r{size}x{n}", f"pw-{n}")
        room = server.create_dm_room(user.access_token, door_user.user_id)
        server.join_room(door_user.access_token, room)
        residents.append({"user_id": user.user_id, "room_id": room, "token": user.access_token})
    config = write_config(work / f"door{size}", homeserver=server.url, user_id=door_user.user_id,
                          password="pw-door", residents=[{k: r[k] for k in ("user_id", "room_id")} for r in residents])
    service = Service(load_config(config), simulate=True, control_socket=work / f"control{size}.sock")
    task = asyncio.ensure_future(service.run())
    firsts, lasts, floors = [], [], []
    try:
        await asyncio.wait_for(service.ready.wait(), 60)
        async with aiohttp.ClientSession() as session:
            rooms = Rooms(session, server)
            for n in range(PRESSES + WARM_UP):
                first, last, invite = await ring(service, rooms, residents)
                if n >= WARM_UP:
                    firsts.append(first)
                    lasts.append(last)
            await idle(service)
            # The homeserver's own floor, with an event of the invite's size (a dead call nobody answers).
            content = {**invite, "call_id": "floor", "lifetime": 1000}
            for _ in range(PRESSES):
                floors.append(await homeserver_floor(rooms, door_user.access_token,
                                                     [r["room_id"] for r in residents], content))
    finally:
        service.stop()
        await task
    floor = statistics.median(floors)
    return {"first": round(statistics.median(firsts), 1), "last": round(statistics.median(lasts), 1),
            "last_max": round(max(lasts), 1), "presses": len(lasts), "homeserver_floor": round(floor, 1),
            "door_share": round(statistics.median(lasts) - floor, 1)}


async def run(server: Homeserver, work: Path) -> dict:
    results = {}
    for size in SIZES:
        results[str(size)] = await household(server, work, size)

    def ratios(key: str) -> dict[str, float]:
        return {str(size): round(results[str(size)][key] / results["1"][key], 3) for size in SIZES if size != 1}

    door = ratios("last")
    return {
        "press_to_invite_ms": results,
        "ratio_to_one": {**door, "target_for_5": TARGET, "meets_target": door["5"] <= TARGET},
        "homeserver_floor_ratio_to_one": ratios("homeserver_floor"),
    }


def main() -> None:
    import logging

    logging.basicConfig(level=logging.CRITICAL)
    work = Path(tempfile.mkdtemp(prefix="intercom-bench-"))
    with Homeserver(work / "synapse") as server:
        report({"benchmark": "household", **asyncio.run(run(server, work))})


if __name__ == "__main__":
    main()
