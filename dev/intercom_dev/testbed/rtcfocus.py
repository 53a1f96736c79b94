"""A MatrixRTC token service (a LiveKit "focus") for the tests: it trades a Matrix OpenID token for a LiveKit JWT.

What a homeserver's ``livekit_service_url`` points to (MSC4195; element-hq's lk-jwt-service in deployments). This
is our own small implementation of its legacy endpoint, written from the MSCs and from what matrix-js-sdk and
Element Call send, not taken from lk-jwt-service. It serves, on 127.0.0.1 and a free port:

- ``POST /sfu/get`` with ``{"room": "<matrix room id>", "openid_token": {"access_token", "token_type",
  "matrix_server_name", "expires_in"}, "device_id": "DEV"}``: the OpenID token is checked with the homeserver
  (``GET {homeserver_url}/_matrix/federation/v1/openid/userinfo?access_token=...`` → ``{"sub": user_id}``) and the
  answer is ``{"url": <LiveKit ws:// URL>, "jwt": <LiveKit access token>}``. The LiveKit room is the Matrix room
  id itself, the participant identity ``"{user_id}:{device_id}"`` (what js-sdk's ``CallMembership`` expects of a
  member in the state-event form, ``rtcBackendIdentity``), the participant name the user id. A token the homeserver
  does not know, or one whose user is not of ``matrix_server_name``: 401 ``{"errcode": "M_UNAUTHORIZED"}``. A body
  that is not JSON or lacks a field: 400 (``M_NOT_JSON`` / ``M_BAD_JSON``).
- ``GET /healthz``: 200.
- ``OPTIONS`` on any path: the CORS preflight. Every answer carries ``Access-Control-Allow-Origin: *``, because
  Element Call (or a js-sdk test page) calls this from a page on another origin.

Not served: the newer MSC4195 ``get_token`` form. In matrix-js-sdk 43 it is a *homeserver* endpoint
(``POST /_matrix/client/unstable/io.element.msc4195/rtc/livekit/get_token``, Matrix-authenticated, body
``{url, room_id, slot_id, member: {id, claimed_device_id}}`` → ``{jwt}``; ``MatrixClient._unstable_getLivekitToken``),
that js-sdk itself never calls and Synapse 1.163 does not serve. Nothing in js-sdk 43 posts to a focus at all:
Element Call's own code does ``/sfu/get``.

The JWT is made with LiveKit's server SDK (``livekit-api``), signed with the LiveKit server's key and secret, valid
for an hour. Use as a context manager::

    with LiveKitServer(workdir) as lk, RtcFocus(lk) as focus:
        hs = Homeserver(..., rtc_foci=[{"type": "livekit", "livekit_service_url": focus.url}])
        focus.homeserver_url = hs.url
"""

from __future__ import annotations

import datetime
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple

from livekit import api as livekit_api

from .livekit import LiveKitServer

#: How long a LiveKit token from the focus is good for (lk-jwt-service also gives an hour).
TOKEN_TTL = datetime.timedelta(hours=1)
#: How long the focus waits for the homeserver to answer an OpenID check.
USERINFO_TIMEOUT = 10.0


class FocusRequest(NamedTuple):
    """One request the focus answered: for tests to see what a client asked and what it got."""

    method: str
    path: str
    #: The parsed JSON body, or the raw text when it was not JSON (None without a body).
    body: Any
    status: int
    #: The Matrix user the OpenID token belonged to, when it was checked and valid.
    user_id: str | None = None


class _Refused(Exception):
    def __init__(self, status: int, errcode: str, error: str) -> None:
        super().__init__(error)
        self.status, self.errcode, self.error = status, errcode, error


class RtcFocus:
    """A MatrixRTC focus for ``livekit`` on 127.0.0.1; ``url`` is the ``livekit_service_url`` to publish.

    ``homeserver_url`` (settable after construction: the homeserver's config needs ``url`` first) is where OpenID
    tokens are checked. ``requests`` lists every request answered, in order, as :class:`FocusRequest`."""

    def __init__(self, livekit: LiveKitServer, homeserver_url: str | None = None) -> None:
        self.livekit = livekit
        self.homeserver_url = homeserver_url
        self.requests: list[FocusRequest] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the focus is not running: start() it (or use it as a context manager) first")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def start(self) -> RtcFocus:
        if self._server is not None:
            return self
        focus = self

        class Handler(_Handler):
            pass

        Handler.focus = focus
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="rtc-focus", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = self._thread = None

    def __enter__(self) -> RtcFocus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._server else "stopped"
        return f"RtcFocus({where}, livekit={self.livekit.url}, homeserver={self.homeserver_url})"

    # -- what the endpoints do -------------------------------------------------------------------------------------

    def _record(self, request: FocusRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def check_openid(self, openid_token: dict[str, Any]) -> str:
        """The user id the homeserver says ``openid_token`` belongs to; :class:`_Refused` (401) when it says none."""
        if self.homeserver_url is None:
            raise _Refused(503, "M_UNKNOWN", "the focus has no homeserver to check OpenID tokens with")
        query = urllib.parse.urlencode({"access_token": openid_token["access_token"]})
        url = f"{self.homeserver_url.rstrip('/')}/_matrix/federation/v1/openid/userinfo?{query}"
        try:
            with urllib.request.urlopen(url, timeout=USERINFO_TIMEOUT) as reply:
                user_id = json.loads(reply.read()).get("sub")
        except urllib.error.HTTPError as err:
            if 400 <= err.code < 500:
                raise _Refused(401, "M_UNAUTHORIZED", f"the homeserver does not know this OpenID token "
                                                      f"(HTTP {err.code})") from None
            raise _Refused(502, "M_UNKNOWN", f"the homeserver failed to check the OpenID token (HTTP {err.code})") \
                from None
        except (OSError, ValueError) as err:
            raise _Refused(502, "M_UNKNOWN", f"could not ask the homeserver about the OpenID token: {err}") from None
        if not isinstance(user_id, str) or not user_id.startswith("@") or ":" not in user_id:
            raise _Refused(401, "M_UNAUTHORIZED", "the homeserver named no user for this OpenID token")
        server_name = openid_token.get("matrix_server_name")
        if user_id.split(":", 1)[1] != server_name:
            raise _Refused(401, "M_UNAUTHORIZED", f"{user_id} is not a user of {server_name!r}")
        return user_id

    def mint(self, room: str, user_id: str, device_id: str) -> str:
        """A LiveKit access token to join, publish to and subscribe in ``room`` as ``user_id:device_id``."""
        grants = livekit_api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True,
                                         can_publish_data=True)
        return (livekit_api.AccessToken(self.livekit.api_key, self.livekit.api_secret)
                .with_identity(f"{user_id}:{device_id}")
                .with_name(user_id)
                .with_ttl(TOKEN_TTL)
                .with_grants(grants)
                .to_jwt())

    def sfu_get(self, body: Any) -> tuple[dict[str, Any], str]:
        """``POST /sfu/get``: the ``{"url", "jwt"}`` answer and the user it is for."""
        if not isinstance(body, dict):
            raise _Refused(400, "M_BAD_JSON", "the body must be a JSON object")
        room, device_id, openid = body.get("room"), body.get("device_id"), body.get("openid_token")
        if not isinstance(room, str) or not room:
            raise _Refused(400, "M_BAD_JSON", "'room' is missing or not a string")
        if not isinstance(device_id, str) or not device_id:
            raise _Refused(400, "M_BAD_JSON", "'device_id' is missing or not a string")
        if not isinstance(openid, dict) or not isinstance(openid.get("access_token"), str) \
                or not isinstance(openid.get("matrix_server_name"), str):
            raise _Refused(400, "M_BAD_JSON", "'openid_token' needs 'access_token' and 'matrix_server_name'")
        user_id = self.check_openid(openid)
        return {"url": self.livekit.url, "jwt": self.mint(room, user_id, device_id)}, user_id


class _Handler(BaseHTTPRequestHandler):
    focus: RtcFocus
    protocol_version = "HTTP/1.1"
    #: Bodies larger than this are refused (a token request is a few hundred bytes).
    max_body = 64 * 1024

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass  # the tests read focus.requests, not stderr

    def _send(self, status: int, payload: dict[str, Any] | None) -> None:
        data = json.dumps(payload).encode() if payload is not None else b""
        self.send_response(status)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Methods", "POST, GET, OPTIONS")
        self.send_header("Access-Control-Allow-Headers", "Content-Type, Authorization")
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _path(self) -> str:
        return urllib.parse.urlsplit(self.path).path

    def do_OPTIONS(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(204)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Methods", "POST, GET, OPTIONS")
        self.send_header("Access-Control-Allow-Headers", "Content-Type, Authorization")
        self.send_header("Access-Control-Max-Age", "600")
        self.send_header("Content-Length", "0")
        self.focus._record(FocusRequest("OPTIONS", self._path(), None, 204))
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        path = self._path()
        if path == "/healthz":
            status, payload = 200, {"ok": True}
        else:
            status, payload = 404, {"errcode": "M_NOT_FOUND", "error": f"no such endpoint: GET {path}"}
        self.focus._record(FocusRequest("GET", path, None, status))
        self._send(status, payload)

    def do_POST(self) -> None:  # noqa: N802
        path = self._path()
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.max_body:
            self.close_connection = True
            self.focus._record(FocusRequest("POST", path, None, 413))
            self._send(413, {"errcode": "M_TOO_LARGE", "error": "request body too large"})
            return
        raw = self.rfile.read(length).decode(errors="replace")
        user_id = None
        try:
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw
                if path == "/sfu/get":
                    raise _Refused(400, "M_NOT_JSON", "the body is not JSON") from None
            if path != "/sfu/get":
                raise _Refused(404, "M_NOT_FOUND", f"no such endpoint: POST {path}")
            payload, user_id = self.focus.sfu_get(body)
            status = 200
        except _Refused as refused:
            status, payload = refused.status, {"errcode": refused.errcode, "error": refused.error}
        # Recorded before answering, so a test that has the answer also finds the request here.
        self.focus._record(FocusRequest("POST", path, body if raw else None, status, user_id))
        self._send(status, payload)
