"""The residents' rooms without a real homeserver: the household in the settings, the file of remembered rooms, and
the room the door asks the homeserver to make."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from nio import RoomPreset, RoomVisibility

from intercom.core.household import Resident
from intercom.matrix import Credential, MatrixSettings, ResidentRoom
from intercom.matrix.rooms import (CALL_MEMBER_EVENT, KnownRoom, create_room_request, creator_is_privileged,
                                   load_rooms, power_levels, save_rooms)

DOOR, ALICE, BOB = "@door:example.org", "@alice:example.org", "@bob:example.org"


def settings(**household) -> MatrixSettings:
    return MatrixSettings(homeserver="https://example.org", user_id=DOOR, state_dir="/nonexistent",
                          credential=Credential("password", "pw"), device_name="test door", **household)


def test_the_household_from_either_form():
    one = settings(owner=ALICE, room_id="!a:example.org")
    assert one.household == (ResidentRoom(ALICE, "!a:example.org"),)
    assert one.configured_rooms() == {"!a:example.org": ALICE}
    alone = settings(room_id="!x:example.org")
    assert alone.household == () and alone.configured_rooms() == {"!x:example.org": None}
    # Pairs, ResidentRooms and the core's Residents are all taken; an empty room ID is none.
    many = settings(residents=((ALICE, "!a:example.org"), Resident(user_id=BOB, room_id=None)))
    assert many.household == (ResidentRoom(ALICE, "!a:example.org"), ResidentRoom(BOB, None))
    assert many.resident_ids == (ALICE, BOB) and many.configured_rooms() == {"!a:example.org": ALICE}
    assert settings(residents=((ALICE, ""),)).household == (ResidentRoom(ALICE, None),)


@pytest.mark.parametrize("household", [
    {"residents": ((ALICE, None), (ALICE, "!a:x"))},  # twice
    {"residents": ((DOOR, None),)},  # the door itself
    {"residents": ((ALICE, "!a:x"), (BOB, "!a:x"))},  # one room for two
    {"residents": ((ALICE, None),), "owner": BOB},  # both forms, disagreeing
])
def test_a_household_that_cannot_be(household):
    with pytest.raises(ValueError):
        settings(**household)


def test_remembered_rooms_are_written_privately_and_read_back(tmp_path: Path):
    rooms = {ALICE: KnownRoom("!a:x", made_by_door=True, invited_at=1790000000.5), BOB: KnownRoom("!b:x", False)}
    save_rooms(tmp_path, rooms)
    path = tmp_path / "rooms.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["version"] == 1
    assert load_rooms(tmp_path) == rooms
    assert load_rooms(tmp_path / "none") == {}


@pytest.mark.parametrize("content", [
    "{not json", "[]", '{"version": 2, "rooms": {}}', '{"version": 1, "rooms": {"@a:x": {"room_id": "nope"}}}',
    '{"version": 1, "rooms": {"a:x": {"room_id": "!r:x", "made_by_door": true, "invited_at": null}}}',
    '{"version": 1, "rooms": {"@a:x": {"room_id": "!r:x", "made_by_door": 1, "invited_at": null}}}',
])
def test_a_damaged_rooms_file_is_kept_aside(tmp_path: Path, content: str):
    (tmp_path / "rooms.json").write_text(content)
    assert load_rooms(tmp_path, set_aside=False) == {} and (tmp_path / "rooms.json").exists()  # a check only reads
    assert load_rooms(tmp_path) == {}
    assert (tmp_path / "rooms.json.damaged").read_text() == content and not (tmp_path / "rooms.json").exists()


def test_the_room_the_door_makes():
    request = create_room_request(DOOR, ALICE, name="Doorbell", encrypted=True, room_version="11")
    assert request["visibility"] is RoomVisibility.private and request["preset"] is RoomPreset.private_chat
    assert request["invite"] == [ALICE] and request["is_direct"] is True and request["name"] == "Doorbell"
    state = {e["type"]: e["content"] for e in request["initial_state"]}
    assert state["m.room.encryption"] == {"algorithm": "m.megolm.v1.aes-sha2"}
    assert state["m.room.join_rules"] == {"join_rule": "invite"}
    assert state["m.room.history_visibility"] == {"history_visibility": "invited"}
    levels = request["power_level_override"]
    assert levels["users"] == {DOOR: 100, ALICE: 50}
    assert levels["events"][CALL_MEMBER_EVENT] == 0
    for locked in ("m.room.power_levels", "m.room.join_rules", "m.room.encryption", "m.room.history_visibility",
                   "m.room.tombstone"):
        assert levels["events"][locked] == 100
    plain = create_room_request(DOOR, ALICE, name="Doorbell", encrypted=False, room_version=None)
    assert "m.room.encryption" not in {e["type"] for e in plain["initial_state"]}


def test_rooms_of_version_12_do_not_list_their_creator():
    assert [creator_is_privileged(v) for v in ("10", "11", "12", "13", "org.matrix.hydra.11", None, "x")] == [
        False, False, True, True, True, False, False]
    assert power_levels(DOOR, ALICE, "12")["users"] == {ALICE: 50}
