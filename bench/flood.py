"""A ring through a hostile flood: how much later does the owner's phone ring?

Runs the real service on simulated hardware against a local Synapse, with the scripted owner's phone and a
stranger who floods the door (``intercom_dev.testbed.flood``: 200 call invites and 200 malformed call events in a
room of the stranger and the door, and 10 rooms the door is invited to, per round).

- ``press_to_invite_ms.quiet``: press -> the invite's ``origin_server_ts`` (same clock), with no flood.
- ``press_to_invite_ms.after_flood``: the same, pressed the moment a round of the flood has been sent.
- ``press_to_invite_ms.during_flood``: pressed while a round is being sent.
- ``ring_delay_ms``: after_flood minus quiet (medians). Target: at most 1000 ms (issue 15: a flood of hostile
  invites cannot delay a real ring by more than 1 s); ``ratio_to_quiet`` is after_flood over quiet.

The owner declines each ring at once. Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from intercom.app import Service  # noqa: E402
from intercom.service.config import load_config  # noqa: E402
from intercom_dev.testbed.door import write_config  # noqa: E402
from intercom_dev.testbed.flood import Flood  # noqa: E402
from intercom_dev.testbed.phone import Phone  # noqa: E402
from intercom_dev.testbed.synapse import Homeserver  # noqa: E402

QUIET_PRESSES = 10
ROUNDS = 5


async def ring(service: Service, phone: Phone) -> float:
    """One press, declined at once; returns press -> invite stored on the homeserver, in ms."""
    while service.core.state.value != "idle":
        await asyncio.sleep(0.01)
    seen = len(phone.events)
    pressed_wall = time.time()
    await service.press()
    invite = await phone.wait_for("m.call.invite", sender=service.config.matrix.user_id, start=seen, timeout=60)
    ts = next(t for kind, cid, t in phone.server_times if kind == "m.call.invite" and cid == invite["call_id"])
    phone.call_id = invite["call_id"]
    await phone.send("m.call.reject", {})
    return ts - pressed_wall * 1000


async def run(server: Homeserver, work: Path) -> dict:
    door_user, owner = server.register_user("door", "pw-door"), server.register_user("owner", "pw-owner")
    stranger = server.register_user("stranger", "pw-stranger")
    room = server.create_dm_room(owner.access_token, door_user.user_id)
    server.join_room(door_user.access_token, room)
    their_room = server.create_dm_room(stranger.access_token, door_user.user_id)
    server.join_room(door_user.access_token, their_room)
    config = write_config(work / "door", homeserver=server.url, user_id=door_user.user_id, password="pw-door",
                          room_id=room, owner=owner.user_id)
    service = Service(load_config(config), simulate=True, control_socket=work / "control.sock")
    task = asyncio.ensure_future(service.run())
    await asyncio.wait_for(service.ready.wait(), 60)
    phone = Phone(server.url, owner.user_id, "pw-owner", room, store_dir=work / "phone")
    await phone.start()
    flood = Flood(server, stranger, door_user.user_id, their_room)
    quiet, after, during, flood_seconds = [], [], [], []
    try:
        for _ in range(QUIET_PRESSES):
            quiet.append(await ring(service, phone))
            await asyncio.sleep(0.3)
        for _ in range(ROUNDS):
            sent = await asyncio.to_thread(flood.run, invites=200, malformed_events=200, room_invites=10)
            flood_seconds.append(sent.seconds)
            after.append(await ring(service, phone))
            running = threading.Thread(target=flood.run, kwargs={"invites": 200, "malformed_events": 200})
            running.start()
            await asyncio.sleep(min(sent.seconds / 2, 3.0))
            during.append(await ring(service, phone))
            await asyncio.to_thread(running.join)
    finally:
        await phone.close()
        service.stop()
        await task
    q, a, d = statistics.median(quiet), statistics.median(after), statistics.median(during)
    delay = a - q
    return {
        "press_to_invite_ms": {"quiet": round(q, 1), "after_flood": round(a, 1), "during_flood": round(d, 1),
                               "after_flood_max": round(max(after), 1), "during_flood_max": round(max(during), 1)},
        "ring_delay_ms": {"value": round(delay, 1), "unit": "ms, median after flood minus median quiet",
                          "target": 1000, "ratio_to_target": round(delay / 1000, 3),
                          "ratio_to_quiet": round(a / q, 3)},
        "flood": {"rounds": ROUNDS, "events_per_round": 400, "room_invites_per_round": 10,
                  "seconds_per_round": round(statistics.median(flood_seconds), 2)},
    }


def main() -> None:
    import json
    import logging

    logging.basicConfig(level=logging.CRITICAL)
    work = Path(tempfile.mkdtemp(prefix="intercom-bench-"))
    with Homeserver(work / "synapse") as server:
        result = {"benchmark": "flood", **asyncio.run(run(server, work))}
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
