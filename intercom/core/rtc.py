"""MatrixRTC (Element Call over LiveKit) as the core's second call technology.

Where a legacy call exchanges SDP with the peer in ``m.call.*`` events, a MatrixRTC call is a room-wide session:
each participant publishes an ``org.matrix.msc3401.call.member`` state event (state key
``_@user:server_DEVICE_m.call``) and meets the others in a LiveKit room, whose URL and token the focus's token
service hands out. The same call table (:mod:`intercom.core.call`) drives both; only the wire and the classifier
differ, and the table's inputs map like this:

=====================  ===========================================================================================
table input            MatrixRTC
=====================  ===========================================================================================
PLACE / TAKE           :class:`RtcConnect`: join the LiveKit room and publish the door's camera and microphone
OFFER_READY            connected: :class:`RtcAnnounce` with a ring: our membership, then the ring notification
ANSWER_READY           connected: :class:`RtcAnnounce` without a ring: our membership
ANSWER                 the rung resident's membership appears (one of their devices joined)
REJECT                 ``org.matrix.msc4310.rtc.decline`` from the rung resident
HANGUP                 the peer device's membership is cleared (``{}``) or replaced by one that is not a call
MEDIA_CONNECTED        the LiveKit side hears the peer user's tracks
=====================  ===========================================================================================

Leaving (clearing our membership, cancelling the delayed leave) is part of closing the call's media, so every way
a call ends leaves the session. There is nothing to negotiate, no candidates and no glare: a resident who joins
the session the door rings in has answered it.

Membership state events are not encrypted (state never is), so the device a membership names is only a claim. In
an encrypted room the door therefore joins a resident's call, or counts their join as an answer, only when the
claimed device is one it trusts; the media keys, which come Olm-encrypted from that device, are what makes the
claim good (only the device that holds the keys can take part in the E2EE media).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .actions import Action, RtcAnnounce, RtcConnect
from .call import Call, CallInput, Details
from .errors import MalformedCallEvent
from .states import Direction

#: The membership state event (MSC3401 / MSC4143 "session" form).
MEMBER = "org.matrix.msc3401.call.member"
#: The ring (MSC4075).
NOTIFICATION = "org.matrix.msc4075.rtc.notification"
#: A declined ring (MSC4310).
DECLINE = "org.matrix.msc4310.rtc.decline"
#: Element Call's per-participant media keys (to-device, Olm-encrypted).
ENCRYPTION_KEYS = "io.element.call.encryption_keys"
#: The one MatrixRTC application the door takes part in.
APPLICATION = "m.call"
#: What js-sdk assumes when a membership has no ``expires`` (4 hours).
DEFAULT_EXPIRES_MS = 4 * 3600 * 1000

_USER_ID = r"@[^:\s]{1,255}:[A-Za-z0-9.\-\[\]:]{1,255}"
#: ``_@user:server_DEVICE_m.call`` (the underscore-less form is for MSC3757 room versions).
_STATE_KEY = re.compile(rf"_?(?P<user>{_USER_ID})_(?P<device>[^\s]{{1,255}})_m\.call")
_DEVICE_ID = re.compile(r"[A-Za-z0-9._\-+=/]{1,255}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Membership:
    """One device's membership of the room's call, as the core needs it."""

    user_id: str
    device_id: str
    state_key: str
    focus_url: str = ""  #: the member's preferred LiveKit token service ("" if it named none)
    intent: str = ""  #: ``m.call.intent`` ("audio", "video" or unknown)


def parse_membership(state_key: Any, sender: Any, content: Any, *, age_ms: int | None) -> Membership | str:
    """The live membership in a ``MEMBER`` state event, or why there is none: ``"left"`` for a cleared one.
    Raises :class:`MalformedCallEvent` for one that claims to be a call membership and is not well formed, or is
    another user's.

    A membership is live until ``expires`` ms after it was made (``created_ts``, else when it was sent); an event
    with no age cannot be placed in time and is treated as not live (it may be a replay)."""
    if not isinstance(state_key, str) or not isinstance(sender, str):
        raise MalformedCallEvent("membership without a state key or sender")
    match = _STATE_KEY.fullmatch(state_key)
    if match is None:
        return f"state key {state_key[:80]!r} is not a device's call membership"
    if match.group("user") != sender:
        raise MalformedCallEvent(f"membership of {match.group('user')[:80]} sent by {sender[:80]}")
    if not isinstance(content, Mapping):
        raise MalformedCallEvent("membership content is not an object")
    if not content or "application" not in content:
        return "left"
    if content.get("application") != APPLICATION:
        return f"a membership of application {str(content.get('application'))[:40]!r}, not a call"
    if content.get("call_id", "") != "" or content.get("scope", "m.room") != "m.room":
        return "a membership of another call than the room's"
    device = content.get("device_id")
    if not isinstance(device, str) or _DEVICE_ID.fullmatch(device) is None:
        raise MalformedCallEvent("membership without a valid device_id")
    if device != match.group("device"):
        raise MalformedCallEvent("membership device_id differs from its state key")
    expires = content.get("expires", DEFAULT_EXPIRES_MS)
    if not isinstance(expires, int) or isinstance(expires, bool) or expires <= 0:
        raise MalformedCallEvent("membership expires is not a positive integer")
    if age_ms is None:
        return "membership of unknown age (it may be a replay)"
    if age_ms >= expires:
        return f"membership expired {(age_ms - expires) // 1000} s ago"
    return Membership(user_id=sender, device_id=device, state_key=state_key,
                      focus_url=_focus_url(content.get("foci_preferred")),
                      intent=str(content.get("m.call.intent", ""))[:16])


def _focus_url(foci: Any) -> str:
    if isinstance(foci, Sequence) and not isinstance(foci, str):
        for focus in foci:
            if isinstance(focus, Mapping) and focus.get("type") == "livekit":
                url = focus.get("livekit_service_url")
                if isinstance(url, str) and url.startswith(("https://", "http://")):
                    return url[:512]
    return ""


# --- what a MatrixRTC call does ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RtcWire:
    """How a MatrixRTC call says things: joining and ringing are actions; what legacy calls say in events that
    MatrixRTC has no counterpart for (candidates, select_answer, negotiation, glare) says nothing."""

    def prepare(self, call: Call, *, offer_sdp: str) -> Action:
        return RtcConnect(call_id=call.call_id, room_id=call.room_id, peer=call.peer, direction=call.direction,
                          focus_url=call.focus)

    def invite(self, call: Call, *, sdp: str, stream_id: str | None, lifetime_ms: int) -> Action:
        return RtcAnnounce(call_id=call.call_id, room_id=call.room_id, ring=call.peer, lifetime_ms=lifetime_ms)

    def answer(self, call: Call, *, sdp: str, stream_id: str | None) -> Action:
        return RtcAnnounce(call_id=call.call_id, room_id=call.room_id)

    def candidates(self, call: Call, candidates: Sequence[Mapping[str, Any]], *, end: bool) -> None:
        return None

    def select(self, call: Call, party: str) -> None:
        return None

    def hangup(self, call: Call, reason: str, *, call_id: str | None = None) -> None:
        return None  # leaving is part of closing the media (CloseMedia)

    def refuse(self, call: Call, reason: str) -> None:
        return None  # an incoming call not joined yet: there is nothing to leave

    def refuse_other(self, call: Call, call_id: str, *, v1: bool, reason: str) -> None:
        return None

    def negotiate_answer(self, call: Call, *, sdp: str, stream_id: str | None, lifetime_ms: int) -> None:
        return None


def membership_input(call: Call, member: Membership | None, state_key: str) -> tuple[CallInput, Details] | str:
    """The call's input when the membership under ``state_key`` of the call's peer changed to ``member`` (None:
    left), or why it is none."""
    if member is not None:
        if call.direction is Direction.OUTGOING and not call.peer_chosen:
            return CallInput.ANSWER, Details(party=state_key, v1=True, detail=f"{member.device_id} joined")
        return "membership of a device already in the call" if state_key == call.peer_party else \
            "another device of the resident joined the call"
    if state_key != call.peer_party:
        return "a device that is not in this call left"
    return CallInput.HANGUP, Details(reason="user_hangup", detail="the resident left the call")


def decline_input(call: Call) -> tuple[CallInput, Details] | str:
    """The call's input for a decline from the call's peer, or why it is none."""
    if call.direction is not Direction.OUTGOING:
        return "decline of a call the door did not place"
    return CallInput.REJECT, Details(party=None)
