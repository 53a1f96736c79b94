"""Builders for driving a DoorCore in tests: events from the owner, and filters over the actions it returns."""

from __future__ import annotations

from intercom.core import (
    ButtonPressed,
    CallEventReceived,
    CallTimings,
    CoreSettings,
    DoorCore,
    HomeserverConnectionChanged,
    LocalAnswerReady,
    LocalOfferReady,
    MediaState,
    MediaStateChanged,
    RoomMembersChanged,
    SendCallEvent,
)

DOOR = "@door:example.org"
OWNER = "@owner:example.org"
STRANGER = "@stranger:example.org"
ROOM = "!room:example.org"
OTHER_ROOM = "!elsewhere:example.org"
DOOR_PARTY = "DOORPARTY"
PHONE = "PHONE1"
OFFER_SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\nm=video 9 UDP/TLS/RTP/SAVPF 97\r\n"
ANSWER_SDP = OFFER_SDP.replace("o=- 1 1", "o=- 2 2")
TIMINGS = CallTimings()


def make_core(*, ready: bool = True, tokens: list[str] | None = None, pins=None, **timings: float) -> DoorCore:
    """A door core; ``ready`` puts it online in a valid two-person room."""
    counter = iter(tokens or (f"{n:04d}" for n in range(10_000)))
    settings = CoreSettings(user_id=DOOR, owner=OWNER, room_id=ROOM, party_id=DOOR_PARTY,
                            timings=CallTimings(**timings))
    core = DoorCore(settings, new_token=lambda: next(counter), pins=pins)
    if ready:
        core.handle(HomeserverConnectionChanged(online=True), 0.0)
        core.handle(RoomMembersChanged(room_id=ROOM, joined=frozenset({DOOR, OWNER})), 0.0)
    return core


def received(event_type: str, content: dict, *, sender: str = OWNER, room_id: str = ROOM,
             age_ms: int | None = 100, **kw) -> CallEventReceived:
    return CallEventReceived(room_id=room_id, sender=sender, event_type=event_type, content=content, age_ms=age_ms,
                             **kw)


def common(call_id: str, party: str | None = PHONE, version: object = "1") -> dict:
    content: dict = {"call_id": call_id, "version": version}
    if party is not None:
        content["party_id"] = party
    return content


def invite(call_id: str = "1700000000000abcdef", *, party: str | None = PHONE, version: object = "1",
           lifetime: int = 60000, invitee: str | None = DOOR, sdp: str = OFFER_SDP, **kw) -> CallEventReceived:
    content = {**common(call_id, party, version), "lifetime": lifetime, "offer": {"type": "offer", "sdp": sdp}}
    if invitee is not None:
        content["invitee"] = invitee
    return received("m.call.invite", content, **kw)


def answer(call_id: str, *, party: str | None = PHONE, version: object = "1", **kw) -> CallEventReceived:
    return received("m.call.answer", {**common(call_id, party, version),
                                      "answer": {"type": "answer", "sdp": ANSWER_SDP}}, **kw)


def hangup(call_id: str, *, party: str | None = PHONE, version: object = "1", reason: str = "user_hangup",
           **kw) -> CallEventReceived:
    return received("m.call.hangup", {**common(call_id, party, version), "reason": reason}, **kw)


def reject(call_id: str, *, party: str | None = PHONE, **kw) -> CallEventReceived:
    return received("m.call.reject", common(call_id, party), **kw)


def candidates(call_id: str, *cands: dict, party: str | None = PHONE, version: object = "1",
               **kw) -> CallEventReceived:
    return received("m.call.candidates", {**common(call_id, party, version), "candidates": list(cands)}, **kw)


def cand(n: int = 1) -> dict:
    return {"candidate": f"candidate:{n} 1 udp 2130706431 127.0.0.1 {5000 + n} typ host", "sdpMid": "0",
            "sdpMLineIndex": 0}


END = {"candidate": ""}


def sends(actions: list, event_type: str | None = None) -> list[SendCallEvent]:
    """The SendCallEvent actions, optionally of one event type."""
    return [a for a in actions if isinstance(a, SendCallEvent) and (event_type is None or a.event_type == event_type)]


def of(actions: list, kind: type) -> list:
    return [a for a in actions if isinstance(a, kind)]


def place_call(core: DoorCore, now: float = 1.0) -> tuple[str, list]:
    """Press and let the media side produce the offer: returns our call_id and the actions of the offer step."""
    from intercom.core import PrepareOffer

    (prep,) = of(core.handle(ButtonPressed(), now), PrepareOffer)
    actions = core.handle(LocalOfferReady(call_id=prep.call_id, sdp=OFFER_SDP, stream_id="stream0"), now + 0.1)
    return prep.call_id, actions


def take_call(core: DoorCore, call_id: str = "1700000000000abcdef", now: float = 1.0, **invite_kw) -> list:
    """The owner calls and the media side answers: returns the actions of the answer step."""
    core.handle(invite(call_id, **invite_kw), now)
    return core.handle(LocalAnswerReady(call_id=call_id, sdp=ANSWER_SDP, stream_id="stream0"), now + 0.1)


def connect(core: DoorCore, call_id: str, now: float) -> list:
    return core.handle(MediaStateChanged(call_id=call_id, state=MediaState.CONNECTED), now)
