"""A hostile flood against a door, through a real homeserver: what a stranger with an account can send.

- ``invites``: well-formed ``m.call.invite`` events in a room of the stranger and the door (each a new call ID),
  which the door must refuse at most ``REFUSALS_PER_MINUTE`` times a minute and never answer;
- ``malformed``: ``m.call.*`` events whose content is wrong in every way a parser meets (missing or mistyped
  fields, huge strings, nested junk, unknown versions, bad SDP, candidates that are not candidates);
- ``room_invites``: new rooms the stranger creates, inviting the door, which it must leave and forget.

Everything is sent with plain HTTP requests from a pool of threads, as fast as the homeserver takes them.
"""

from __future__ import annotations

import itertools
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

#: A plausible audio offer: the door must refuse the call, not ignore it as malformed.
OFFER_SDP = "\r\n".join([
    "v=0", "o=- 4611731400430051336 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0", "a=mid:0", "a=sendrecv", "a=rtcp-mux",
    "a=rtpmap:111 opus/48000/2", "a=ice-ufrag:fl00", "a=ice-pwd:floodfloodfloodfloodfl00",
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32), "a=setup:actpass", "",
])

CALL_TYPES = ("m.call.invite", "m.call.answer", "m.call.candidates", "m.call.hangup", "m.call.reject",
              "m.call.select_answer", "m.call.negotiate", "m.call.sdp_stream_metadata_changed")


@dataclass
class FloodResult:
    sent: int = 0
    failed: int = 0
    invite_ids: list[str] = field(default_factory=list)
    rooms: list[str] = field(default_factory=list)
    seconds: float = 0.0


def call_id() -> str:
    return f"{int(time.time() * 1000)}{secrets.token_hex(8)}"


def invite(door_user_id: str | None) -> dict[str, Any]:
    content: dict[str, Any] = {
        "call_id": call_id(), "party_id": secrets.token_hex(6), "version": "1", "lifetime": 60000,
        "offer": {"type": "offer", "sdp": OFFER_SDP},
    }
    if door_user_id is not None:
        content["invitee"] = door_user_id
    return content


def malformed(n: int) -> tuple[str, dict[str, Any]]:
    """The n-th malformed call event (type, content): cycles through the kinds of damage."""
    kind = CALL_TYPES[n % len(CALL_TYPES)]
    cid = call_id()
    damage: list[dict[str, Any]] = [
        {},
        {"call_id": None},
        {"call_id": 12345, "version": 1},
        {"call_id": cid, "version": {"nested": [1, 2, {"x": None}]}},
        {"call_id": cid, "version": "1", "party_id": "p" * 10_000},
        {"call_id": "c" * 30_000, "version": "1"},
        {"call_id": cid, "version": "1", "party_id": "ok", "offer": "not an object", "answer": [1, 2]},
        {"call_id": cid, "version": "1", "party_id": "ok", "offer": {"type": "offer", "sdp": "garbage\x00" * 500}},
        {"call_id": cid, "version": "1", "party_id": "ok", "lifetime": -5, "offer": {"type": "answer"}},
        {"call_id": cid, "version": "1", "party_id": "ok", "lifetime": "forever"},
        {"call_id": cid, "version": "1", "party_id": "ok", "candidates": "candidate:1 1 udp 1 1.2.3.4 5 typ host"},
        {"call_id": cid, "version": "1", "party_id": "ok",
         "candidates": [None, 7, {"candidate": 5}, {"candidate": "x" * 5000, "sdpMLineIndex": "zero"}] * 25},
        {"call_id": cid, "version": "2", "party_id": "ok", "selected_party_id": ["a"]},
        {"call_id": cid, "version": "1", "party_id": "bad party id with spaces/and/slashes", "reason": 42},
        {"call_id": cid, "version": "1", "party_id": "ok", "invitee": {"user": "@door"}, "description": 3},
        {"call_id": cid, "version": "1", "party_id": "ok", "sdp_stream_metadata": {"s": {"purpose": ["x"]}}},
    ]
    return kind, damage[n % len(damage)]


class Flood:
    """Sends a flood as ``stranger`` (a registered user with ``access_token``) through ``server`` (the testbed's
    :class:`~intercom_dev.testbed.synapse.Homeserver`)."""

    def __init__(self, server: Any, stranger: Any, door_user_id: str, room_id: str, *, threads: int = 8) -> None:
        self.server, self.stranger, self.door, self.room_id, self.threads = (server, stranger, door_user_id,
                                                                             room_id, threads)
        self._txn = itertools.count()

    def _send(self, event_type: str, content: dict[str, Any], room_id: str | None = None) -> None:
        txn = f"flood{time.monotonic_ns()}.{next(self._txn)}"
        self.server.api("PUT", f"/_matrix/client/v3/rooms/{room_id or self.room_id}/send/{event_type}/{txn}",
                        content, token=self.stranger.access_token)

    def _room(self) -> str:
        return self.server.api("POST", "/_matrix/client/v3/createRoom",
                               {"preset": "private_chat", "invite": [self.door], "name": "free prize"},
                               token=self.stranger.access_token)["room_id"]

    def run(self, *, invites: int = 200, malformed_events: int = 200, room_invites: int = 0,
            invitee: bool = False) -> FloodResult:
        """Send it all; returns what was sent. ``invitee``: the invites name the door (else none, as
        matrix-js-sdk sends in a room of two)."""
        result = FloodResult()
        jobs: list[tuple[str, Any]] = []
        for n in range(max(invites, malformed_events)):
            if n < invites:
                content = invite(self.door if invitee else None)
                result.invite_ids.append(content["call_id"])
                jobs.append(("event", ("m.call.invite", content)))
            if n < malformed_events:
                jobs.append(("event", malformed(n)))
        jobs += [("room", None)] * room_invites

        def one(job: tuple[str, Any]) -> str | None:
            what, arg = job
            if what == "room":
                return self._room()
            self._send(*arg)
            return None

        started = time.monotonic()
        with ThreadPoolExecutor(self.threads) as pool:
            futures = [pool.submit(one, job) for job in jobs]
            for future in futures:
                try:
                    room = future.result()
                except Exception:  # the homeserver refused one (too large, rate limited): count it
                    result.failed += 1
                    continue
                result.sent += 1
                if room is not None:
                    result.rooms.append(room)
        result.seconds = time.monotonic() - started
        return result
