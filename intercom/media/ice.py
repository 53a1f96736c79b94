"""ICE configuration: the Matrix TURN list as aiortc wants it, and host candidates restricted where asked."""

from __future__ import annotations

from collections.abc import Sequence

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aioice import mdns
from aioice.candidate import candidate_priority
from aioice.ice import StunProtocol, relayed_candidate, server_reflexive_candidate
from aiortc import RTCIceServer, RTCPeerConnection
from aiortc.rtcicetransport import parse_stun_turn_uri

from .settings import IceServer


def _uri_rank(uri: str) -> int:
    """Order in which aiortc should see URIs: it takes only the first STUN and the first usable TURN URI."""
    lowered = uri.lower()
    if lowered.startswith("stun"):
        return 0
    if lowered.startswith("turns"):
        return 3
    if "transport=tcp" in lowered:
        return 2
    return 1  # turn: over UDP, the one that works best for media


def rtc_ice_servers(servers: Sequence[IceServer]) -> list[RTCIceServer]:
    """aiortc ``RTCIceServer`` objects, UDP TURN before TCP before TLS. An empty list means no STUN/TURN at all.

    Raises ValueError for a URI aiortc cannot parse (aiortc itself would only fail later, while gathering).
    """
    result = []
    for server in servers:
        for uri in server.urls:
            try:
                parse_stun_turn_uri(uri)
            except ValueError as exc:
                raise ValueError(f"ICE server URI {uri!r}: {exc}") from exc
        urls = sorted(server.urls, key=_uri_rank)
        if urls:
            result.append(RTCIceServer(urls=urls, username=server.username, credential=server.credential))
    return result


logger = logging.getLogger(__name__)

#: How long STUN and TURN may take to give their candidates (aioice allows its own 5 s too).
GATHER_TIMEOUT = 5.0


@dataclass(frozen=True)
class TurnUri:
    """One usable ``turn:``/``turns:`` URI with its credentials, as aioice takes it."""

    host: str
    port: int
    ssl: bool
    transport: str  # "udp" or "tcp"
    username: str | None
    password: str | None

    @property
    def local_preference(self) -> int:
        """Relay over UDP first, TCP next, TLS last (as browsers rank them), among candidates of one priority."""
        return 65535 if self.transport == "udp" else 32767 if not self.ssl else 16383


def turn_uris(servers: Sequence[RTCIceServer]) -> list[TurnUri]:
    """Every TURN URI aiortc could use, in the given order (aiortc itself uses only the first)."""
    found = []
    for server in servers:
        for uri in server.urls if isinstance(server.urls, list) else [server.urls]:
            parsed = parse_stun_turn_uri(uri)
            scheme = parsed["scheme"]
            if scheme not in ("turn", "turns"):
                continue
            transport = parsed["transport"]
            if (scheme == "turn" and transport not in ("udp", "tcp")) or (scheme == "turns" and transport != "tcp"):
                continue
            entry = TurnUri(parsed["host"], parsed["port"], scheme == "turns", transport, server.username,
                            server.credential)
            if entry not in found:
                found.append(entry)
    return found


class Trickle:
    """Gathering that never holds up the offer or answer: host candidates at once, the rest trickled.

    aiortc gathers everything inside ``setLocalDescription`` (and a dead STUN or TURN server makes that wait for
    aioice's 5 s timeout), so the invite would wait for the TURN allocation. Here each ICE connection gathers its
    host candidates as usual, while the server-reflexive candidate (STUN) and one relay per TURN URI (aiortc alone
    takes only the first, so a network that blocks UDP got no relay at all) are gathered in the background. Each
    one that arrives joins the connection as aioice's own would (a relay's protocol is paired with the remote
    candidates, checked, refreshed and closed with it) and is reported as a Matrix ``m.call.candidates`` entry.

    ``report(entries, complete)`` is called only after :meth:`release` (once the offer or answer has been handed
    on), so candidates never overtake the description they belong to. While gathering runs, the peer's
    end-of-candidates is held back (:meth:`end_of_remote_candidates`): aioice would otherwise declare ICE failed
    before a relay of ours that is still on its way.
    """

    def __init__(self, servers: Sequence[RTCIceServer], report: Callable[[list[dict], bool], None]) -> None:
        self._turn = turn_uris(servers)
        self._report = report
        self._tasks: set[asyncio.Task] = set()
        self._running = 0  # connections still gathering in the background
        self._released = False
        self._buffer: list[tuple[Any, Any]] = []
        self._complete = False
        self._hold_remote_end: Callable[[], Awaitable[None]] | None = None
        self.closed = False

    @property
    def pending(self) -> bool:
        return self._running > 0

    def install(self, pc: RTCPeerConnection) -> None:
        """Wrap the gathering of each of ``pc``'s ICE connections. Call before ``setLocalDescription``."""
        for transceiver in pc.getTransceivers():
            connection = transceiver.receiver.transport.transport.iceGatherer._connection
            if getattr(connection, "_intercom_trickle", False):
                continue
            connection._intercom_trickle = True
            self._wrap(connection, transceiver)

    def _wrap(self, connection: Any, transceiver: Any) -> None:
        """``transceiver``: the first one on this connection; its mid and m-line index exist only once the local
        description is set, so they are read when a candidate is reported."""
        original = connection.get_component_candidates

        async def get_component_candidates(component, addresses, timeout=5):
            saved = connection.stun_server, connection.turn_server  # as aiortc configured them
            stun_server = connection.stun_server
            connection.stun_server = connection.turn_server = None  # host candidates only, right now
            try:
                candidates = await original(component=component, addresses=addresses, timeout=timeout)
            finally:
                connection.stun_server, connection.turn_server = saved
            jobs = []
            if stun_server is not None:
                for protocol in list(connection._protocols):
                    if protocol.local_candidate in candidates and \
                            ipaddress.ip_address(protocol.local_candidate.host).version == 4:
                        jobs.append(self._srflx(protocol, stun_server))
            jobs += [self._relay(connection, component, uri) for uri in self._turn]
            if jobs:
                self._running += 1
                task = asyncio.ensure_future(self._gather(connection, jobs, transceiver))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return candidates

        connection.get_component_candidates = get_component_candidates

    @staticmethod
    async def _srflx(protocol: Any, stun_server: tuple[str, int]) -> tuple[Any, None]:
        candidate, _ = await server_reflexive_candidate(protocol, stun_server)
        return candidate, None

    @staticmethod
    async def _relay(connection: Any, component: int, uri: TurnUri) -> tuple[Any, Any]:
        candidate, protocol = await relayed_candidate(
            component=component, hide_related_address=False, protocol_factory=lambda: StunProtocol(connection),
            turn_server=(uri.host, uri.port), turn_username=uri.username, turn_password=uri.password,
            turn_ssl=uri.ssl, turn_transport=uri.transport)
        candidate.priority = candidate_priority(component, "relay", uri.local_preference)
        return candidate, protocol

    async def _gather(self, connection: Any, jobs: list, transceiver: Any) -> None:
        tasks = [asyncio.ensure_future(job) for job in jobs]
        try:
            for next_done in asyncio.as_completed(tasks, timeout=GATHER_TIMEOUT):
                try:
                    candidate, protocol = await next_done
                except asyncio.TimeoutError:
                    raise
                except Exception as exc:
                    logger.info("a STUN or TURN server gave no candidate: %s", exc or type(exc).__name__)
                    continue
                await self._add(connection, candidate, protocol, transceiver)
        except asyncio.TimeoutError:
            logger.info("STUN/TURN gathering stopped after %.0f s", GATHER_TIMEOUT)
        finally:
            for task in tasks:
                task.cancel()
            self._running -= 1
            if not self._running:
                self._finished()

    async def _add(self, connection: Any, candidate: Any, protocol: Any, transceiver: Any) -> None:
        if self.closed or connection._closing:
            if protocol is not None:
                with contextlib.suppress(Exception):
                    await protocol.close()
            return
        connection._local_candidates.append(candidate)
        if protocol is not None:
            connection._protocols.append(protocol)
            for remote in connection._remote_candidates:  # aioice's own pairing, which now sees the new relay
                connection._pair_remote_candidate(remote)
            connection.sort_check_list()
            self._open(connection, protocol)
        self._emit([(candidate, transceiver)], False)

    def open_relays(self, pc: RTCPeerConnection) -> None:
        """Let the phone's checks in through our relays now, as browsers do, rather than on our first check.

        A TURN server forwards a peer's packets to a relay only once the relay's owner has a permission for the
        peer's address, and aioice makes one (a channel binding) only when it first sends there. Our checks go
        out paced, best pairs first, and relay pairs rank last, so the phone's checks to our relay were dropped
        until ours got round to it: most of what TURN added to the time to connect. Binding a channel to every
        remote candidate at once (with an empty ChannelData, aioice's own path) lets the phone's checks through,
        and each one triggers our check of that pair at once.
        """
        for transceiver in pc.getTransceivers():
            connection = transceiver.receiver.transport.transport.iceGatherer._connection
            for protocol in list(connection._protocols):
                self._open(connection, protocol)

    def _open(self, connection: Any, protocol: Any) -> None:
        if self.closed or connection._closing or protocol.local_candidate.type != "relay":
            return
        inner = getattr(protocol.transport, "_TurnTransport__inner_protocol", None)
        if inner is None:
            return
        for remote in connection._remote_candidates:
            if mdns.is_mdns_hostname(remote.host) or not protocol.local_candidate.can_pair_with(remote):
                continue
            addr = (getattr(remote, "_network_host", None) or remote.host, remote.port)
            if addr in inner.peer_to_channel or addr in inner.peer_connect_waiters:
                continue
            task = asyncio.ensure_future(inner.send_data(b"", addr))
            self._tasks.add(task)
            task.add_done_callback(self._opened)

    def _opened(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.debug("no TURN permission for a remote candidate: %s", task.exception())

    def _finished(self) -> None:
        self._emit([], True)
        hold, self._hold_remote_end = self._hold_remote_end, None
        if hold is not None and not self.closed:
            task = asyncio.ensure_future(hold())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _entries(found: list[tuple[Any, Any]]) -> list[dict]:
        """Matrix ``m.call.candidates`` entries; made late, since the mids exist only once the description is set."""
        return [{"candidate": "candidate:" + candidate.to_sdp(), "sdpMid": transceiver.mid,
                 "sdpMLineIndex": transceiver._get_mline_index()} for candidate, transceiver in found]

    def _emit(self, found: list[tuple[Any, Any]], complete: bool) -> None:
        if not self._released:
            self._buffer += found
            self._complete = self._complete or complete
            return
        if found or complete:
            self._report(self._entries(found), complete)

    def release(self) -> None:
        """The offer or answer has been handed on: report what was found so far, and from now on as it comes.
        Runs the report on the next loop turn, after the caller has passed the description on."""
        if self._released:
            return
        self._released = True

        def flush() -> None:
            found, complete, self._buffer = self._buffer, self._complete, []
            if not self.closed and (found or complete):
                self._report(self._entries(found), complete)

        asyncio.get_running_loop().call_soon(flush)

    def end_of_remote_candidates(self, add_end: Callable[[], Awaitable[None]]) -> bool:
        """The peer signalled end-of-candidates. True: held until our gathering ends (``add_end`` runs then)."""
        if not self.pending:
            return False
        self._hold_remote_end = add_end
        return True

    def close(self) -> None:
        self.closed = True
        for task in list(self._tasks):
            task.cancel()


def restrict_host_addresses(pc: RTCPeerConnection, addresses: Sequence[str]) -> None:
    """Gather host candidates only on ``addresses`` (e.g. loopback in tests), for this connection only.

    aioice asks ``get_host_addresses()`` for every interface (and skips 127.0.0.1). Rather than patching that
    module-wide function, the gathering method of each of this connection's ICE agents gets the fixed list.
    Call after the transceivers exist and before ``setLocalDescription`` (which gathers).
    """
    fixed = list(addresses)
    for transceiver in pc.getTransceivers():
        connection = transceiver.receiver.transport.transport.iceGatherer._connection
        if getattr(connection, "_intercom_restricted", False):
            continue
        original = connection.get_component_candidates

        async def get_component_candidates(component, addresses, timeout=5, _original=original):
            return await _original(component=component, addresses=fixed, timeout=timeout)

        connection.get_component_candidates = get_component_candidates
        connection._intercom_restricted = True
