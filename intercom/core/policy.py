"""Who the door talks to, and where. The only place these rules live.

This device has a camera on someone's front door: it answers only a resident, only in the door's room with that
resident, and only while that room holds exactly the door and the resident (the spec's security advice for 1:1 calls:
in a bigger room another member could answer or intercept).
"""

from __future__ import annotations

from dataclasses import dataclass

#: An invite this close to the end of its lifetime is treated as expired (matrix-js-sdk uses the same grace),
#: since the caller will give up before our answer could reach it.
RING_GRACE_MS = 3_000


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomFacts:
    """What the Matrix side told us about the configured room."""

    joined: frozenset[str]
    join_rule: str | None = None
    encrypted: bool = False
    rtc_allowed: bool = True


def room_problem(facts: RoomFacts | None, *, user_id: str, owner: str,
                 require_encryption: bool = False) -> str | None:
    """Why the configured room cannot carry a call, or None when it can."""
    if facts is None:
        return "the room's members are not known yet"
    if facts.join_rule == "public":
        return "the room is public; calls need a private room"
    if require_encryption and not facts.encrypted:
        return ("the room is not encrypted and the door is set to require encryption (matrix.require_encryption); "
                "turn on encryption in the room's settings")
    if facts.joined != frozenset({user_id, owner}):
        others = sorted(facts.joined - {user_id, owner})
        if user_id not in facts.joined:
            return "the door has not joined the room"
        if owner not in facts.joined:
            return f"the owner {owner} has not joined the room"
        return f"the room has {len(facts.joined)} members ({', '.join(others)} too); calls need exactly two"
    return None


def invite_expired(*, age_ms: int | None, lifetime_ms: int) -> bool:
    """The spec's liveness rule: an invite is live while its age is under its lifetime. An invite of unknown age
    (no ``unsigned.age``) is not live: it could be a replay from any time."""
    return age_ms is None or age_ms + RING_GRACE_MS >= lifetime_ms


def caller_problem(*, sender: str, room_id: str, owner: str, configured_room: str | None, room: str | None,
                   resident: bool | None = None) -> str | None:
    """Why an invite must not be answered, or None when it may be (``room`` is :func:`room_problem`'s answer
    for the caller's room). ``resident``: whether the sender is one of the household (None: only ``owner`` is)."""
    if not (resident if resident is not None else sender == owner):
        return f"{sender} is not a resident" if resident is not None else f"{sender} is not the owner"
    if configured_room is None:
        return room or f"the door has no room with {sender} yet"
    if room_id != configured_room:
        return "the invite is not in the door's room with the caller"
    return room
