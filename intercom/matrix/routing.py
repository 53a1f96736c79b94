"""From what matrix-nio parsed to what the call core understands. Pure functions, no I/O.

Why this needs care:

- nio parses ``m.call.*`` into different classes: typed ``Call*Event`` for invite/candidates/answer/hangup,
  ``UnknownEvent`` for select_answer/reject/negotiate/..., and ``BadEvent`` when its schema disagrees (a
  matrix-js-sdk end-of-candidates entry ``{"candidate": ""}`` has no ``sdpMid``, so the whole candidates event
  becomes a ``BadEvent``). Every one of them keeps the wire JSON in ``.source``: the content is taken from there,
  untouched, and the core decides what is malformed.
- A decrypted Megolm event has no ``unsigned`` (nio rebuilds ``.source`` from the plaintext), so its age, sender
  and event ID come from the encrypted *envelope* the server sent.
- ``unsigned.age`` is the event's age when the server sent it; the core's liveness check (age against the invite's
  ``lifetime``) is what keeps a restarted door from ringing for a stale invite.
- The spec wants an invite ignored when its call was already answered, rejected or hung up in the same sync
  batch (:func:`drop_superseded_invites`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from intercom.core import (CallEventReceived, RoomMembersChanged, RtcDeclineReceived, RtcMembershipChanged,
                           TextMessageReceived)
from intercom.core import rtc

log = logging.getLogger(__name__)

CALL_PREFIX = "m.call."
INVITE = "m.call.invite"
#: Events that settle a call: an invite for it in the same batch must not ring.
_SETTLING = frozenset({"m.call.answer", "m.call.reject", "m.call.hangup", "m.call.select_answer"})


def event_age(source: Mapping[str, Any] | None, now_ms: int | None = None) -> int | None:
    """``unsigned.age`` of a raw event, if it is a sane integer (milliseconds). Without one, and only when
    ``now_ms`` is given (the door's clock is known to be synchronised), the age from ``origin_server_ts``.
    None: the age is unknown, and the core treats such an event as not fresh."""
    if not isinstance(source, Mapping):
        return None
    unsigned = source.get("unsigned")
    age = unsigned.get("age") if isinstance(unsigned, Mapping) else None
    if not isinstance(age, bool) and isinstance(age, int) and age >= 0:
        return age
    sent = source.get("origin_server_ts")
    if now_ms is None or isinstance(sent, bool) or not isinstance(sent, int):
        return None
    return max(0, now_ms - sent)


def to_core_event(room_id: str, event: Any, envelope: Mapping[str, Any] | None = None, *,
                  now_ms: int | None = None, device_id: str | None = None,
                  room_members: int | None = None) -> CallEventReceived | None:
    """The core event for one nio timeline event, or None when it is not an ``m.call.*`` event.

    ``event`` is whatever nio produced (typed, ``UnknownEvent``, ``BadEvent``, a decrypted event); ``envelope``
    is the raw event as the server sent it (for an encrypted event: the ``m.room.encrypted`` one). Without an
    envelope, ``event.source`` is used for both. ``device_id``: the sender's device, as authenticated by
    :meth:`~intercom.matrix.trust.HouseholdTrust.sender_device` (never the one the content names).
    ``room_members``: the room's joined and invited members, as the client knows them.
    """
    source = getattr(event, "source", None)
    if not isinstance(source, Mapping):
        return None
    event_type = source.get("type")
    if not isinstance(event_type, str) or not event_type.startswith(CALL_PREFIX):
        return None
    content = source.get("content")
    outer = envelope if isinstance(envelope, Mapping) else source
    sender = outer.get("sender") or source.get("sender")
    if not isinstance(sender, str):
        return None
    event_id = outer.get("event_id") or source.get("event_id")
    return CallEventReceived(
        room_id=room_id,
        sender=sender,
        event_type=event_type,
        content=content if isinstance(content, Mapping) else {},
        age_ms=event_age(outer, now_ms),
        event_id=event_id if isinstance(event_id, str) else None,
        encrypted=bool(getattr(event, "decrypted", False)),
        device_id=device_id,
        room_members=room_members,
    )


def to_rtc_event(room_id: str, event: Any, envelope: Mapping[str, Any] | None = None, *,
                 now_ms: int | None = None, device_id: str | None = None,
                 ) -> RtcMembershipChanged | RtcDeclineReceived | None:
    """A MatrixRTC membership (state) or decline (room event) as a core event; None for anything else. ``event``
    may be a nio event or a raw state event dict (from the sync's ``state`` section)."""
    source = event if isinstance(event, Mapping) else getattr(event, "source", None)
    if not isinstance(source, Mapping):
        return None
    event_type = source.get("type")
    outer = envelope if isinstance(envelope, Mapping) else source
    sender = outer.get("sender") or source.get("sender")
    event_id = outer.get("event_id") or source.get("event_id")
    event_id = event_id if isinstance(event_id, str) else None
    if not isinstance(sender, str):
        return None
    if event_type == rtc.MEMBER and isinstance(source.get("state_key"), str):
        content = source.get("content")
        return RtcMembershipChanged(room_id=room_id, sender=sender, state_key=source["state_key"],
                                    content=content if isinstance(content, Mapping) else {},
                                    age_ms=event_age(source, now_ms), event_id=event_id)
    if event_type == rtc.DECLINE:
        return RtcDeclineReceived(room_id=room_id, sender=sender, age_ms=event_age(outer, now_ms), event_id=event_id,
                                  encrypted=bool(getattr(event, "decrypted", False)), device_id=device_id)
    return None


def to_text_event(room_id: str, event: Any, envelope: Mapping[str, Any] | None = None, *,
                  now_ms: int | None = None, device_id: str | None = None) -> TextMessageReceived | None:
    """A text message (``m.room.message`` with ``msgtype`` ``m.text``) as a core event, for owner commands."""
    source = getattr(event, "source", None)
    if not isinstance(source, Mapping) or source.get("type") != "m.room.message":
        return None
    content = source.get("content")
    if not isinstance(content, Mapping) or content.get("msgtype") != "m.text":
        return None
    outer = envelope if isinstance(envelope, Mapping) else source
    sender = outer.get("sender") or source.get("sender")
    if not isinstance(sender, str):
        return None
    event_id = outer.get("event_id") or source.get("event_id")
    return TextMessageReceived(room_id=room_id, sender=sender, body=content.get("body"),
                              age_ms=event_age(outer, now_ms), event_id=event_id if isinstance(event_id, str) else None,
                              encrypted=bool(getattr(event, "decrypted", False)), device_id=device_id)


def _call_id(event: CallEventReceived) -> str | None:
    call_id = event.content.get("call_id")
    return call_id if isinstance(call_id, str) else None


def drop_superseded_invites(
    events: Sequence[CallEventReceived],
) -> tuple[list[CallEventReceived], list[CallEventReceived]]:
    """Split one sync batch into (events to pass on, invites to drop).

    An invite is dropped when a later event in the same room and batch answers, rejects, selects an answer for or
    hangs up the same call: the caller gave up (or the call was settled) before we saw it, so it must not ring.
    """
    settled_after: dict[tuple[str, str], int] = {}
    for index, event in enumerate(events):
        call_id = _call_id(event)
        if call_id is not None and event.event_type in _SETTLING:
            settled_after[(event.room_id, call_id)] = index
    kept: list[CallEventReceived] = []
    dropped: list[CallEventReceived] = []
    for index, event in enumerate(events):
        call_id = _call_id(event)
        if event.event_type == INVITE and call_id is not None and settled_after.get((event.room_id, call_id), -1) > index:
            dropped.append(event)
        else:
            kept.append(event)
    return kept, dropped


def joined_members(room: Any) -> frozenset[str]:
    """The joined (not merely invited) members of a nio ``MatrixRoom``."""
    return frozenset(user_id for user_id, user in room.users.items() if not getattr(user, "invited", False))


def room_facts(room_id: str, room: Any | None, *, joined: bool = True, own_user_id: str | None = None,
               creators: frozenset[str] | None = None) -> RoomMembersChanged:
    """The core's view of a room: its joined members and join rule. ``room`` None or ``joined=False`` (the door
    is not in it) gives no members, which the core reads as "the door has not joined"."""
    if room is None or not joined:
        return RoomMembersChanged(room_id=room_id, joined=frozenset(), join_rule=None)
    join_rule = getattr(room, "join_rule", None)
    return RoomMembersChanged(room_id=room_id, joined=joined_members(room),
                              join_rule=join_rule if isinstance(join_rule, str) else None,
                              encrypted=getattr(room, "encrypted", False) is True,
                              rtc_allowed=rtc_allowed(room, own_user_id, creators or frozenset()))


#: Room versions whose creators have every power without being in the power levels (MSC4289).
CREATORS_PRIVILEGED = frozenset({"12", "org.matrix.hydra.11"})


def rtc_allowed(room: Any, user_id: str | None, creators: frozenset[str] = frozenset()) -> bool:
    """Whether ``user_id`` may send MatrixRTC call memberships in a nio room (True when it cannot be told)."""
    if user_id in creators and getattr(room, "room_version", None) in CREATORS_PRIVILEGED:
        return True
    levels = getattr(room, "power_levels", None)
    if user_id is None or levels is None or not hasattr(levels, "can_user_send_state"):
        return True
    try:
        return bool(levels.can_user_send_state(user_id, rtc.MEMBER))
    except Exception:
        return True


def describe(event: CallEventReceived) -> str:
    """A short log description of a received call event (never the SDP)."""
    content = event.content
    parts = [f"{event.event_type} from {event.sender} in {event.room_id}"]
    call_id = content.get("call_id")
    if isinstance(call_id, str):
        parts.append(f"call {call_id[:64]}")
    reason = content.get("reason")
    if isinstance(reason, str):
        parts.append(f"reason {reason[:32]}")
    if event.age_ms is not None:
        parts.append(f"age {event.age_ms} ms")
    return ", ".join(parts)
