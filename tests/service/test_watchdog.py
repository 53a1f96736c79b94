"""A hung main loop is noticed and the door's process ends, so that systemd (Restart=always) starts a fresh one."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from intercom.service.watchdog import DEFAULT_LIMIT, EXIT_HUNG, SHARE_OF_SYSTEMD, LoopWatchdog, limit_for
from intercom_dev.testbed.door import write_config


def test_a_running_loop_is_left_alone_and_a_blocked_one_is_reported_once():
    hangs: list[float] = []

    async def main() -> None:
        watchdog = LoopWatchdog(0.3, on_hang=hangs.append)
        beat = asyncio.ensure_future(watchdog.heartbeat())
        watchdog.start()
        try:
            await asyncio.sleep(1.0)  # the loop runs: no hang
            assert hangs == []
            time.sleep(1.2)  # the loop is blocked
            await asyncio.sleep(0.2)
        finally:
            beat.cancel()
            watchdog.stop()

    asyncio.run(main())
    assert len(hangs) == 1 and hangs[0] > 0.3


def test_the_limit_comes_before_systemds():
    assert limit_for(None) == DEFAULT_LIMIT
    assert limit_for(15.0) == 30.0 * SHARE_OF_SYSTEMD < 30.0  # WatchdogSec=30: pings every 15 s


# The real service, started as ``intercom run --simulate`` would (with no homeserver to reach: it keeps retrying),
# with systemd's watchdog variables; once it pinged, its loop is blocked by a call that never returns.
HANGING_DOOR = textwrap.dedent("""
    import asyncio, sys, time
    from intercom.app import Service, configure_logging
    from intercom.service.config import load_config

    async def main():
        service = Service(load_config(sys.argv[1]), simulate=True, control_socket=sys.argv[2])
        run = asyncio.ensure_future(service.run())
        await asyncio.sleep(2.0)
        print("blocking the loop", flush=True)
        time.sleep(600)  # a hung loop: nothing on it runs any more
        await run

    configure_logging()
    asyncio.run(main())
""")


def test_a_hung_door_ends_itself_saying_where_and_stops_pinging_systemd(tmp_path: Path):
    config = write_config(tmp_path / "door", homeserver="http://127.0.0.1:9", user_id="@door:localhost",
                          password="pw", room_id="!room:localhost", owner="@owner:localhost")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(0.2)
    # WatchdogSec=2.5: systemd expects a ping every 1.25 s; the door gives up after 2 s without a loop.
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"), WATCHDOG_USEC="2500000")
    env.pop("WATCHDOG_PID", None)
    script = tmp_path / "hanging_door.py"
    script.write_text(HANGING_DOOR)
    hung_line = next(n for n, line in enumerate(HANGING_DOOR.splitlines(), 1) if "time.sleep(600)" in line)
    door = subprocess.Popen([sys.executable, str(script), str(config), str(tmp_path / "control.sock")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    messages: list[tuple[float, str]] = []
    try:
        deadline = time.monotonic() + 60
        while door.poll() is None and time.monotonic() < deadline:
            try:
                messages.append((time.monotonic(), notify.recv(4096).decode()))
            except TimeoutError:
                pass
        output = door.communicate(timeout=10)[0]
    finally:
        if door.poll() is None:
            door.kill()
        notify.close()
    assert door.returncode == EXIT_HUNG, output
    assert "the main loop has not run" in output and "systemd restarts it" in output
    # Where it hung: the stack of the main thread, down to the blocking call.
    assert f'hanging_door.py", line {hung_line} in main' in output, output
    pings = [t for t, m in messages if "WATCHDOG=1" in m]
    assert pings, "the door never pinged systemd's watchdog"
    assert "blocking the loop" in output
    # No ping after the loop was blocked: systemd's own watchdog would have caught it too.
    assert max(pings) - min(pings) < 2.5
