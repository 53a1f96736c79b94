"""The LiveKit server the MatrixRTC tests run against: built from its Go module, on 127.0.0.1, checking tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request

import pytest

from intercom_dev.testbed.livekit import LIVEKIT_VERSION

pytestmark = pytest.mark.integration


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def access_token(key: str, secret: str, room: str, identity: str) -> str:
    """A LiveKit access token (an HS256 JWT with a video grant), made with the standard library."""
    now = int(time.time())
    claims = {"iss": key, "sub": identity, "nbf": now - 10, "exp": now + 600,
              "video": {"room": room, "roomJoin": True}}
    signing = f"{_b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{_b64(signature)}"


def validate(server, token: str) -> int:
    try:
        with urllib.request.urlopen(f"{server.http_url}/rtc/validate?access_token={token}", timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as err:
        return err.code


def test_the_livekit_server_runs_on_loopback_and_takes_only_its_own_tokens(livekit):
    with urllib.request.urlopen(livekit.http_url, timeout=10) as reply:
        assert reply.status == 200
    good = access_token(livekit.api_key, livekit.api_secret, "!room:localhost", "@owner:localhost:PHONE")
    assert validate(livekit, good) == 200
    forged = access_token(livekit.api_key, "not-the-secret", "!room:localhost", "@owner:localhost:PHONE")
    assert validate(livekit, forged) == 401
    assert f'"version": "{LIVEKIT_VERSION[1:]}"' in livekit.log_tail(200)


def test_a_go_too_old_or_missing_is_a_reason_to_skip_not_a_failure(tmp_path, monkeypatch):
    from intercom_dev.testbed import livekit as lk

    monkeypatch.setattr(lk, "go_version", lambda go=None: (1, 22))
    with pytest.raises(lk.LiveKitUnavailable, match="Go 1.22 is too old"):
        lk.ensure_livekit(tmp_path)
    monkeypatch.setattr(lk, "go_version", lambda go=None: None)
    with pytest.raises(lk.LiveKitUnavailable, match="no Go toolchain"):
        lk.ensure_livekit(tmp_path)
