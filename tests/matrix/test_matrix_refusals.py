"""A homeserver (or a proxy in front of it) that refuses rather than fails: a 403 or 404 while it is being moved.
The door shows the fault, retries slowly instead of hammering it or giving up, and recovers by itself once the
answers are right again."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from intercom.core import FaultChanged, HomeserverConnectionChanged
from intercom.matrix import Credential, MatrixAdapter, MatrixSettings, retry

from ..support import wait_until
from .harness import run

HOP_BY_HOP = {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


class Proxy:
    """A reverse proxy on 127.0.0.1 in front of the test homeserver; ``refuse`` set to a status answers every
    request with it (as a misconfigured proxy does) instead of forwarding."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.refuse: int | None = None
        self.requests: list[str] = []
        self.url = ""

    async def __aenter__(self) -> Proxy:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=90))
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._runner.cleanup()
        await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path)
        if self.refuse is not None:
            return web.json_response({"errcode": "M_UNRECOGNIZED", "error": "Not found"}, status=self.refuse)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self._session.request(request.method, self.upstream + request.path_qs, headers=headers,
                                         data=await request.read()) as answer:
            body = await answer.read()
            return web.Response(status=answer.status, body=body, content_type=answer.content_type)


def settings(url: str, user, tmp_path) -> MatrixSettings:
    return MatrixSettings(homeserver=url, user_id=user.user_id, room_id="!x:localhost", state_dir=tmp_path / "door",
                          credential=Credential("password", user.password), device_name="test door")


def faults(events: list[Any]) -> list[str | None]:
    return [e.fault for e in events if isinstance(e, FaultChanged)]


def test_a_refusal_at_start_is_a_fault_and_is_not_hammered(homeserver, matrix_users, tmp_path):
    async def main() -> None:
        user = matrix_users("door")
        async with Proxy(homeserver.url) as proxy:
            proxy.refuse = 404
            events: list[Any] = []
            adapter = MatrixAdapter(settings(proxy.url, user, tmp_path), events.append)
            start = asyncio.ensure_future(adapter.start())
            try:
                await wait_until(lambda: faults(events), what="the fault")
                assert "404" in faults(events)[0] and "log in" in faults(events)[0]
                await asyncio.sleep(2.0)
                # One attempt, then a wait of REFUSED.first (30 s): no hammering, and no giving up.
                assert len(proxy.requests) == 1 and not start.done()
                assert retry.REFUSED.delay(1, None) >= 27 and retry.REFUSED.delay(20, None) <= 600
            finally:
                await adapter.close()
                await asyncio.gather(start, return_exceptions=True)

    run(main())


def test_a_refused_sync_shows_the_fault_and_the_door_recovers_when_the_answers_are_right(homeserver, matrix_users,
                                                                                         tmp_path, monkeypatch):
    monkeypatch.setattr(retry, "REFUSED", retry.Retry(first=0.5, longest=1.0, jitter=False))

    async def main() -> None:
        user = matrix_users("door")
        async with Proxy(homeserver.url) as proxy:
            events: list[Any] = []
            adapter = MatrixAdapter(settings(proxy.url, user, tmp_path), events.append)
            await adapter.start()
            sync = asyncio.ensure_future(adapter.run())
            try:
                await wait_until(lambda: adapter.online, what="online")
                proxy.refuse = 403
                await wait_until(lambda: faults(events), what="the fault", timeout=60)
                assert "sync" in faults(events)[0] and "403" in faults(events)[0]
                assert not adapter.online and not sync.done()
                proxy.refuse = None
                await wait_until(lambda: faults(events)[-1] is None and adapter.online, what="the door back",
                                 timeout=30)
                assert HomeserverConnectionChanged(online=True) in events[events.index(FaultChanged(
                    fault=faults(events)[0], source="matrix")):]
            finally:
                await adapter.close()
                await asyncio.gather(sync, return_exceptions=True)

    run(main())
