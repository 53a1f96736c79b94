"""The door on MatrixRTC (Element Call over LiveKit) next to legacy ``m.call.*`` calls, in one run.

Everything is real and started here: a LiveKit server (built from its Go module, ``intercom_dev.testbed.livekit``),
our token service in front of it (``intercom_dev.testbed.rtcfocus``), a Synapse naming that service as its
MatrixRTC focus, and two doors (``intercom.app.Service`` on simulated hardware, in this process), each with its own
owner in a DM made as Element makes it (``trusted_private_chat``): one door rings its owner by legacy calls
(``calls = "legacy"``), the other by MatrixRTC (``calls = "matrixrtc"``). The owners are matrix-js-sdk in headless
Chromium (the interop harness, ``tests/interop``): js-sdk's ``MatrixCall`` as Element Web answers a legacy call,
js-sdk's MatrixRTC session plus livekit-client as Element Call joins one.

Rounds alternate legacy / MatrixRTC (``ROUNDS`` measured of each, after ``WARM_UP`` unmeasured ones), so drift of
the machine hits both alike. Figures (medians, with min, max and the samples):

- ``press_to_ring_seen_ms``: from ``await service.press()`` to the owner's page seeing the ring. MatrixRTC: the
  ring notification's ``wall`` (the page's ``Date.now()`` when js-sdk delivered it). Legacy: the page's
  ``created`` time of js-sdk's incoming call (page clock), put on the wall clock by the page's ``now()`` read just
  before the press (offset from the reading with the shortest round trip; error under a millisecond or two).
- ``join_to_first_frame_ms``: from the owner joining / answering to the first decoded video frame of the door at
  the owner (``requestVideoFrameCallback`` on the <video> element). MatrixRTC: the page's own stamps,
  ``firstFrame.wall - joinStart.wall`` (as ``tests/matrixrtc/test_door_rtc.py``). Legacy: the harness keeps no
  first-frame time for js-sdk calls, only the frame count, so it is the test process's clock from just before
  ``answer`` to the first ``stats`` poll (every ``FRAME_POLL`` s) that counts a frame at the element.
  ``legacy_answer_to_js_sdk_connected_ms`` (page clock) shows how much of that is before js-sdk's ICE is connected
  (js-sdk connects ICE before the door has even received the answer: the door answers ICE checks early).
- ``door_cpu_cores``: CPU time of this process (``time.process_time``: every thread, LiveKit's native FFI and
  aiortc's included) over ``CALL_SECONDS`` of a connected call with media flowing, as a fraction of one core.
  Nothing is subtracted: ``idle`` is the same window with both doors idle before the first call (the bench's own
  share is in it too: two idle doors, the playwright client), and ``call_share`` is the median minus it.
- ``door_rss_mb``: this process's VmRSS (``intercom.service.process.process_figures``), peak over the same window,
  sampled every ``RSS_EVERY`` s; ``rise`` is that peak minus the RSS just before the press. Both doors live in this
  process, and memory the first MatrixRTC call took (LiveKit's native library) stays for later legacy calls too,
  so ``rise`` is the fairer per-call figure.

The door does not subscribe to the owner's video on MatrixRTC (only the owner's audio) while a legacy call carries
what js-sdk answers with (camera and microphone): each is what the owner's app really does.

No target is named for this comparison (``"target": null``): the figures and the ratios MatrixRTC / legacy only.
If LiveKit cannot be built here (no Go, or too old), prints one JSON object saying so and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
from intercom.service.process import process_figures  # noqa: E402
from intercom_dev.testbed.door import write_config  # noqa: E402
from intercom_dev.testbed.livekit import LiveKitServer, LiveKitUnavailable, ensure_livekit  # noqa: E402
from intercom_dev.testbed.rtcfocus import RtcFocus  # noqa: E402
from intercom_dev.testbed.synapse import Homeserver, ensure_synapse  # noqa: E402
from tests.integration.helpers import Setup, running_door  # noqa: E402
from tests.interop.conftest import DEBIAN_CHROMIUM, SETUP, SETUP_TIMEOUT, serve_pages  # noqa: E402
from tests.interop.harness import Installation, open_browser  # noqa: E402
from tests.support import register, wait_until  # noqa: E402

ROUNDS = 5
WARM_UP = 1
CALL_SECONDS = 20.0
WARM_UP_CALL_SECONDS = 3.0
RSS_EVERY = 0.5
RING_POLL = 0.01
FRAME_POLL = 0.01
SETTLE_SECONDS = 1.0


def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "samples": [round(v, 3) for v in values]}


def ratio(rtc: float, legacy: float) -> float | None:
    return round(rtc / legacy, 3) if legacy else None


def door_identity(door) -> str:
    return f"{door.matrix.user_id}:{door.matrix.device_id}"


async def page_offset_ms(page) -> float:
    """Wall clock (ms) minus the page clock (``H.now()``): the reading with the shortest round trip of five."""
    best: tuple[float, float] | None = None
    for _ in range(5):
        before = time.time() * 1000
        page_now = await page.call("now")
        after = time.time() * 1000
        if best is None or after - before < best[0]:
            best = (after - before, (before + after) / 2 - page_now)
    return best[1]


async def door_idle(door) -> None:
    await wait_until(lambda: door.core.state.value == "idle" and door.core.led.value == "idle",
                     "the door to be idle", timeout=60)


async def call_window(seconds: float) -> tuple[float, float]:
    """(CPU cores, peak RSS MB) of this process over ``seconds``; nothing else runs in it meanwhile but the doors."""
    peak = process_figures()["rss_mb"]
    cpu, start = time.process_time(), time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        await asyncio.sleep(min(RSS_EVERY, seconds - elapsed))
        peak = max(peak, process_figures()["rss_mb"])
    return (time.process_time() - cpu) / (time.monotonic() - start), peak


async def legacy_round(door, owner, room_id: str, seconds: float) -> dict:
    await door_idle(door)
    await asyncio.sleep(SETTLE_SECONDS)
    known = {c["callId"] for c in await owner.calls()}
    offset = await page_offset_ms(owner)
    rss_before = process_figures()["rss_mb"]
    pressed = time.time() * 1000
    await door.press()

    async def incoming():
        return next((c for c in await owner.calls() if c["direction"] == "inbound" and c["roomId"] == room_id
                     and c["callId"] not in known), None)
    ringing = await owner.wait_for(incoming, "the door's call", timeout=30, interval=RING_POLL)
    ring_seen = ringing["created"] + offset - pressed

    answering, answering_wall = time.monotonic(), time.time() * 1000
    await owner.answer(ringing["callId"])

    async def frame():
        stats = await owner.stats(ringing["callId"])
        return (stats.get("element") or {}).get("videoFrames", 0) >= 1
    await owner.wait_for(frame, "the door's first video frame", timeout=30, interval=FRAME_POLL)
    first_frame = (time.monotonic() - answering) * 1000
    states = (await owner.state(ringing["callId"]))["states"]
    connected = next(s["t"] for s in states if s["state"] == "connected") + offset - answering_wall
    await owner.wait_media(ringing["callId"])
    await wait_until(lambda: door.core.state.value == "connected", "the legacy door to be connected")

    cpu, rss = await call_window(seconds)
    await owner.hangup(ringing["callId"])
    await owner.wait_state(ringing["callId"], "ended")
    await door_idle(door)
    assert door.orchestrator.last_call.outcome.value == "completed", door.orchestrator.last_call
    return {"ring": ring_seen, "frame": first_frame, "cpu": cpu, "rss": rss, "rise": rss - rss_before,
            "connected": connected}


async def rtc_round(door, owner, room_id: str, seconds: float) -> dict:
    await door_idle(door)
    await asyncio.sleep(SETTLE_SECONDS)
    sender = door.matrix.user_id
    known = {r["eventId"] for r in await owner.rtc_rings(room_id)}
    rss_before = process_figures()["rss_mb"]
    pressed = time.time() * 1000
    await door.press()

    async def ring():
        return next((r for r in await owner.rtc_rings(room_id) if not r["own"] and r["sender"] == sender
                     and r["eventId"] not in known), None)
    seen = await owner.wait_for(ring, "the door's ring notification", timeout=30, interval=RING_POLL)
    assert seen["valid"] is True, seen
    ring_seen = seen["wall"] - pressed

    await owner.rtc_join(room_id)
    frames = await owner.wait_rtc_frames(3, identity=door_identity(door))
    call = await owner.rtc_call()
    first_frame = frames["participant"]["element"]["firstFrame"]["wall"] - call["times"]["joinStart"]["wall"]
    await owner.wait_rtc_audio(identity=door_identity(door))
    await wait_until(lambda: door.core.state.value == "connected", "the MatrixRTC door to be in the call")

    cpu, rss = await call_window(seconds)
    await owner.rtc_leave()
    await wait_until(lambda: door.core.state.value not in ("connected", "connecting"),
                     "the MatrixRTC door to end the call")
    await door_idle(door)
    assert door.orchestrator.last_call.outcome.value == "completed", door.orchestrator.last_call
    return {"ring": ring_seen, "frame": first_frame, "cpu": cpu, "rss": rss, "rise": rss - rss_before}


def door_setup(hs: Homeserver, work: Path, calls: str) -> Setup:
    """A door and its owner in a DM made as Element makes it; the owner rung by ``calls``."""
    rig = Setup(hs, lambda prefix: register(hs, f"{calls}-{prefix}"), work / calls, preset="trusted_private_chat")
    rig.config_path = write_config(work / calls / "door", homeserver=hs.url, user_id=rig.door.user_id,
                                   password=rig.door.password, residents=[
                                       {"user_id": rig.owner.user_id, "room_id": rig.room_id, "calls": calls}])
    return rig


async def measure(installation: Installation, hs: Homeserver, work: Path) -> dict:
    legacy_rig, rtc_rig = door_setup(hs, work, "legacy"), door_setup(hs, work, "matrixrtc")
    async with open_browser(installation, work / "browser") as browser, \
            running_door(legacy_rig) as legacy_door, running_door(rtc_rig) as rtc_door:
        legacy_owner, rtc_owner = await browser.client("legacy-owner"), await browser.client("rtc-owner")
        await legacy_owner.start(hs.url, legacy_rig.owner)
        await rtc_owner.start(hs.url, rtc_rig.owner)
        await wait_until(lambda: rtc_door.rtc_state == "available", "the door to find the homeserver's focus",
                         timeout=60)
        rung_by = {"legacy": legacy_door.core.household_status()[0]["rung_by"],
                   "matrixrtc": rtc_door.core.household_status()[0]["rung_by"]}
        assert rung_by == {"legacy": "legacy", "matrixrtc": "matrixrtc"}, rung_by

        await asyncio.sleep(5)  # settle: first syncs, key uploads, the pages' first syncs
        idle_cpu, idle_rss = await call_window(CALL_SECONDS)

        results: dict[str, list[dict]] = {"legacy": [], "matrixrtc": []}
        warm: dict[str, list[dict]] = {"legacy": [], "matrixrtc": []}
        for n in range(WARM_UP + ROUNDS):
            seconds = WARM_UP_CALL_SECONDS if n < WARM_UP else CALL_SECONDS
            into = warm if n < WARM_UP else results
            # alternate which goes first, so neither always follows the other
            order = ("legacy", "matrixrtc") if n % 2 == 0 else ("matrixrtc", "legacy")
            for kind in order:
                if kind == "legacy":
                    into[kind].append(await legacy_round(legacy_door, legacy_owner, legacy_rig.room_id, seconds))
                else:
                    into[kind].append(await rtc_round(rtc_door, rtc_owner, rtc_rig.room_id, seconds))
        chromium = browser.version

    def figure(key: str, scale: float = 1.0, digits: int = 1) -> dict:
        out = {kind: summary([r[key] * scale for r in results[kind]]) for kind in results}
        for kind in out:
            out[kind] = {k: (round(v, digits) if isinstance(v, float) else [round(x, digits) for x in v])
                         for k, v in out[kind].items()}
        out["ratio_matrixrtc_to_legacy"] = ratio(out["matrixrtc"]["median"], out["legacy"]["median"])
        return out

    ring, frame = figure("ring"), figure("frame")
    for name, fig in (("ring", ring), ("frame", frame)):
        fig["warm_up"] = {kind: [round(float(r[name]), 1) for r in warm[kind]] for kind in warm}
    connected = [r["connected"] for r in results["legacy"]]
    frame["legacy_answer_to_js_sdk_connected_ms"] = round(statistics.median(connected), 1)
    cpu = figure("cpu", digits=3)
    cpu["idle"] = round(idle_cpu, 3)
    share = {kind: round(cpu[kind]["median"] - idle_cpu, 3) for kind in ("legacy", "matrixrtc")}
    cpu["call_share"] = {**share, "ratio_matrixrtc_to_legacy": ratio(share["matrixrtc"], share["legacy"])}
    rss = figure("rss")
    rss["idle_peak"] = round(idle_rss, 1)
    rise = figure("rise")
    rss["rise"] = {kind: rise[kind]["median"] for kind in ("legacy", "matrixrtc")}
    rss["rise"]["ratio_matrixrtc_to_legacy"] = rise["ratio_matrixrtc_to_legacy"]
    rss["rise"]["samples"] = {kind: rise[kind]["samples"] for kind in ("legacy", "matrixrtc")}
    return {
        "press_to_ring_seen_ms": ring,
        "join_to_first_frame_ms": frame,
        "door_cpu_cores": cpu,
        "door_rss_mb": rss,
        "chromium": chromium,
    }


def main() -> int:
    logging.basicConfig(level=logging.CRITICAL)
    head = {"benchmark": "matrixrtc", "target": None,
            "note": "no target is named for MatrixRTC against legacy: figures and ratios MatrixRTC / legacy only"}
    try:
        livekit_binary = ensure_livekit()
    except LiveKitUnavailable as exc:
        report({**head, "skipped": f"no LiveKit server can be built here: {exc}"})
        return 0
    try:
        done = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=SETUP_TIMEOUT,
                              env=dict(os.environ, INTERCOM_TEST_PYTHON=sys.executable))
        problem = None if done.returncode == 0 else f"exit status {done.returncode}: {done.stderr[-2000:]}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    if problem is not None:
        report({**head, "error": f"tests/interop/setup failed: {problem}"})
        return 1
    chromium = next((c for c in (DEBIAN_CHROMIUM, shutil.which("chromium")) if c and Path(c).exists()), None)
    if chromium is None:
        report({**head, "error": "tests/interop/setup finished but Chromium is not installed"})
        return 1
    python = ensure_synapse()
    work = Path(tempfile.mkdtemp(prefix="intercom-bench-rtc-"))
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        livekit = stack.enter_context(LiveKitServer(work / "livekit", livekit_binary))
        focus = stack.enter_context(RtcFocus(livekit))
        hs = stack.enter_context(Homeserver(work / "synapse", synapse_python=python,
                                            rtc_foci=[{"type": "livekit", "livekit_service_url": focus.url}]))
        focus.homeserver_url = hs.url  # known only now: the homeserver's config needed the focus first
        origin = stack.enter_context(serve_pages("127.0.0.1"))
        installation = Installation(chromium=chromium, page_url=f"{origin}/index.html")
        figures = asyncio.run(measure(installation, hs, work))
    report({**head, "rounds": ROUNDS, "warm_up_rounds": WARM_UP, "call_window_s": CALL_SECONDS,
            "cores": os.cpu_count(), **figures, "duration_s": round(time.monotonic() - started)})
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
