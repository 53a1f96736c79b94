"""The orchestrator's room-send queue: in order, one at a time, and bounded when the homeserver falls behind."""

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
                orchestrator._queue_send(send(n), "notice")
                await asyncio.sleep(0)  # the sender takes the first one and waits on it
        dropped = [r for r in caplog.records if "dropped a notice" in r.getMessage()]
        # One send is in flight and SEND_QUEUE wait; the rest were dropped, each logged.
        assert len(dropped) == 50 - 1
        release.set()
        await orchestrator.flush(timeout=5)
        assert done == list(range(SEND_QUEUE + 1))

    asyncio.run(main())
