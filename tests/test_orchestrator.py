"""The orchestrator's room-send queues: in order and one at a time per room, rooms side by side, and bounded when
the homeserver falls behind."""

from __future__ import annotations

import asyncio
import logging

from intercom.orchestrator import SEND_QUEUE, Orchestrator

from .core.helpers import make_core


def test_room_sends_wait_in_order_and_beyond_the_bound_are_dropped_loudly(caplog):
    async def main():
        orchestrator = Orchestrator(make_core())
        release = asyncio.Event()
        done: list[int] = []

        def send(n: int):
            async def run():
                await release.wait()  # the homeserver is stuck
                done.append(n)
            return run

        with caplog.at_level(logging.ERROR, logger="intercom.orchestrator"):
            for n in range(SEND_QUEUE + 50):
                orchestrator._queue_send("!room:example.org", send(n), "notice")
                await asyncio.sleep(0)  # the sender takes the first one and waits on it
        dropped = [r for r in caplog.records if "dropped a notice" in r.getMessage()]
        # One send is in flight and SEND_QUEUE wait; the rest were dropped, each logged.
        assert len(dropped) == 50 - 1
        release.set()
        await orchestrator.flush(timeout=5)
        assert done == list(range(SEND_QUEUE + 1))

    asyncio.run(main())


def test_one_rooms_stuck_send_never_holds_up_another_room():
    async def main():
        orchestrator = Orchestrator(make_core())
        stuck = asyncio.Event()
        done: list[str] = []

        def send(what: str, wait: bool = False):
            async def run():
                if wait:
                    await stuck.wait()
                done.append(what)
            return run

        orchestrator._queue_send("!alice:example.org", send("alice invite", wait=True), "m.call.invite")
        orchestrator._queue_send("!alice:example.org", send("alice picture"), "picture")
        orchestrator._queue_send("!bob:example.org", send("bob invite"), "m.call.invite")
        orchestrator._queue_send("!bob:example.org", send("bob picture"), "picture")
        for _ in range(5):
            await asyncio.sleep(0)
        assert done == ["bob invite", "bob picture"]  # Alice's room waits, in order; Bob's went out
        stuck.set()
        await orchestrator.flush(timeout=5)
        assert done == ["bob invite", "bob picture", "alice invite", "alice picture"]
        assert orchestrator._sends == {}  # idle rooms leave no task or queue behind

    asyncio.run(main())
