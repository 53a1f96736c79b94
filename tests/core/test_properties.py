"""Property tests: two doors wired through a simulated room, and hostile input against one door.

The simulated room is one ordered log of events (a Matrix room is totally ordered); each side reads it at its own
pace, so Hypothesis picks arbitrary delays and interleavings of deliveries, presses and media completions.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intercom.core import (
    ApplyAnswer,
    ButtonPressed,
    CallEventReceived,
    CallState,
    CallTimings,
    CloseMedia,
    CoreSettings,
    DoorCore,
    HangupRequested,
    HomeserverConnectionChanged,
    Ignored,
    LocalAnswerReady,
    LocalOfferReady,
    MediaFailed,
    MediaState,
    MediaStateChanged,
    NegotiationAnswerReady,
    OpenDoor,
    PrepareAnswer,
    PrepareNegotiationAnswer,
    PrepareOffer,
    RoomMembersChanged,
    SendCallEvent,
    TextMessageReceived,
    TimerDue,
)
from intercom.core.messages import _OPAQUE_ID

from .helpers import DOOR, OFFER_SDP, OWNER, ROOM, STRANGER, make_core

SDP = OFFER_SDP
A, B = "@a:example.org", "@b:example.org"


@dataclass
class Side:
    user: str
    core: DoorCore
    cursor: int = 0
    media: deque = field(default_factory=deque)
    remote_set: set = field(default_factory=set)
    closed: set = field(default_factory=set)


class Wire:
    """Two doors, each the other's owner, in one room."""

    def __init__(self, a_first: bool, timings: CallTimings) -> None:
        def side(user, peer, party, prefix):
            counter = iter(range(1, 10_000))
            core = DoorCore(CoreSettings(user_id=user, owner=peer, room_id=ROOM, party_id=party, timings=timings),
                            new_token=lambda: f"{prefix}{next(counter):04d}")
            return Side(user, core)

        self.sides = {"a": side(A, B, "PA", "1" if a_first else "2"), "b": side(B, A, "PB", "2" if a_first else "1")}
        self.log: list[tuple[str, str, dict]] = []
        self.connected: set[str] = set()
        self.now = 0.0
        for s in self.sides.values():
            self.feed(s, HomeserverConnectionChanged(online=True))
            self.feed(s, RoomMembersChanged(room_id=ROOM, joined=frozenset({A, B})))

    def feed(self, side: Side, event) -> None:
        for action in side.core.handle(event, self.now):
            assert not (isinstance(action, Ignored) and action.reason.startswith("internal error")), action
            match action:
                case SendCallEvent():
                    json.dumps(action.content)  # always JSON-ready
                    self.log.append((side.user, action.event_type, dict(action.content)))
                case PrepareOffer() | PrepareAnswer() | PrepareNegotiationAnswer():
                    side.media.append(action)
                case ApplyAnswer():
                    side.remote_set.add(action.call_id)
                    self.maybe_connect(action.call_id)
                case CloseMedia():
                    side.closed.add(action.call_id)
        self.check_safety()

    def deliver(self, name: str) -> bool:
        side = self.sides[name]
        if side.cursor >= len(self.log):
            return False
        sender, event_type, content = self.log[side.cursor]
        side.cursor += 1
        self.feed(side, CallEventReceived(room_id=ROOM, sender=sender, event_type=event_type, content=content,
                                          age_ms=0))
        return True

    def run_media(self, name: str, fail: bool = False) -> bool:
        side = self.sides[name]
        if not side.media:
            return False
        op = side.media.popleft()
        if fail:
            self.feed(side, MediaFailed(call_id=op.call_id, detail="simulated"))
        elif isinstance(op, PrepareOffer):
            self.feed(side, LocalOfferReady(call_id=op.call_id, sdp=SDP, stream_id="s"))
        elif isinstance(op, PrepareAnswer):
            side.remote_set.add(op.call_id)
            self.feed(side, LocalAnswerReady(call_id=op.call_id, sdp=SDP, stream_id="s"))
            self.maybe_connect(op.call_id)
        else:
            self.feed(side, NegotiationAnswerReady(call_id=op.call_id, sdp=SDP))
        return True

    def maybe_connect(self, call_id: str) -> None:
        """Media connects once both ends have both descriptions and neither closed it."""
        ends = self.sides.values()
        if call_id in self.connected or not all(call_id in s.remote_set and call_id not in s.closed for s in ends):
            return
        self.connected.add(call_id)
        for s in ends:
            self.feed(s, MediaStateChanged(call_id=call_id, state=MediaState.CONNECTED))

    def check_safety(self) -> None:
        live = {s.core.call_id for s in self.sides.values() if s.core.state is CallState.CONNECTED}
        assert len(live) <= 1, f"two connected calls: {live}"

    def drain(self) -> None:
        progress = True
        while progress:
            progress = False
            for name in ("a", "b"):
                progress |= self.deliver(name)
                progress |= self.run_media(name)


STEPS = st.sampled_from(["press a", "press b", "deliver a", "deliver b", "media a", "media b"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a_first=st.booleans(), steps=st.lists(STEPS, max_size=40))
def test_two_doors_pressing_at_any_time_end_in_one_agreed_call(a_first, steps):
    """With no timeouts in play, any press leads to exactly one connected call that both sides agree on."""
    wire = Wire(a_first, CallTimings())
    pressed = False
    for step in steps:
        verb, name = step.split()
        wire.now += 0.01
        if verb == "press":
            pressed = True
            wire.feed(wire.sides[name], ButtonPressed())
        elif verb == "deliver":
            wire.deliver(name)
        else:
            wire.run_media(name)
    wire.drain()
    states = {n: (s.core.state, s.core.call_id) for n, s in wire.sides.items()}
    if pressed:
        assert states["a"] == states["b"] and states["a"][0] is CallState.CONNECTED, states
    else:
        assert all(state is CallState.IDLE for state, _ in states.values())


HOSTILE_STEPS = st.one_of(
    STEPS,
    st.sampled_from(["fail a", "fail b", "hangup a", "hangup b", "timer"]),
    st.floats(min_value=0.0, max_value=120.0),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a_first=st.booleans(), steps=st.lists(HOSTILE_STEPS, max_size=50),
       ring=st.sampled_from([10.0, 60.0]), connect=st.sampled_from([3.0, 15.0]))
def test_with_timeouts_failures_and_hangups_there_is_never_more_than_one_call(a_first, steps, ring, connect):
    """Time jumps, media failures and local hangups in any order: never two calls, and both sides agree."""
    wire = Wire(a_first, CallTimings(ring_timeout=ring, connect_timeout=connect, prepare_timeout=5.0))
    for step in steps:
        if isinstance(step, float):
            wire.now += step
            continue
        verb, _, name = step.partition(" ")
        side = wire.sides.get(name)
        match verb:
            case "press":
                wire.feed(side, ButtonPressed())
            case "deliver":
                wire.deliver(name)
            case "media" | "fail":
                wire.run_media(name, fail=verb == "fail")
            case "hangup":
                wire.feed(side, HangupRequested())
            case "timer":
                for s in wire.sides.values():
                    wire.feed(s, TimerDue())
    wire.drain()
    connected = {n: s.core.call_id for n, s in wire.sides.items() if s.core.state is CallState.CONNECTED}
    if connected:
        assert set(connected) == {"a", "b"} and len(set(connected.values())) == 1, connected


# --- hostile input against one door ----------------------------------------------------------------------------------

JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63), st.floats(allow_nan=True),
                      st.text(max_size=30), st.sampled_from(["1", "0", "offer", "answer", "", "candidate:1", SDP]))
JSON = st.recursive(JSON_LEAF, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.sampled_from(["type", "sdp", "candidate", "sdpMid", "sdpMLineIndex", "x"]) | st.text(max_size=8), inner,
    max_size=4), max_leaves=12)
CALL_IDS = st.sampled_from(["c1", "c2", "z0001", "bad id", "", "x" * 300]) | st.text(max_size=12)
EVENT_TYPES = st.sampled_from(["m.call.invite", "m.call.candidates", "m.call.answer", "m.call.select_answer",
                               "m.call.reject", "m.call.hangup", "m.call.negotiate",
                               "m.call.sdp_stream_metadata_changed", "m.call.unknown", "m.room.message"]) | st.text(
    max_size=20)


@st.composite
def hostile_content(draw):
    content = draw(st.dictionaries(st.sampled_from(
        ["call_id", "party_id", "version", "lifetime", "invitee", "offer", "answer", "candidates", "reason",
         "description", "selected_party_id", "sdp_stream_metadata"]), JSON, max_size=8))
    if draw(st.booleans()):  # often well-formed enough to get deep into the core
        content.update(call_id=draw(CALL_IDS), party_id=draw(st.sampled_from(["P", "Q", None])),
                       version=draw(st.sampled_from(["1", 0, 1, None, "x"])))
        if draw(st.booleans()):
            content[draw(st.sampled_from(["offer", "answer", "description"]))] = {
                "type": draw(st.sampled_from(["offer", "answer", "x"])), "sdp": SDP}
        if draw(st.booleans()):
            content["candidates"] = draw(st.lists(st.sampled_from(
                [{"candidate": ""}, {"candidate": "candidate:1 1 udp 1 1.1.1.1 1 typ host", "sdpMid": "0"}, {}]),
                max_size=3))
    return content


@st.composite
def hostile_event(draw, call_ids: list[str]):
    kind = draw(st.sampled_from(["call"] * 6 + ["text", "press", "media", "members", "online", "timer", "hangup"]))
    known = st.sampled_from(call_ids) if call_ids else CALL_IDS
    match kind:
        case "call":
            return CallEventReceived(
                room_id=draw(st.sampled_from([ROOM, "!other:example.org"])),
                sender=draw(st.sampled_from([OWNER, STRANGER, DOOR, "", "not-a-user"])),
                event_type=draw(EVENT_TYPES), content=draw(hostile_content()),
                age_ms=draw(st.none() | st.integers(-(2**40), 2**40)))
        case "text":
            return TextMessageReceived(
                room_id=draw(st.sampled_from([ROOM, "!other:example.org"])),
                sender=draw(st.sampled_from([OWNER, STRANGER, DOOR])),
                body=draw(st.sampled_from(["!open", "!snapshot", "!OPEN now", "hi"]) | JSON),
                age_ms=draw(st.none() | st.integers(-(2**40), 2**40)))
        case "press":
            return ButtonPressed()
        case "media":
            call_id = draw(known | CALL_IDS)
            return draw(st.sampled_from([
                LocalOfferReady(call_id=call_id, sdp=SDP), LocalAnswerReady(call_id=call_id, sdp=SDP),
                NegotiationAnswerReady(call_id=call_id, sdp=SDP), MediaFailed(call_id=call_id),
                MediaStateChanged(call_id=call_id, state=MediaState.CONNECTED),
                MediaStateChanged(call_id=call_id, state=MediaState.DISCONNECTED),
                MediaStateChanged(call_id=call_id, state=MediaState.FAILED)]))
        case "members":
            return RoomMembersChanged(room_id=ROOM, joined=frozenset(draw(st.sets(st.sampled_from(
                [DOOR, OWNER, STRANGER]), max_size=3))), join_rule=draw(st.sampled_from([None, "invite", "public"])))
        case "online":
            return HomeserverConnectionChanged(online=draw(st.booleans()))
        case "timer":
            return TimerDue()
        case _:
            return HangupRequested()


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hostile_sequences_never_raise_and_never_answer_anyone_but_the_owner(data):
    """Nor open the door for anyone else."""
    core = make_core()
    now = 0.0
    call_ids: list[str] = []
    for _ in range(data.draw(st.integers(1, 40))):
        event = data.draw(hostile_event(call_ids))
        now += data.draw(st.floats(0.0, 30.0))
        actions = core.handle(event, now)
        for action in actions:
            assert not (isinstance(action, Ignored) and action.reason.startswith("internal error")), action
            if isinstance(action, PrepareOffer):
                call_ids.append(action.call_id)
            if isinstance(action, OpenDoor):
                assert isinstance(event, TextMessageReceived) and event.sender == OWNER and event.room_id == ROOM
            if isinstance(action, PrepareAnswer):
                # The only way to an answer: a live owner invite in the configured room, addressed to us or anyone.
                assert isinstance(event, CallEventReceived) and event.event_type == "m.call.invite"
                assert event.sender == OWNER and event.room_id == ROOM
                assert event.content.get("invitee") in (None, DOOR)
                call_ids.append(action.call_id)
            if isinstance(action, SendCallEvent):
                content = action.content
                json.dumps(content)
                assert content["version"] == "1" and content["party_id"] == "DOORPARTY"
                assert _OPAQUE_ID.fullmatch(content["call_id"])
                assert action.event_type != "m.call.answer" or content["call_id"] in call_ids
        assert core.state is CallState.IDLE or core.call_id in call_ids
