"""The MatrixRTC stack the door will be tested against, with real components: Synapse naming our token service as its
focus, the service trading OpenID tokens for LiveKit JWTs that the real LiveKit server accepts, and MSC4140 delayed
events (a MatrixRTC membership's delayed "leave") really firing, or not."""

from __future__ import annotations

import base64
import json
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest

from intercom_dev.testbed.synapse import (
    DELAY_PARAMETER,
    DELAYED_EVENTS_PATH,
    RTC_FOCI_WELL_KNOWN_KEY,
    RTC_TRANSPORTS_PATH,
    MatrixAPIError,
)

from ..support import User
from .test_livekit_server import validate

pytestmark = pytest.mark.integration

MEMBER = "org.matrix.msc3401.call.member"


def http(method: str, url: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """One request; the status, the headers and the JSON body (None when empty), also for error statuses."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=15) as reply:
            status, head, raw = reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as err:
        status, head, raw = err.code, dict(err.headers), err.read()
    return status, head, json.loads(raw) if raw else None


def sfu_get(focus, body: Any) -> tuple[int, dict[str, str], Any]:
    return http("POST", f"{focus.url}/sfu/get", json.dumps(body).encode(), {"Content-Type": "application/json"})


def openid_token(hs, user: User) -> dict[str, Any]:
    return hs.api("POST", f"/_matrix/client/v3/user/{urllib.parse.quote(user.user_id)}/openid/request_token", {},
                  user.access_token)


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_the_homeserver_names_the_focus_in_its_transports_and_well_known(rtc_stack, rtc_users):
    hs, user = rtc_stack.homeserver, rtc_users("alice")
    focus = {"type": "livekit", "livekit_service_url": rtc_stack.focus.url}

    assert hs.api("GET", RTC_TRANSPORTS_PATH, token=user.access_token) == {"rtc_transports": [focus]}
    with pytest.raises(MatrixAPIError) as refused:  # the transports are for the server's users only
        hs.api("GET", RTC_TRANSPORTS_PATH)
    assert refused.value.status == 401

    well_known = hs.api("GET", "/.well-known/matrix/client")
    assert well_known[RTC_FOCI_WELL_KNOWN_KEY] == [focus]
    assert well_known["m.homeserver"]["base_url"].rstrip("/") == hs.url

    status, _, health = http("GET", f"{rtc_stack.focus.url}/healthz")
    assert status == 200, health


def test_a_users_openid_token_buys_a_jwt_that_livekit_accepts_for_user_and_device(rtc_stack, rtc_users):
    hs, focus, livekit = rtc_stack.homeserver, rtc_stack.focus, rtc_stack.livekit
    user = rtc_users("alice")
    room_id = hs.api("POST", "/_matrix/client/v3/createRoom", {}, user.access_token)["room_id"]
    token = openid_token(hs, user)
    assert token["matrix_server_name"] == hs.server_name

    status, headers, answer = sfu_get(focus, {"room": room_id, "openid_token": token, "device_id": user.device_id})

    assert status == 200, answer
    assert answer["url"] == livekit.url
    claims = jwt_claims(answer["jwt"])
    assert claims["sub"] == f"{user.user_id}:{user.device_id}"  # js-sdk's rtcBackendIdentity of a member
    assert claims["name"] == user.user_id
    assert claims["iss"] == livekit.api_key
    assert claims["video"] == {"room": room_id, "roomJoin": True, "canPublish": True, "canSubscribe": True,
                               "canPublishData": True}
    assert 0 < claims["exp"] - time.time() <= 3600
    assert validate(livekit, answer["jwt"]) == 200  # signed with the real server's secret
    assert headers["Access-Control-Allow-Origin"] == "*"  # a browser page on another origin may read the answer
    asked = [r for r in focus.requests if r.path == "/sfu/get" and isinstance(r.body, dict)
             and r.body.get("device_id") == user.device_id]
    assert [(r.status, r.user_id) for r in asked] == [(200, user.user_id)]


def test_the_focus_answers_a_browsers_cors_preflight(rtc_stack):
    status, headers, _ = http("OPTIONS", f"{rtc_stack.focus.url}/sfu/get",
                              headers={"Origin": "http://127.0.0.1:1", "Access-Control-Request-Method": "POST",
                                       "Access-Control-Request-Headers": "content-type"})
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in headers["Access-Control-Allow-Methods"]
    assert "content-type" in headers["Access-Control-Allow-Headers"].lower()


def _expire(hs, access_token: str) -> None:
    """Make an OpenID token expired, as the hour Synapse gives it would: its validity ends in the past."""
    with sqlite3.connect(hs.data_dir / "homeserver.db", timeout=10) as db:
        changed = db.execute("UPDATE open_id_tokens SET ts_valid_until_ms = ? WHERE token = ?",
                             (int(time.time() * 1000) - 1000, access_token)).rowcount
    assert changed == 1


def test_a_forged_expired_or_foreign_token_gets_401_and_no_jwt(rtc_stack, rtc_users):
    hs, focus = rtc_stack.homeserver, rtc_stack.focus
    user = rtc_users("mallory")
    room = "!anyroom:localhost"

    def ask(openid: dict[str, Any]) -> tuple[int, Any]:
        status, _, answer = sfu_get(focus, {"room": room, "openid_token": openid, "device_id": user.device_id})
        return status, answer

    forged = {"access_token": "forged-token", "token_type": "Bearer", "matrix_server_name": hs.server_name,
              "expires_in": 3600}
    # A Matrix access token is not an OpenID token: the focus must never see, nor take, one.
    access_token = dict(forged, access_token=user.access_token)
    # A real token, claimed for a server it is not from.
    foreign = dict(openid_token(hs, user), matrix_server_name="evil.example")
    expiring = openid_token(hs, user)
    assert ask(expiring)[0] == 200  # good until now...
    _expire(hs, expiring["access_token"])

    for openid in (forged, access_token, foreign, expiring):
        status, answer = ask(openid)
        assert status == 401, (openid, answer)
        assert answer["errcode"] == "M_UNAUTHORIZED"
        assert "jwt" not in answer and "url" not in answer


@pytest.mark.parametrize("body", [b"{not json", b"", b'["a list"]', b'{"room": "!r:localhost", "device_id": "D"}',
                                  b'{"openid_token": {"access_token": "t", "matrix_server_name": "localhost"}, '
                                  b'"device_id": "D"}'],
                         ids=["not-json", "empty", "not-an-object", "no-openid-token", "no-room"])
def test_a_malformed_request_is_400(rtc_stack, body):
    status, headers, answer = http("POST", f"{rtc_stack.focus.url}/sfu/get", body,
                                   {"Content-Type": "application/json"})
    assert status == 400, answer
    assert answer["errcode"] in {"M_NOT_JSON", "M_BAD_JSON"}
    assert "jwt" not in answer
    assert headers["Access-Control-Allow-Origin"] == "*"  # a browser must see the error, not a CORS failure


# -- MSC4140 delayed events: how a MatrixRTC membership ends when its client dies ------------------------------------


def _state_path(room_id: str, state_key: str) -> str:
    return (f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id, safe='')}/state/{MEMBER}/"
            f"{urllib.parse.quote(state_key, safe='')}")


def _member_state(hs, user: User, room_id: str, state_key: str) -> dict[str, Any] | None:
    try:
        return hs.api("GET", _state_path(room_id, state_key), token=user.access_token)
    except MatrixAPIError as err:
        if err.status == 404:
            return None
        raise


def _join_with_delayed_leave(hs, user: User, delay_ms: int) -> tuple[str, str, str]:
    """As js-sdk's MembershipManager does: schedule the delayed leave first, then send the membership."""
    room_id = hs.api("POST", "/_matrix/client/v3/createRoom", {}, user.access_token)["room_id"]
    state_key = f"_{user.user_id}_{user.device_id}_m.call"
    delayed = hs.api("PUT", f"{_state_path(room_id, state_key)}?{DELAY_PARAMETER}={delay_ms}", {},
                     user.access_token)
    assert set(delayed) == {"delay_id"}  # scheduled, not sent
    hs.api("PUT", _state_path(room_id, state_key),
           {"application": "m.call", "call_id": "", "scope": "m.room", "device_id": user.device_id,
            "focus_active": {"type": "livekit", "focus_selection": "oldest_membership"}},
           user.access_token)
    return room_id, state_key, delayed["delay_id"]


def _delayed(hs, user: User, delay_id: str, action: str) -> None:
    hs.api("POST", f"{DELAYED_EVENTS_PATH}/{delay_id}", {"action": action}, user.access_token)


def _pending(hs, user: User) -> list[str]:
    return [e["delay_id"] for e in hs.api("GET", DELAYED_EVENTS_PATH, token=user.access_token)["delayed_events"]]


def _wait_for_leave(hs, user: User, room_id: str, state_key: str, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if _member_state(hs, user, room_id, state_key) == {}:
            return time.monotonic()
        time.sleep(0.1)
    raise AssertionError(f"the delayed leave did not arrive within {timeout} s")


def test_delayed_events_are_advertised_as_js_sdk_checks(rtc_stack, rtc_users):
    hs, user = rtc_stack.homeserver, rtc_users("alice")
    assert hs.api("GET", "/_matrix/client/versions")["unstable_features"].get("org.matrix.msc4140") is True
    capability = hs.api("GET", "/_matrix/client/v3/capabilities", token=user.access_token)["capabilities"]
    assert capability["org.matrix.msc4140.delayed_events"]["max_delay_ms"] == 24 * 3600 * 1000


def test_a_delayed_leave_fires_after_its_delay_when_not_restarted(rtc_stack, rtc_users):
    hs, user = rtc_stack.homeserver, rtc_users("alice")
    scheduled = time.monotonic()
    room_id, state_key, delay_id = _join_with_delayed_leave(hs, user, 2000)
    assert _member_state(hs, user, room_id, state_key)["device_id"] == user.device_id  # joined meanwhile
    assert _pending(hs, user) == [delay_id]  # our own membership did not cancel it

    fired = _wait_for_leave(hs, user, room_id, state_key, timeout=15)

    assert fired - scheduled >= 1.9
    assert _pending(hs, user) == []


def test_a_restarted_delayed_leave_waits_and_a_cancelled_one_never_fires(rtc_stack, rtc_users):
    hs = rtc_stack.homeserver
    kept, dropped = rtc_users("kept"), rtc_users("dropped")
    kept_room, kept_key, kept_id = _join_with_delayed_leave(hs, kept, 2000)
    dropped_room, dropped_key, dropped_id = _join_with_delayed_leave(hs, dropped, 2000)
    _delayed(hs, dropped, dropped_id, "cancel")
    assert _pending(hs, dropped) == []

    # Restarted every 0.5 s for 3.5 s, the leave is not sent, though its first 2 s are long past.
    started = time.monotonic()
    while time.monotonic() - started < 3.5:
        _delayed(hs, kept, kept_id, "restart")
        time.sleep(0.5)
    assert _member_state(hs, kept, kept_room, kept_key)["device_id"] == kept.device_id
    last_restart = time.monotonic()
    _delayed(hs, kept, kept_id, "restart")
    # Once the restarts stop, it is sent 2 s later.
    assert _wait_for_leave(hs, kept, kept_room, kept_key, timeout=15) - last_restart >= 1.9

    # By now the cancelled one would long have fired.
    assert time.monotonic() - started > 5
    assert _member_state(hs, dropped, dropped_room, dropped_key)["device_id"] == dropped.device_id
    with pytest.raises(MatrixAPIError) as gone:
        _delayed(hs, dropped, dropped_id, "send")
    assert gone.value.status == 404
