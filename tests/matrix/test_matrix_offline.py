"""The door boots before its homeserver can be reached: it says so, keeps trying, and can still be stopped."""

from __future__ import annotations

import asyncio
import socket

import pytest

from intercom.core import HomeserverConnectionChanged
from intercom.matrix import Credential, MatrixAdapter, MatrixError, MatrixSettings

from ..support import wait_until
from .harness import run


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_start_without_a_homeserver_reports_offline_and_stops_on_close(tmp_path):
    events: list[object] = []
    adapter = MatrixAdapter(MatrixSettings(homeserver=f"http://127.0.0.1:{unused_port()}", user_id="@door:localhost",
                                           room_id="!room:localhost", state_dir=tmp_path,
                                           credential=Credential("password", "pw"), device_name="test door"),
                            events.append)

    async def main() -> None:
        starting = asyncio.create_task(adapter.start())
        await wait_until(lambda: events, timeout=10, what="the adapter to report the homeserver")
        assert events == [HomeserverConnectionChanged(online=False)]
        await asyncio.sleep(1.0)  # it keeps trying (and says "offline" once, not per attempt)
        assert events == [HomeserverConnectionChanged(online=False)] and not starting.done()
        await adapter.close()
        with pytest.raises(MatrixError, match="closed"):
            await starting

    run(main(), timeout=30)
    assert not (tmp_path / "session.json").exists()
