"""A person's Matrix client for the demo, the tests and the benchmarks: matrix-nio with E2EE, syncing in the
background, handing every event it sees to :meth:`ScriptedClient.on_event`.

Both scripted phones build on it: the media phone of the demo and the end-to-end tests
(:class:`intercom_dev.testbed.phone.Phone`) and the signalling-only recorder of the Matrix adapter's tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from nio import AsyncClient, AsyncClientConfig, LocalProtocolError, LoginResponse

log = logging.getLogger(__name__)


class ScriptedClient:
    """Logs in with a password (a new device), keeps E2EE keys up to date, syncs until :meth:`close`."""

    #: The nio event classes :meth:`on_event` receives.
    EVENT_TYPES: tuple[type, ...] = ()

    def __init__(self, homeserver: str, user_id: str, password: str, *, store_dir: Path,
                 device_name: str = "scripted phone", sync_filter: dict[str, Any] | None = None,
                 sync_timeout_ms: int = 3000) -> None:
        self.user_id = user_id
        self._password, self._device_name = password, device_name
        self._sync_filter, self._sync_timeout_ms = sync_filter, sync_timeout_ms
        store_dir.mkdir(parents=True, exist_ok=True)
        # Retries of lost connections capped at 1 s, so the client is back quickly after a homeserver restart.
        self.client = AsyncClient(homeserver, user_id, store_path=str(store_dir),
                                  config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True,
                                                           max_timeout_retry_wait_time=1.0))
        self._sync_task: asyncio.Task | None = None

    async def start(self) -> None:
        response = await self.client.login(self._password, device_name=self._device_name)
        if not isinstance(response, LoginResponse):
            raise RuntimeError(f"{self.user_id} could not log in: {response}")
        self.client.add_event_callback(self.on_event, self.EVENT_TYPES)
        await self.client.sync(timeout=0, sync_filter=self._sync_filter, full_state=True)
        await self._keys()
        self._sync_task = asyncio.ensure_future(self._sync_forever())

    async def on_event(self, room: Any, event: Any) -> None:
        """Called for each event of :attr:`EVENT_TYPES`; subclasses record what they need."""

    async def _keys(self) -> None:
        c = self.client
        steps = [c.send_to_device_messages]
        steps += [c.keys_upload] if c.should_upload_keys else []
        steps += [c.keys_query] if c.should_query_keys else []
        steps += [lambda: c.keys_claim(c.get_users_for_key_claiming())] if c.should_claim_keys else []
        for step in steps:
            with contextlib.suppress(LocalProtocolError):  # someone else (room_send) did it meanwhile
                await step()

    async def _sync_forever(self) -> None:
        # Not nio's sync_forever: it dies with LocalProtocolError("No key query required.") when a room_send has
        # queried the keys it had scheduled a query for (a race between the two).
        while True:
            try:
                await self.client.sync(timeout=self._sync_timeout_ms, sync_filter=self._sync_filter)
                await self._keys()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the homeserver may be restarting in a test
                log.debug("%s: sync failed: %s", self.user_id, exc)
                await asyncio.sleep(0.5)

    async def close(self) -> None:
        if self._sync_task is not None:
            self._sync_task.cancel()
            await asyncio.gather(self._sync_task, return_exceptions=True)
        await self.client.close()
