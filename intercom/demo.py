"""``intercom demo``: a doorbell press becoming a call, shown step by step.

For now this runs the real call core on both ends (the door, and the owner's phone played by a second core that
answers the door) through an in-memory room, with media simulated as "connects when both sides have both
descriptions". It prints the timeline and then says what the full demo will add: a local Synapse, real aiortc
media from the synthetic camera and ALSA file devices, and the front panel on mock GPIO.
"""

from __future__ import annotations

import sys
from collections import deque
from typing import TextIO

from intercom.core import (
    ApplyAnswer,
    ButtonPressed,
    CallEnded,
    CallEventReceived,
    CoreSettings,
    DoorCore,
    HangupRequested,
    HomeserverConnectionChanged,
    LocalAnswerReady,
    LocalOfferReady,
    MediaState,
    MediaStateChanged,
    PrepareAnswer,
    PrepareOffer,
    PressFeedback,
    RoomMembersChanged,
    SendCallEvent,
    SetLeds,
)

ROOM = "!demo:localhost"
DOOR, PHONE = "@door:localhost", "@owner:localhost"
SDP = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\nm=video 9 UDP/TLS/RTP/SAVPF 97\r\n"

STILL_MISSING = """\
Still to come in this demo (see the open issues):
  - a local Synapse homeserver and the Matrix adapter carrying these events for real,
  - real aiortc media: the synthetic camera and ALSA file devices, with frames and audio level counted,
  - the front panel on gpiozero's MockFactory, pressed through the service's control socket."""


class _SimulatedRoom:
    """Two cores, one ordered room, instant delivery, simulated media."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.now = 0.0
        self.cores = {
            name: DoorCore(CoreSettings(user_id=user, owner=peer, room_id=ROOM, party_id=name.upper()))
            for name, user, peer in (("door", DOOR, PHONE), ("phone", PHONE, DOOR))
        }
        self.users = {"door": DOOR, "phone": PHONE}
        self.queue: deque[tuple[str, object]] = deque()
        self.ready: dict[str, set[str]] = {"door": set(), "phone": set()}
        self.connected: set[str] = set()
        for name in self.cores:
            self.queue.append((name, HomeserverConnectionChanged(online=True)))
            self.queue.append((name, RoomMembersChanged(room_id=ROOM, joined=frozenset({DOOR, PHONE}))))
        self.run()

    def say(self, who: str, what: str) -> None:
        print(f"{self.now * 1000:8.0f} ms  {who:<5}  {what}", file=self.out)

    def run(self) -> None:
        while self.queue:
            name, event = self.queue.popleft()
            self.now += 0.005
            for action in self.cores[name].handle(event, self.now):
                self.carry_out(name, action)

    def carry_out(self, name: str, action: object) -> None:
        other = "phone" if name == "door" else "door"
        match action:
            case SendCallEvent(event_type=kind, content=content):
                self.say(name, f"sends {kind}")
                self.queue.append((other, CallEventReceived(room_id=ROOM, sender=self.users[name], event_type=kind,
                                                            content=content, age_ms=0)))
            case PrepareOffer(call_id=call_id):
                self.queue.append((name, LocalOfferReady(call_id=call_id, sdp=SDP)))
            case PrepareAnswer(call_id=call_id):
                self.ready[name].add(call_id)
                self.queue.append((name, LocalAnswerReady(call_id=call_id, sdp=SDP)))
                self.media_check(call_id)
            case ApplyAnswer(call_id=call_id):
                self.ready[name].add(call_id)
                self.media_check(call_id)
            case SetLeds(state=state) if name == "door":
                self.say(name, f"LEDs show {state.value}")
            case PressFeedback(accepted=accepted):
                self.say(name, "button press acknowledged" if accepted else "button press refused")
            case CallEnded(summary=s):
                self.say(name, f"call {s.direction.value} ended: {s.outcome.value} ({s.reason}), "
                               f"{s.duration:.1f} s in call")

    def media_check(self, call_id: str) -> None:
        if call_id not in self.connected and all(call_id in ready for ready in self.ready.values()):
            self.connected.add(call_id)
            self.say("media", "connected (simulated)")
            for name in self.cores:
                self.queue.append((name, MediaStateChanged(call_id=call_id, state=MediaState.CONNECTED)))

    def act(self, name: str, event: object, label: str, after: float = 0.0) -> None:
        self.now += after
        self.say(name, label)
        self.queue.append((name, event))
        self.run()


def main(out: TextIO = sys.stdout) -> int:
    print("Doorbell demo: the call core on both ends, in a simulated room\n", file=out)
    room = _SimulatedRoom(out)
    room.act("door", ButtonPressed(), "visitor presses the doorbell")
    room.act("phone", HangupRequested(), "owner hangs up", after=5.0)
    print(file=out)
    room.act("phone", ButtonPressed(), "owner calls the door from the phone", after=2.0)
    room.act("phone", HangupRequested(), "owner hangs up", after=5.0)
    print("\n" + STILL_MISSING, file=out)
    return 0
