"""Calls through TURN next to the same calls on loopback, in one run: what the owner away from home waits for.

The door runs as ``intercom run --simulate``; the owner's phone is matrix-js-sdk (Element's call code) in headless
Chromium, the interop harness. Two set-ups, one after the other:

- ``loopback``: Synapse, door and phone on this machine, ICE on 127.0.0.1, no TURN.
- ``turn``: the network tests' topology (``tests/network``): the door on a home network and the phone on a carrier
  network, each behind a symmetric NAT, Synapse (TLS) and coturn on the "internet" host. Media can only go through
  the TURN relay.

Figures (medians over ``ROUNDS`` calls each):
- ``press_to_connected_ms``: from the press to the door's call state ``connected`` (media up; ``intercom status``
  polled every 10 ms); the phone answers as soon as it rings (polled every 20 ms), alike in both set-ups.
- ``invite_to_connected_ms``: the owner calls the door: from js-sdk's ``placeCall`` to the door's ``connected``.

``turn_adds_ms`` is TURN minus loopback; the target is that TURN adds at most 150 ms to press -> connected.
Needs root (network namespaces). Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _common import report  # noqa: E402
from intercom_dev.testbed.door import SimulatedDoor, write_config  # noqa: E402
from intercom_dev.testbed.synapse import Homeserver, ensure_synapse  # noqa: E402
from tests.interop.conftest import DEBIAN_CHROMIUM, SETUP, serve_pages  # noqa: E402
from tests.interop.harness import Installation, open_browser  # noqa: E402
from tests.network.conftest import (TURN_SECRET, DoorRig, Network, homeserver_on_the_internet,  # noqa: E402
                                    new_user, phone_browser)
from tests.network.servers import Coturn, make_certificates  # noqa: E402
from tests.network.topology import CARRIER_LAN, HOME_LAN, SERVER, Topology, missing_tools  # noqa: E402

ROUNDS = 5
TARGET_ADDED_MS = 150.0
POLL = 0.02


def wait_connected(door: SimulatedDoor, timeout: float = 30.0) -> float:
    """Poll the door's status until its call is connected (media up on the door's side); return that moment (ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if door.status()["call_state"] == "connected":
            return time.monotonic() * 1000
        time.sleep(POLL / 2)
    raise TimeoutError(f"the door did not connect within {timeout} s\n{door.log_tail()}")


async def measure(door: SimulatedDoor, owner, room_id: str) -> dict[str, list[float]]:
    """"Connected" is the door's connected state: js-sdk can report ICE connected before its answer has even
    been sent (the door answers ICE checks early), so the page's own state would flatter the figure."""
    press, invite = [], []
    for _ in range(ROUNDS):
        pressed = time.monotonic() * 1000
        await asyncio.to_thread(door.press)
        while True:
            ringing = next((c for c in await owner.calls() if c["direction"] == "inbound"
                            and c["state"] == "ringing" and c["ended"] is None), None)
            if ringing:
                break
            await asyncio.sleep(POLL)
        await owner.answer(ringing["callId"])
        press.append(await asyncio.to_thread(wait_connected, door) - pressed)
        await owner.wait_state(ringing["callId"], "connected", timeout=30)
        await owner.hangup(ringing["callId"])
        await asyncio.to_thread(door.wait_for, lambda s: s["call_state"] == "idle", 30, "idle")
        await asyncio.sleep(1.0)  # the door shows "ended"; let it settle before the next call

        placed = time.monotonic() * 1000
        call_id = await owner.place(room_id)
        invite.append(await asyncio.to_thread(wait_connected, door) - placed)
        await owner.wait_state(call_id, "connected", timeout=30)
        await owner.hangup(call_id)
        await asyncio.to_thread(door.wait_for, lambda s: s["call_state"] == "idle", 30, "idle")
        await asyncio.sleep(1.0)
    return {"press_to_connected_ms": press, "invite_to_connected_ms": invite}


async def run_calls(installation: Installation, door: SimulatedDoor, hs_url: str, owner_user, room_id: str,
                    workdir: Path, loopback: bool) -> dict[str, list[float]]:
    async with open_browser(installation, workdir) as browser:
        owner = await browser.client("owner")
        await owner.start(hs_url, owner_user, loopback=loopback)
        return await measure(door, owner, room_id)


def loopback_run(work: Path, python: Path, chromium: str) -> dict[str, list[float]]:
    with Homeserver(work / "synapse-loopback", synapse_python=python) as hs, serve_pages("127.0.0.1") as origin:
        door_user, owner = new_user(hs, "door"), new_user(hs, "owner")
        room = hs.create_dm_room(owner.access_token, door_user.user_id)
        hs.join_room(door_user.access_token, room)
        config = write_config(work / "door-loopback", homeserver=hs.url, user_id=door_user.user_id,
                              password=door_user.password, room_id=room, owner=owner.user_id)
        door = SimulatedDoor(config, work / "door-loopback")
        door.start()
        try:
            installation = Installation(chromium=chromium, page_url=f"{origin}/index.html")
            return asyncio.run(run_calls(installation, door, hs.url, owner, room, work / "browser-loopback", True))
        finally:
            door.stop()


def turn_run(work: Path, python: Path) -> dict[str, list[float]]:
    with Topology() as topology:
        network = Network(topology, topology.host("door", "home", HOME_LAN, 2),
                          topology.host("phone", "carrier", CARRIER_LAN, 2), None,
                          make_certificates(work / "tls", SERVER), work)
        coturn = Coturn(work / "coturn", SERVER, TURN_SECRET, network.certificates).start()
        try:
            with homeserver_on_the_internet(network, python, "synapse-turn", coturn.uris()) as hs, \
                    serve_pages(SERVER) as origin:
                rig = DoorRig(hs, network, work / "door-turn")
                door = rig.start()
                try:
                    installation = phone_browser(network, origin, network.phone_away, work / "chromium")
                    return asyncio.run(run_calls(installation, door, hs.url, rig.owner, rig.room_id,
                                                 work / "browser-turn", False))
                finally:
                    door.stop()
        finally:
            coturn.stop()


def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1),
            "max": round(max(values), 1), "samples": [round(v, 1) for v in values]}


def main() -> int:
    why = missing_tools() or (None if shutil.which("turnserver") else "coturn is not installed (Debian: coturn)")
    if why:
        report({"skipped": f"needs root, iproute2, iptables and coturn: {why}"})
        return 2
    setup = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True,
                           env=dict(os.environ, INTERCOM_TEST_PYTHON=sys.executable))
    if setup.returncode != 0:
        report({"error": f"tests/interop/setup failed: {setup.stderr[-2000:]}"})
        return 1
    chromium = DEBIAN_CHROMIUM if Path(DEBIAN_CHROMIUM).exists() else shutil.which("chromium")
    python = ensure_synapse()
    work = Path(tempfile.mkdtemp(prefix="intercom-bench-turn-"))
    loopback = loopback_run(work, python, chromium)
    turn = turn_run(work, python)
    result = {"rounds": ROUNDS}
    for name in ("press_to_connected_ms", "invite_to_connected_ms"):
        lo, tu = summary(loopback[name]), summary(turn[name])
        result[name] = {"loopback": lo, "turn": tu, "turn_adds_ms": round(tu["median"] - lo["median"], 1),
                        "ratio_turn_to_loopback": round(tu["median"] / lo["median"], 2)}
    added = result["press_to_connected_ms"]["turn_adds_ms"]
    result["target"] = {"turn_adds_at_most_ms": TARGET_ADDED_MS, "press_to_connected_adds_ms": added,
                        "ratio_to_target": round(added / TARGET_ADDED_MS, 2), "met": added <= TARGET_ADDED_MS}
    report(result)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
