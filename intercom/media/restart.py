"""ICE restart under a live call: a fresh ICE agent beneath the same DTLS session, as browsers do.

When the owner's phone changes networks (Wi-Fi to mobile), every path of the call dies; matrix-js-sdk restarts ICE
with an ``m.call.negotiate`` offer carrying new ICE credentials. aiortc 1.16 cannot follow: its ``RTCIceTransport``
starts its aioice ``Connection`` once and never again. So the door gives the call's ICE transport a new
``Connection`` (new credentials, candidates gathered afresh, checks against the phone's new candidates) while the
DTLS session, SRTP keys, tracks and the call itself go on:

- the new connection shares the old one's receive queue, so the DTLS transport's pending read gets packets from
  whichever path carries them;
- aiortc's state monitor watches the new connection at once; sending and receiving move to it only once it has
  a nominated pair (a connection without one refuses to send, which would stop aiortc's senders for good);
- the old connection is closed after that, with a queue of its own, so its close does not end the DTLS session.

If the new connection finds no path, :meth:`IceRestart.start` reports failure and the call ends as a lost
connection would. Everything here reaches into aiortc's and aioice's private attributes, pinned by the restart
tests in ``tests/media/test_engine.py`` (and ``tests/network``) against the aiortc and aioice versions installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aioice import Connection
from aiortc import RTCIceParameters

logger = logging.getLogger(__name__)


class IceRestart:
    """One restart of one ICE transport (with max-bundle, a call has one). Made by :meth:`begin`."""

    def __init__(self, transport, old: Connection, new: Connection) -> None:
        self.transport = transport
        self.old: Connection | None = old  # the connection media flows on until the new one connects
        self.new = new
        self._task: asyncio.Task | None = None

    @classmethod
    async def begin(cls, transport, prepare: Callable[[], None]) -> IceRestart:
        """Put a new connection in the transport's place for gathering and remote candidates, and gather.

        ``prepare()`` runs once the new connection is in place and before it gathers (to wrap its gathering, as
        ``Trickle`` and ``restrict_host_addresses`` do). From here on the transport's candidates, its parameters
        (the answer's new ufrag and pwd) and the remote candidates are the new connection's; media keeps flowing
        on the old connection's nominated pair meanwhile. A restart that was still checking when this one came
        must have been :meth:`abandon`-ed; its connection is closed here.
        """
        old = transport._send.__self__  # the connection media flows on
        unfinished = transport._connection if transport._connection is not old else None
        new = Connection(
            ice_controlling=old.ice_controlling, components=len(old._components),
            stun_server=old.stun_server, turn_server=old.turn_server, turn_username=old.turn_username,
            turn_password=old.turn_password, turn_ssl=old.turn_ssl, turn_transport=old.turn_transport,
            use_ipv4=old._use_ipv4, use_ipv6=old._use_ipv6, transport_policy=old._transport_policy)
        new._queue = old._queue
        # The old pair's consent checks would close the old connection (and with it the call) 30 s after its
        # path died; the restart decides its fate instead.
        if old._query_consent_task is not None:
            old._query_consent_task.cancel()
            old._query_consent_task = None
        gatherer = transport.iceGatherer
        gatherer._connection = transport._connection = new
        gatherer._remote_candidates_end = False
        # aiortc's monitor fails the transport when its connection closes, and stopping the transport waits for
        # it: from now on it watches the new connection (the one the transport closes at the end of the call).
        monitor = transport._RTCIceTransport__monitor_task
        if monitor is not None:
            monitor.cancel()
        transport._RTCIceTransport__monitor_task = asyncio.ensure_future(transport._monitor())
        if unfinished is not None:
            await _close_quietly(unfinished)
        prepare()
        await new.gather_candidates()
        return cls(transport, old, new)

    def start(self, remote: RTCIceParameters, on_done: Callable[[bool], None]) -> None:
        """Check the new paths in the background; ``on_done(True)`` once media has moved to one, else False."""
        self.new.remote_username = remote.usernameFragment
        self.new.remote_password = remote.password
        self.new.remote_is_lite = remote.iceLite
        self._task = asyncio.ensure_future(self._connect(on_done))

    async def _connect(self, on_done: Callable[[bool], None]) -> None:
        try:
            await self.new.connect()
        except ConnectionError as exc:
            # The call ends as a lost connection does; closing the transport then closes the new connection,
            # whose close (on the shared queue) ends the DTLS session's pending read.
            logger.info("ICE restart found no path: %s", exc)
            on_done(False)
            return
        transport = self.transport
        if self.new._closed or transport.state == "closed":
            return  # the call ended meanwhile
        transport._recv = self.new.recv
        transport._send = self.new.send
        await self._close_old()
        logger.info("ICE restart connected: %s", self.new._nominated.get(1))
        on_done(True)

    async def _close_old(self) -> None:
        if self.old is not None:
            await _close_quietly(self.old)
            self.old = None

    def abandon(self) -> None:
        """Stop checking: a newer restart replaces this one (its :meth:`begin` closes what is left), or the call
        ends (call it before closing the peer connection, then :meth:`close`)."""
        if self._task is not None:
            self._task.cancel()

    async def close(self) -> None:
        """After the peer connection is closed: close the old connection if still open."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close_old()


async def _close_quietly(connection: Connection) -> None:
    """Close a connection that no longer carries the call, with a queue of its own: its close must not wake the
    DTLS session's pending read on the shared one."""
    connection._queue = asyncio.Queue()
    try:
        await connection.close()
    except Exception:
        logger.exception("closing a replaced ICE connection failed")
