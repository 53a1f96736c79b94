"""The ``m.call.*`` wire format: received content parsed into typed messages, and our own content built.

This is the only module that knows the JSON shape of call events. Parsing trusts nothing: every field is checked for
type and size, and anything unusable raises :class:`~intercom.core.errors.MalformedCallEvent` with a reason the
log can show. Version handling follows the spec's VoIP module: an integer ``0`` is a version 0 peer (whose
``party_id`` is treated as absent); anything else, including a missing or odd version, is treated as version "1".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .actions import IceCandidate
from .errors import MalformedCallEvent

INVITE = "m.call.invite"
CANDIDATES = "m.call.candidates"
ANSWER = "m.call.answer"
SELECT_ANSWER = "m.call.select_answer"
REJECT = "m.call.reject"
HANGUP = "m.call.hangup"
NEGOTIATE = "m.call.negotiate"
STREAM_METADATA_CHANGED = "m.call.sdp_stream_metadata_changed"

#: The spec's opaque identifier grammar, used by call IDs.
_OPAQUE_ID = re.compile(r"[0-9A-Za-z._~-]{1,255}")
#: Limits on what we accept. Synapse refuses events over 64 KiB, so nothing legitimate is larger.
MAX_SDP = 65536
MAX_ID = 255
MAX_CANDIDATES = 200
MAX_CANDIDATE_LEN = 2048
MAX_REASON = 64
#: Lifetimes are clamped to an hour: an invite that claims to live longer is treated as living an hour.
MAX_LIFETIME_MS = 3_600_000
#: js-sdk's lifetime, used when an invite carries none.
DEFAULT_LIFETIME_MS = 60_000

HANGUP_REASONS = frozenset(
    {"ice_failed", "ice_timeout", "invite_timeout", "user_hangup", "user_media_failed", "user_busy", "unknown_error",
     "replaced"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """Fields every call event has. ``party_id`` is None for version 0 peers."""

    call_id: str
    party_id: str | None
    v1: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Invite(Message):
    lifetime_ms: int
    invitee: str | None
    offer_sdp: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidates(Message):
    candidates: tuple[IceCandidate, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer(Message):
    answer_sdp: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SelectAnswer(Message):
    selected_party_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Reject(Message):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Hangup(Message):
    #: Normalised: an unknown or missing reason is ``user_hangup``, as the spec says.
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Negotiate(Message):
    description_type: str
    sdp: str
    #: How long the sender waits for an answer (ms); None when it gave none (then no limit is applied).
    lifetime_ms: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OtherCallEvent(Message):
    """A call event we tolerate but do not act on (stream metadata changes, transfers, asserted identity...)."""

    event_type: str


# --- parsing -------------------------------------------------------------------------------------------------------


def _field(content: Mapping[str, Any], name: str, kind: type | tuple[type, ...], *, required: bool = True) -> Any:
    value = content.get(name)
    if value is None:
        if required:
            raise MalformedCallEvent(f"missing {name}")
        return None
    # bool is an int in Python, never in JSON schemas: refuse it where a number or string is wanted.
    if isinstance(value, bool) or not isinstance(value, kind):
        raise MalformedCallEvent(f"{name} has the wrong type ({type(value).__name__})")
    return value


def _bounded_str(content: Mapping[str, Any], name: str, limit: int, *, required: bool = True) -> str | None:
    value = _field(content, name, str, required=required)
    if value is not None and not 0 < len(value) <= limit:
        raise MalformedCallEvent(f"{name} is empty or longer than {limit} characters")
    return value


def _description(content: Mapping[str, Any], name: str, expected_type: str | None) -> tuple[str, str]:
    desc = _field(content, name, Mapping)
    kind = _bounded_str(desc, "type", 16)
    if expected_type is not None and kind != expected_type:
        raise MalformedCallEvent(f"{name}.type is {kind!r}, expected {expected_type!r}")
    sdp = _bounded_str(desc, "sdp", MAX_SDP)
    if "m=" not in sdp:
        raise MalformedCallEvent(f"{name}.sdp has no media section")
    return kind, sdp


def _candidate(raw: Any) -> IceCandidate | None:
    """One candidate entry, or None when it is unusable (dropped alone, not with the whole event)."""
    if not isinstance(raw, Mapping):
        return None
    cand, mid, index = raw.get("candidate"), raw.get("sdpMid"), raw.get("sdpMLineIndex")
    if not isinstance(cand, str) or len(cand) > MAX_CANDIDATE_LEN:
        return None
    if mid is not None and (not isinstance(mid, str) or len(mid) > MAX_ID):
        mid = None
    if index is not None and (isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 1024):
        index = None
    if cand and mid is None and index is None:
        return None  # the spec requires one of them on every real candidate
    return IceCandidate(candidate=cand, sdp_mid=mid, sdp_mline_index=index)


def parse_call_event(event_type: str, content: Any) -> Message:
    """Parse one received call event's content. Raises :class:`MalformedCallEvent` for anything unusable."""
    if not isinstance(content, Mapping):
        raise MalformedCallEvent("content is not an object")
    call_id = _field(content, "call_id", str)
    if not _OPAQUE_ID.fullmatch(call_id):
        raise MalformedCallEvent("call_id is not a valid identifier")
    version = content.get("version")
    v1 = not (type(version) is int and version == 0)
    party_id = _bounded_str(content, "party_id", MAX_ID, required=False) if v1 else None
    if party_id is not None and not _OPAQUE_ID.fullmatch(party_id):
        raise MalformedCallEvent("party_id is not a valid identifier")  # it would be echoed in select_answer
    common = {"call_id": call_id, "party_id": party_id, "v1": v1}

    if event_type == INVITE:
        lifetime = content.get("lifetime", DEFAULT_LIFETIME_MS)
        if isinstance(lifetime, bool) or not isinstance(lifetime, int) or lifetime < 0:
            raise MalformedCallEvent("lifetime is not a non-negative integer")
        invitee = _bounded_str(content, "invitee", MAX_ID, required=False)
        _, sdp = _description(content, "offer", "offer")
        return Invite(**common, lifetime_ms=min(lifetime, MAX_LIFETIME_MS), invitee=invitee, offer_sdp=sdp)
    if event_type == CANDIDATES:
        raw = _field(content, "candidates", list)
        if len(raw) > MAX_CANDIDATES:
            raise MalformedCallEvent(f"more than {MAX_CANDIDATES} candidates")
        parsed = tuple(c for c in map(_candidate, raw) if c is not None)
        if not parsed:
            raise MalformedCallEvent("no usable candidate")
        return Candidates(**common, candidates=parsed)
    if event_type == ANSWER:
        _, sdp = _description(content, "answer", "answer")
        return Answer(**common, answer_sdp=sdp)
    if event_type == SELECT_ANSWER:
        selected = _bounded_str(content, "selected_party_id", MAX_ID)
        if not _OPAQUE_ID.fullmatch(selected):
            raise MalformedCallEvent("selected_party_id is not a valid identifier")
        return SelectAnswer(**common, selected_party_id=selected)
    if event_type == REJECT:
        return Reject(**common)
    if event_type == HANGUP:
        reason = content.get("reason")
        if not isinstance(reason, str) or reason not in HANGUP_REASONS:
            reason = "user_hangup"
        return Hangup(**common, reason=reason)
    if event_type == NEGOTIATE:
        kind, sdp = _description(content, "description", None)
        if kind not in ("offer", "answer"):
            raise MalformedCallEvent(f"description.type {kind!r} is neither offer nor answer")
        lifetime = content.get("lifetime")
        if lifetime is not None and (isinstance(lifetime, bool) or not isinstance(lifetime, int) or lifetime < 0):
            raise MalformedCallEvent("lifetime is not a non-negative integer")
        return Negotiate(**common, description_type=kind, sdp=sdp,
                         lifetime_ms=None if lifetime is None else min(lifetime, MAX_LIFETIME_MS))
    return OtherCallEvent(**common, event_type=event_type[:MAX_REASON])


# --- building ------------------------------------------------------------------------------------------------------


def _common(call_id: str, party_id: str) -> dict[str, Any]:
    # Always version "1" with a party_id, also towards version 0 peers, as the spec asks. Never conf_id,
    # device_id, dest_session_id or seq: to matrix-js-sdk those mean a group call.
    return {"call_id": call_id, "party_id": party_id, "version": "1"}


def _stream_metadata(stream_id: str | None) -> dict[str, Any]:
    # Keyed by the real msid stream id, or left out: matrix-js-sdk drops a call whose map lacks its stream.
    if not stream_id:
        return {}
    return {"sdp_stream_metadata": {stream_id: {"purpose": "m.usermedia", "audio_muted": False, "video_muted": False}}}


def invite_content(call_id: str, party_id: str, *, sdp: str, stream_id: str | None, lifetime_ms: int,
                   invitee: str) -> dict[str, Any]:
    return {**_common(call_id, party_id), "lifetime": lifetime_ms, "invitee": invitee,
            "offer": {"type": "offer", "sdp": sdp}, **_stream_metadata(stream_id)}


def answer_content(call_id: str, party_id: str, *, sdp: str, stream_id: str | None) -> dict[str, Any]:
    return {**_common(call_id, party_id), "answer": {"type": "answer", "sdp": sdp}, **_stream_metadata(stream_id)}


def end_of_candidates_content(call_id: str, party_id: str) -> dict[str, Any]:
    # aiortc puts every local candidate into the SDP; the spec still wants the end-of-candidates marker.
    return {**_common(call_id, party_id), "candidates": [{"candidate": ""}]}


def candidates_content(call_id: str, party_id: str, candidates: list[dict[str, Any]], *, end: bool) -> dict[str, Any]:
    """Trickled local candidates (``candidate``, ``sdpMid``, ``sdpMLineIndex``), end-of-candidates last if ``end``."""
    entries = [dict(c) for c in candidates] + ([{"candidate": ""}] if end else [])
    return {**_common(call_id, party_id), "candidates": entries}


def select_answer_content(call_id: str, party_id: str, *, selected_party_id: str) -> dict[str, Any]:
    return {**_common(call_id, party_id), "selected_party_id": selected_party_id}


def reject_content(call_id: str, party_id: str) -> dict[str, Any]:
    return _common(call_id, party_id)


def hangup_content(call_id: str, party_id: str, *, reason: str) -> dict[str, Any]:
    return {**_common(call_id, party_id), "reason": reason}


def negotiate_answer_content(call_id: str, party_id: str, *, sdp: str, stream_id: str | None,
                             lifetime_ms: int) -> dict[str, Any]:
    return {**_common(call_id, party_id), "lifetime": lifetime_ms, "description": {"type": "answer", "sdp": sdp},
            **_stream_metadata(stream_id)}
