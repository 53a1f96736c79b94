"""TURN credentials: what each homeserver answer means, URI order, and the cache (intercom.matrix.turn)."""

from __future__ import annotations

import pytest

from intercom.matrix.turn import (
    ERROR_RETRY,
    FORBIDDEN_RECHECK,
    NO_TURN_RECHECK,
    REFRESH_MARGIN,
    TurnAnswer,
    TurnCache,
    TurnServer,
    TurnStatus,
    order_uris,
    parse_turn_response,
)

SYNAPSE = {"username": "1763953600:@door:localhost", "password": "c2VjcmV0", "ttl": 86400,
           "uris": ["turn:turn.example.org:3478?transport=tcp", "turns:turn.example.org:5349?transport=tcp",
                    "turn:turn.example.org:3478?transport=udp"]}


def test_credentials_come_with_udp_first():
    answer = parse_turn_response(200, SYNAPSE)
    assert answer.status is TurnStatus.OK and answer.ttl == 86400
    assert answer.servers == (TurnServer(("turn:turn.example.org:3478?transport=udp",
                                          "turn:turn.example.org:3478?transport=tcp",
                                          "turns:turn.example.org:5349?transport=tcp"),
                                         "1763953600:@door:localhost", "c2VjcmV0"),)


@pytest.mark.parametrize("status, body, expected", [
    (200, {}, TurnStatus.NONE),  # Synapse without turn_uris
    (200, {"uris": []}, TurnStatus.NONE),
    (200, {**SYNAPSE, "uris": ["http://nope", "turn:[::1]:3478"]}, TurnStatus.NONE),
    (200, {**SYNAPSE, "username": None}, TurnStatus.NONE),
    (200, {**SYNAPSE, "ttl": "86400"}, TurnStatus.NONE),
    (200, {**SYNAPSE, "ttl": 0}, TurnStatus.NONE),
    (200, {**SYNAPSE, "ttl": True}, TurnStatus.NONE),
    (200, None, TurnStatus.NONE),
    (200, ["uris"], TurnStatus.NONE),
    (403, {"errcode": "M_FORBIDDEN"}, TurnStatus.FORBIDDEN),
    (429, {"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": 2000}, TurnStatus.ERROR),
    (502, None, TurnStatus.ERROR),
    (401, {"errcode": "M_UNKNOWN_TOKEN"}, TurnStatus.ERROR),
])
def test_what_an_answer_means(status, body, expected):
    answer = parse_turn_response(status, body)
    assert answer.status is expected
    assert (answer.servers != ()) is (expected is TurnStatus.OK)


def test_uri_order_and_what_aiortc_could_not_use():
    uris = ["stun:stun.example.org", "turns:t.example.org?transport=udp", "turn:t.example.org",
            "turn:t.example.org:3478?transport=sctp", "turns:t.example.org", "stun:s.example.org?transport=udp",
            "turn:t.example.org:3478?transport=tcp", 42, "turn:t.example.org", "turn:[::1]:3478"]
    assert order_uris(uris) == ("turn:t.example.org", "turn:t.example.org:3478?transport=tcp",
                                "turns:t.example.org", "stun:stun.example.org")


def test_the_credential_stays_out_of_repr():
    assert "c2VjcmV0" not in repr(parse_turn_response(200, SYNAPSE).servers)


def test_cache_refreshes_before_expiry():
    cache = TurnCache()
    assert not cache.fresh(0) and cache.servers(0) == []
    ok = parse_turn_response(200, SYNAPSE)
    assert cache.update(ok, 1000) == list(ok.servers)
    refresh = 1000 + 86400 - REFRESH_MARGIN
    assert cache.fresh(refresh - 1) and not cache.fresh(refresh)
    assert cache.servers(refresh) == list(ok.servers)  # still valid while being refreshed
    assert cache.servers(1000 + 86400) == []


def test_short_lived_credentials_refresh_at_half_their_life():
    cache = TurnCache()
    cache.update(parse_turn_response(200, {**SYNAPSE, "ttl": 60}), 0)
    assert cache.fresh(29.9) and not cache.fresh(30)


def test_a_failed_refresh_keeps_valid_credentials_and_retries_soon():
    cache = TurnCache()
    ok = parse_turn_response(200, SYNAPSE)
    cache.update(ok, 0)
    later = 86400 - 100
    assert cache.update(TurnAnswer(TurnStatus.ERROR, detail="HTTP 502"), later) == list(ok.servers)
    assert cache.fresh(later + ERROR_RETRY - 1) and not cache.fresh(later + ERROR_RETRY)
    assert cache.servers(86400) == []  # never past expiry


def test_no_turn_and_forbidden_are_remembered():
    cache = TurnCache()
    cache.update(parse_turn_response(200, SYNAPSE), 0)
    assert cache.update(parse_turn_response(200, {}), 10) == []
    assert cache.fresh(10 + NO_TURN_RECHECK - 1) and not cache.fresh(10 + NO_TURN_RECHECK)
    assert cache.update(parse_turn_response(403, {}), 20) == []
    assert cache.fresh(20 + FORBIDDEN_RECHECK - 1) and not cache.fresh(20 + FORBIDDEN_RECHECK)
    assert cache.update(TurnAnswer(TurnStatus.ERROR), 30) == []
