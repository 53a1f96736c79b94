"""ICE configuration: the Matrix TURN list as aiortc wants it, and host candidates restricted where asked."""

from __future__ import annotations

from collections.abc import Sequence

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
