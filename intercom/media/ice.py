"""ICE configuration: the Matrix TURN list as aiortc wants it, and host candidates restricted where asked."""

from __future__ import annotations

from collections.abc import Sequence

import asyncio
import logging
from dataclasses import dataclass

from aioice.candidate import candidate_priority
from aioice.ice import StunProtocol, relayed_candidate
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

#: How long a relay of the extra TURN URIs may take to allocate (aioice allows its own TURN server 5 s too).
RELAY_TIMEOUT = 5.0


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


def add_turn_relays(pc: RTCPeerConnection, servers: Sequence[RTCIceServer]) -> None:
    """Gather a relay candidate from *every* TURN URI, not only the first (aiortc's limit).

    A homeserver lists TURN over UDP, TCP and TLS so that a phone or a door on a network that blocks UDP (hotel,
    office, some carriers) still gets a relay. aiortc hands aioice only the first URI; without this, a blocked UDP
    means no relay at all. Each extra relay is a protocol of the connection like aioice's own, so it is paired,
    checked, refreshed and closed with it. Call after the transceivers exist and before ``setLocalDescription``.
    """
    extra = turn_uris(servers)[1:]
    if not extra:
        return
    for transceiver in pc.getTransceivers():
        connection = transceiver.receiver.transport.transport.iceGatherer._connection
        if getattr(connection, "_intercom_relays", False):
            continue
        original = connection.get_component_candidates

        async def get_component_candidates(component, addresses, timeout=5, _original=original,
                                           _connection=connection):
            async def relay(uri: TurnUri):
                candidate, protocol = await relayed_candidate(
                    component=component, hide_related_address=False,
                    protocol_factory=lambda: StunProtocol(_connection), turn_server=(uri.host, uri.port),
                    turn_username=uri.username, turn_password=uri.password, turn_ssl=uri.ssl,
                    turn_transport=uri.transport)
                candidate.priority = candidate_priority(component, "relay", uri.local_preference)
                return candidate, protocol

            tasks = [asyncio.ensure_future(relay(uri)) for uri in extra]
            candidates = await _original(component=component, addresses=addresses, timeout=timeout)
            done, pending = await asyncio.wait(tasks, timeout=RELAY_TIMEOUT) if tasks else (set(), set())
            for task in pending:
                task.cancel()
            for uri, task in zip(extra, tasks):
                if task in done and task.exception() is None:
                    candidate, protocol = task.result()
                    candidates.append(candidate)
                    _connection._protocols.append(protocol)
                elif task in done:
                    logger.info("no relay from TURN %s:%d (%s%s): %s", uri.host, uri.port, uri.transport,
                                ", TLS" if uri.ssl else "", task.exception())
            return candidates

        connection.get_component_candidates = get_component_candidates
        connection._intercom_relays = True


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
