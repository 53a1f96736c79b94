"""Owner commands in the room: !open only by the owner, only during or shortly after a call; !snapshot."""

import dataclasses

import pytest

from intercom.core import (
    ButtonPressed,
    CommandSettings,
    Ignored,
    LocalOfferReady,
    MediaFailed,
    OpenDoor,
    PostSnapshot,
    PrepareOffer,
    RoomMembersChanged,
    SendCallEvent,
    SendNotice,
    TextMessageReceived,
    TimerDue,
)
from intercom.core.commands import Command, parse_command

from .helpers import (DOOR, OFFER_SDP, OTHER_ROOM, OWNER, ROOM, STRANGER, answer, connect, hangup, invite, make_core,
                      of, place_call, take_call)


def text(body, *, sender=OWNER, room_id=ROOM, age_ms=500):
    return TextMessageReceived(room_id=room_id, sender=sender, body=body, age_ms=age_ms)


@pytest.mark.parametrize("body, command", [
    ("!open", Command.OPEN), ("  !OPEN please", Command.OPEN), ("!snapshot", Command.SNAPSHOT),
    ("please !open", None), ("!opener", None), ("", None), (None, None), (["!open"], None), ("!open" * 300, None),
])
def test_command_is_the_first_word(body, command):
    assert parse_command(body, CommandSettings()) is command


def test_configured_command_words_are_used():
    assert parse_command("/door", CommandSettings(open_command="/door")) is Command.OPEN
    assert parse_command("!open", CommandSettings(open_command="/door")) is None


def _in_call(**settings):
    """A visitor rang and the owner answered: the door's own call, connected."""
    core = make_core(**settings)
    call_id, _ = place_call(core, now=1.0)
    core.handle(answer(call_id), 1.5)
    connect(core, call_id, 2.0)
    return core, call_id


def test_owner_opens_the_door_during_a_call_and_it_is_acknowledged():
    core, call_id = _in_call()
    actions = core.handle(text("!open"), 10.0)
    assert of(actions, OpenDoor) == [OpenDoor(seconds=3.0, by=OWNER, call_id=call_id)]
    (notice,) = of(actions, SendNotice)
    assert notice.room_id == ROOM and "opened" in notice.text


def test_door_opens_within_the_window_after_a_call_and_not_after():
    core, call_id = _in_call()
    core.handle(hangup(call_id), 20.0)
    assert of(core.handle(text("!open"), 79.0), OpenDoor)
    actions = core.handle(text("!open"), 81.0)
    assert of(actions, OpenDoor) == []
    assert "only during a call" in of(actions, SendNotice)[0].text


def test_door_opens_while_our_call_rings_and_after_a_missed_ring():
    """Owners on Element X get the picture but cannot take the call: they can still open for the visitor."""
    core = make_core(ring_timeout=30)
    core.handle(ButtonPressed(), 1.0)
    assert of(core.handle(text("!open"), 2.0), OpenDoor)
    core.handle(TimerDue(), 40.0)  # the ring times out at 31
    assert of(core.handle(text("!open"), 60.0), OpenDoor)


def test_no_open_without_any_call():
    core = make_core()
    actions = core.handle(text("!open"), 5.0)
    assert of(actions, OpenDoor) == [] and of(actions, SendNotice)


@pytest.mark.parametrize("event, why", [
    (text("!open", sender=STRANGER), "not from a resident"),
    (text("!open", room_id=OTHER_ROOM), "not from a resident in their room"),
    (text("!open", age_ms=31_000), "too old"),
    (text("!open", age_ms=None), "unknown age"),
    (text("!snapshot", sender=STRANGER), "not from a resident"),
])
def test_commands_from_anyone_else_or_from_history_do_nothing(event, why):
    core, _ = _in_call()
    actions = core.handle(event, 10.0)
    assert of(actions, OpenDoor) == [] and of(actions, SendNotice) == [] and of(actions, PostSnapshot) == []
    assert why in of(actions, Ignored)[0].reason


def test_our_own_messages_are_never_commands():
    core, _ = _in_call()
    assert core.handle(text("!open", sender=DOOR), 10.0) == []


def test_snapshot_on_request_and_on_every_ring_right_after_its_invite():
    core = make_core()
    assert of(core.handle(text("!snapshot"), 5.0), PostSnapshot) == [
        PostSnapshot(room_id=ROOM, reason="request", mention=OWNER)]
    actions = core.handle(ButtonPressed(), 6.0)
    assert of(actions, PostSnapshot) == []  # nothing may slow the call down before its invite is out
    call_id = of(actions, PrepareOffer)[0].call_id
    actions = core.handle(LocalOfferReady(call_id=call_id, sdp=OFFER_SDP, stream_id="s"), 6.1)
    kinds = [type(a).__name__ if not isinstance(a, SendCallEvent) else a.event_type for a in actions]
    assert kinds.index("PostSnapshot") == kinds.index("m.call.invite") + 1, kinds
    assert of(actions, PostSnapshot) == [PostSnapshot(room_id=ROOM, reason="ring", mention=OWNER, ring_id=call_id)]


def test_a_ring_whose_call_never_got_to_its_invite_still_posts_the_picture():
    core = make_core()
    call_id = of(core.handle(ButtonPressed(), 6.0), PrepareOffer)[0].call_id
    actions = core.handle(MediaFailed(call_id=call_id, detail="no microphone"), 6.5)
    assert of(actions, PostSnapshot) == [PostSnapshot(room_id=ROOM, reason="ring", mention=OWNER, ring_id=call_id)]


def test_ordinary_chat_is_not_reported():
    core, _ = _in_call()
    assert core.handle(text("hello, who is there?"), 10.0) == []


def test_an_owner_started_call_never_opens_the_door_during_or_after_it():
    """Nobody rang: the owner calling the door to look outside is no reason to open it."""
    core = make_core()
    take_call(core, "c1", now=1.0)
    connect(core, "c1", 2.0)
    actions = core.handle(text("!open"), 5.0)
    assert of(actions, OpenDoor) == [] and "someone rang" in of(actions, SendNotice)[0].text
    core.handle(hangup("c1"), 10.0)
    assert of(core.handle(text("!open"), 12.0), OpenDoor) == []


def test_a_failed_call_nobody_rang_for_opens_nothing():
    """An invite with SDP the media side cannot use, its failure, then !open: the door stays shut."""
    core = make_core()
    core.handle(invite("c1", sdp="junk"), 1.0)
    core.handle(MediaFailed(call_id="c1", detail="the offer is not valid SDP"), 1.2)
    assert of(core.handle(text("!open"), 2.0), OpenDoor) == []


def test_a_setting_lets_the_owners_own_calls_open_the_door():
    core = make_core()
    core.settings = dataclasses.replace(core.settings, commands=CommandSettings(open_after_owner_call=True))
    take_call(core, "c1", now=1.0)
    connect(core, "c1", 2.0)
    assert of(core.handle(text("!open"), 5.0), OpenDoor) == [OpenDoor(seconds=3.0, by=OWNER, call_id="c1")]


def test_one_ring_opens_the_door_at_most_openings_per_ring_times():
    core, call_id = _in_call()
    opened = [bool(of(core.handle(text("!open"), 10.0 + n), OpenDoor)) for n in range(5)]
    assert opened == [True, True, True, False, False]
    assert "already opened 3 times" in of(core.handle(text("!open"), 20.0), SendNotice)[0].text
    core.handle(hangup(call_id), 21.0)
    core.handle(TimerDue(), 40.0)
    next_call, _ = place_call(core, now=41.0)  # a new ring: a new allowance
    assert of(core.handle(text("!open"), 42.0), OpenDoor) == [OpenDoor(seconds=3.0, by=OWNER, call_id=next_call)]


@pytest.mark.parametrize("joined, join_rule", [({DOOR, OWNER, STRANGER}, None), ({DOOR, OWNER}, "public")],
                         ids=["a third member", "a public room"])
def test_commands_obey_the_room_rules_of_calls(joined, join_rule):
    """A picture of the front door goes only where a call may go; the door opens only from there too."""
    core, _ = _in_call()
    actions = core.handle(RoomMembersChanged(room_id=ROOM, joined=frozenset(joined), join_rule=join_rule), 5.0)
    for command in ("!snapshot", "!open"):
        actions = core.handle(text(command), 6.0)
        assert of(actions, PostSnapshot) == [] and of(actions, OpenDoor) == []
        assert "refused" in of(actions, Ignored)[0].reason


def test_a_command_delivered_twice_is_acted_on_once():
    core, _ = _in_call()
    message = dataclasses.replace(text("!open"), event_id="$open1")
    assert of(core.handle(message, 10.0), OpenDoor)
    repeated = core.handle(message, 10.5)
    assert of(repeated, OpenDoor) == [] and "handled already" in of(repeated, Ignored)[0].reason
