"""TURN credentials from the homeserver (``GET /_matrix/client/v3/voip/turnServer``): parsing and caching.

:class:`TurnSource` asks (with the adapter's nio client) and keeps the answer in a :class:`TurnCache` (pure logic);
:meth:`MatrixAdapter.turn_servers <intercom.matrix.client.MatrixAdapter.turn_servers>` hands it out.

What the homeserver answers, and what it means here:

- ``200`` with ``uris``, ``username``, ``password``, ``ttl``: TURN is configured. Synapse's shared-secret mode
  issues ``username = "<expiry>:<mxid>"`` and an HMAC password valid for ``ttl`` seconds.
- ``200 {}`` (Synapse without ``turn_uris``) or no usable URI: no TURN. Asked again after a while, in case an admin
  adds it.
- ``403``: no TURN for this user. matrix-js-sdk stops asking; we ask again after an hour.
- ``429``, ``5xx``, no answer: a failure. Credentials that have not expired yet are still handed out.

The result is always an explicit list (``[]`` for none): aiortc falls back to a public Google STUN server when
given ``None``, which a door must never do silently.

aiortc uses only the first usable ``turn:``/``turns:`` URI and the first ``stun:`` URI, so the URIs are ordered
here: UDP first (fastest, what TURN is designed for), then TCP, then TLS; URIs that aiortc would reject (it raises
``ValueError`` on malformed ones, which would break the call) are dropped.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .retry import TRANSIENT_EXCEPTIONS, Failure, request_json

log = logging.getLogger(__name__)

#: Refresh this long before the credentials expire (matrix-js-sdk: 10 minutes), at most half their lifetime.
REFRESH_MARGIN = 600.0
#: After "no TURN" (``{}``), ask again after this long.
NO_TURN_RECHECK = 600.0
#: After a 403, ask again after this long.
FORBIDDEN_RECHECK = 3600.0
#: After a failed request, try again after this long.
ERROR_RETRY = 30.0

# The URI grammar aiortc accepts (aiortc.rtcicetransport): no IPv6 literals, transport only for turn/turns.
_URI = re.compile(r"(?P<scheme>stuns?|turns?):(?P<host>[^?:]+)(:(?P<port>[0-9]+))?(\?transport=(?P<transport>.*))?")


@dataclass(frozen=True, slots=True)
class TurnServer:
    """One ICE server for the media side (aiortc's ``RTCIceServer(urls, username, credential)``)."""

    urls: tuple[str, ...]
    username: str
    credential: str

    def __repr__(self) -> str:  # the credential stays out of logs
        return f"TurnServer(urls={self.urls!r}, username={self.username!r})"


class TurnStatus(enum.Enum):
    OK = "ok"  #: credentials issued
    NONE = "none"  #: the homeserver has no TURN (``{}`` or nothing usable)
    FORBIDDEN = "forbidden"  #: 403: no TURN for this user
    ERROR = "error"  #: the request failed; try again later


@dataclass(frozen=True, slots=True)
class TurnAnswer:
    """What one ``/voip/turnServer`` answer means."""

    status: TurnStatus
    servers: tuple[TurnServer, ...] = ()
    ttl: float = 0.0
    detail: str = ""


def uri_rank(uri: str) -> int | None:
    """Sort key of a URI (lower first): turn over UDP, turn over TCP, turns, stun; None if aiortc cannot use it."""
    m = _URI.fullmatch(uri)
    if m is None:
        return None
    scheme, transport = m["scheme"], m["transport"]
    if scheme == "turn":
        return {None: 0, "udp": 0, "tcp": 1}.get(transport)
    if scheme == "turns":
        return 2 if transport in (None, "tcp") else None
    return 3 if transport is None else None  # stun/stuns take no transport


def order_uris(uris: Iterable[Any]) -> tuple[str, ...]:
    """The usable URIs, UDP first, each once, otherwise in the homeserver's order."""
    seen: set[str] = set()
    ranked: list[tuple[int, int, str]] = []
    for index, uri in enumerate(uris):
        rank = uri_rank(uri) if isinstance(uri, str) else None
        if rank is None:
            log.warning("Ignoring TURN URI %r: the media stack cannot use it", uri)
            continue
        if uri not in seen:
            seen.add(uri)
            ranked.append((rank, index, uri))
    return tuple(uri for _, _, uri in sorted(ranked))


def parse_turn_response(status: int, body: Any) -> TurnAnswer:
    """Interpret one answer of ``GET /voip/turnServer`` (``body`` is the decoded JSON, or anything on failure)."""
    if status == 403:
        return TurnAnswer(TurnStatus.FORBIDDEN, detail="the homeserver offers no TURN to this user (403)")
    if status != 200:
        return TurnAnswer(TurnStatus.ERROR, detail=f"HTTP {status}")
    if not isinstance(body, dict) or not body.get("uris"):
        return TurnAnswer(TurnStatus.NONE, detail="the homeserver has no TURN server configured")
    uris, username, password, ttl = (body.get(k) for k in ("uris", "username", "password", "ttl"))
    if not isinstance(uris, list) or not isinstance(username, str) or not isinstance(password, str):
        return TurnAnswer(TurnStatus.NONE, detail="the homeserver's TURN answer is malformed")
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0:
        return TurnAnswer(TurnStatus.NONE, detail=f"the homeserver's TURN answer has an unusable ttl {ttl!r}")
    ordered = order_uris(uris)
    if not ordered:
        return TurnAnswer(TurnStatus.NONE, detail="none of the homeserver's TURN URIs is usable")
    return TurnAnswer(TurnStatus.OK, (TurnServer(ordered, username, password),), float(ttl))


class TurnCache:
    """The last credentials and when to ask again. All times are the caller's clock (seconds)."""

    def __init__(self) -> None:
        self._servers: tuple[TurnServer, ...] = ()
        self._expires_at = float("-inf")  #: the credentials stop working
        self._refresh_at = float("-inf")  #: ask the homeserver again from here on

    def fresh(self, now: float) -> bool:
        """True while the cached answer needs no refresh."""
        return now < self._refresh_at

    def servers(self, now: float) -> list[TurnServer]:
        """The cached servers whose credentials have not expired (``[]`` otherwise)."""
        return list(self._servers) if now < self._expires_at else []

    @property
    def refresh_at(self) -> float:
        return self._refresh_at

    def update(self, answer: TurnAnswer, now: float) -> list[TurnServer]:
        """Take a new answer into the cache; return the servers to use now."""
        match answer.status:
            case TurnStatus.OK:
                self._servers = answer.servers
                self._expires_at = now + answer.ttl
                self._refresh_at = self._expires_at - min(REFRESH_MARGIN, answer.ttl / 2)
            case TurnStatus.NONE | TurnStatus.FORBIDDEN:
                self._servers = ()
                self._expires_at = float("-inf")
                self._refresh_at = now + (NO_TURN_RECHECK if answer.status is TurnStatus.NONE else FORBIDDEN_RECHECK)
            case TurnStatus.ERROR:
                # Keep what we have while it lasts (servers() stops handing it out at expiry); ask again soon.
                self._refresh_at = now + ERROR_RETRY
        return self.servers(now)


class TurnSource:
    """Fetches the homeserver's TURN credentials through ``client()`` (the adapter's nio client, or None before
    login) and caches them; one request at a time, in the background when due."""

    def __init__(self, client: Callable[[], Any], *, timeout: float) -> None:
        self._client, self._timeout = client, timeout
        self._cache = TurnCache()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[list[TurnServer]] | None = None

    async def servers(self) -> list[TurnServer]:
        """The current servers, fetched first if due; never raises."""
        loop = asyncio.get_running_loop()
        if self._cache.fresh(loop.time()):
            return self._cache.servers(loop.time())
        async with self._lock:
            if not self._cache.fresh(loop.time()):
                answer = await self._fetch()
                servers = self._cache.update(answer, loop.time())
                if answer.status is TurnStatus.OK:
                    log.info("Matrix: TURN credentials for %s, valid %d s", ", ".join(answer.servers[0].urls),
                             int(answer.ttl))
                elif answer.status is TurnStatus.ERROR:
                    log.warning("Matrix: could not get TURN credentials (%s); %s", answer.detail,
                                "keeping the current ones" if servers else "calls will use no TURN server")
                else:
                    log.info("Matrix: no TURN server: %s", answer.detail)
            return self._cache.servers(loop.time())

    def refresh_if_due(self) -> None:
        """Fetch in the background when due, so that a call never waits for the credentials."""
        loop = asyncio.get_running_loop()
        if self._cache.fresh(loop.time()) or (self._task is not None and not self._task.done()):
            return
        self._task = asyncio.ensure_future(self.servers())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _fetch(self) -> TurnAnswer:
        client = self._client()
        if client is None or not client.access_token:
            return TurnAnswer(TurnStatus.ERROR, detail="not logged in")
        try:
            status, body = await request_json(client, "GET", "/_matrix/client/v3/voip/turnServer",
                                              timeout=self._timeout)
        except TRANSIENT_EXCEPTIONS as exc:
            return TurnAnswer(TurnStatus.ERROR, detail=str(Failure.of(exc)))
        return parse_turn_response(status, body)
