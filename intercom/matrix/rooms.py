"""The residents' rooms that were not configured: remembered in the state directory, and made by the door.

A resident without a ``room_id`` in the config is served in a room of just the two of them: one the resident
invites the door to, or else one the door makes (:func:`create_room_request`). Which room that is, is remembered in
``<state_dir>/rooms.json`` (0600, written atomically and durably), so a restart reuses it and never makes another::

    {"version": 1,
     "rooms": {"@bob:example.org": {"room_id": "!abc:example.org", "made_by_door": true, "invited_at": 1790000000.0}}}

``made_by_door``: the door made the room (it invites the resident again, at most once an hour, after they left);
``invited_at``: the wall-clock time of the door's last invite to it (None: none, or not known). Entries of people
who are no longer residents are kept (they may come back). A damaged file is kept aside as ``rooms.json.damaged``;
the rooms the door is still in are then found again from their members (the adapter adopts a room of just the
door and the resident), and a room is made only for a resident who is in none.

The rooms the door makes (:func:`create_room_request`): private (invite only, not in the directory), a direct
chat with the resident invited, end-to-end encrypted from the first event unless turned off, history visible from
the invite on (``invited``: a ring while the resident has not accepted yet is there once they do; nothing before
the invite is, and there is nothing before it), and power levels that keep its shape: the door 100 (in room
versions where the creator has unlimited power, the creator, which is the door), the resident 50 (a moderator:
they may rename the room, invite, remove others and redact, but not change who may do what, the join rule, the
history visibility, the encryption, or replace the room: each of those stays at 100, where only the door is).
``org.matrix.msc3401.call.member`` is at 0, so every member can post the state event Element Call needs.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nio import RoomPreset, RoomVisibility

from intercom.durable import rename_durably

from .session import write_private_json

log = logging.getLogger(__name__)

ROOMS_FILE = "rooms.json"
#: The door's power level in the rooms it makes (listed only in room versions where the creator is not
#: privileged by the version itself), and the resident's.
DOOR_POWER = 100
RESIDENT_POWER = 50
#: The state event of MatrixRTC (Element Call) membership: every member must be able to post it.
CALL_MEMBER_EVENT = "org.matrix.msc3401.call.member"
#: Room versions (besides numbered versions from 12 on) in which the creators have unlimited power and must not
#: be listed in the power levels.
PRIVILEGED_CREATOR_VERSIONS = frozenset({"org.matrix.hydra.11"})
MEGOLM = "m.megolm.v1.aes-sha2"
HISTORY_VISIBILITY = "invited"


@dataclass(frozen=True, slots=True)
class KnownRoom:
    """A resident's room the door remembers. ``made_by_door``: the door made it (else the resident invited the
    door); ``invited_at``: wall-clock seconds of the door's last invite to the resident there (None: none)."""

    room_id: str
    made_by_door: bool
    invited_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"room_id": self.room_id, "made_by_door": self.made_by_door, "invited_at": self.invited_at}

    @classmethod
    def from_json(cls, data: object) -> KnownRoom:
        if not isinstance(data, dict):
            raise ValueError("an entry is not an object")
        room_id, made, invited = data.get("room_id"), data.get("made_by_door"), data.get("invited_at")
        if not isinstance(room_id, str) or not room_id.startswith("!"):
            raise ValueError("room_id is not a room ID")
        if not isinstance(made, bool):
            raise ValueError("made_by_door is not true or false")
        if invited is not None and (isinstance(invited, bool) or not isinstance(invited, (int, float))
                                    or not math.isfinite(invited)):
            raise ValueError("invited_at is not a time")
        return cls(room_id, made, None if invited is None else float(invited))


def load_rooms(state_dir: Path, *, set_aside: bool = True) -> dict[str, KnownRoom]:
    """The remembered rooms by resident, or {} at first use. A damaged file is kept aside (and {} returned: the
    door finds the rooms it is still in again from their members); ``set_aside=False`` only reads (for checks
    made beside a running door, such as ``intercom doctor``), leaving a damaged file where it is."""
    path = Path(state_dir) / ROOMS_FILE
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("version") != 1 or not isinstance(data.get("rooms"), dict):
            raise ValueError("not a version 1 rooms file")
        rooms = {user: KnownRoom.from_json(entry) for user, entry in data["rooms"].items()}
        if not all(isinstance(user, str) and user.startswith("@") for user in rooms):
            raise ValueError("a key is not a user ID")
        return rooms
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        if not set_aside:
            log.warning("Matrix: the file of remembered rooms %s cannot be read (%s)", path, exc)
            return {}
        aside = path.with_name(path.name + ".damaged")
        log.error("Matrix: the file of remembered rooms %s cannot be read (%s); kept as %s. The door looks for "
                  "the residents' rooms among the rooms it is in", path, exc, aside.name)
        try:
            rename_durably(path, aside)
        except OSError:
            pass
        return {}


def save_rooms(state_dir: Path, rooms: Mapping[str, KnownRoom]) -> None:
    """Write the remembered rooms atomically and durably, readable by the door's user only."""
    write_private_json(Path(state_dir) / ROOMS_FILE,
                       {"version": 1, "rooms": {user: room.to_json() for user, room in sorted(rooms.items())}})


def creator_is_privileged(room_version: str | None) -> bool:
    """Whether rooms of this version give their creator unlimited power (and refuse to list them in the power
    levels): room version 12 and later."""
    if room_version is None:
        return False
    return (room_version.isdigit() and int(room_version) >= 12) or room_version in PRIVILEGED_CREATOR_VERSIONS


def power_levels(door: str, resident: str, room_version: str | None) -> dict[str, Any]:
    """The power levels of a room the door makes (module docstring). The whole ``events`` map is given: the
    homeserver replaces its default map by this one, it does not merge them."""
    users = {resident: RESIDENT_POWER}
    if not creator_is_privileged(room_version):
        users[door] = DOOR_POWER
    return {
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": RESIDENT_POWER,
            "m.room.avatar": RESIDENT_POWER,
            "m.room.topic": RESIDENT_POWER,
            "m.room.pinned_events": RESIDENT_POWER,
            "m.room.canonical_alias": DOOR_POWER,
            "m.room.power_levels": DOOR_POWER,
            "m.room.join_rules": DOOR_POWER,
            "m.room.history_visibility": DOOR_POWER,
            "m.room.guest_access": DOOR_POWER,
            "m.room.encryption": DOOR_POWER,
            "m.room.server_acl": DOOR_POWER,
            "m.room.tombstone": DOOR_POWER,
            CALL_MEMBER_EVENT: 0,
        },
        "events_default": 0,
        "state_default": RESIDENT_POWER,
        "invite": 0,
        "kick": RESIDENT_POWER,
        "ban": RESIDENT_POWER,
        "redact": RESIDENT_POWER,
    }


def create_room_request(door: str, resident: str, *, name: str, encrypted: bool,
                        room_version: str | None) -> dict[str, Any]:
    """The keyword arguments of nio's ``room_create`` for the room the door makes with ``resident``."""
    initial_state: list[dict[str, Any]] = [
        {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "invite"}},
        {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": HISTORY_VISIBILITY}},
        {"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "forbidden"}},
    ]
    if encrypted:
        initial_state.append({"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}})
    return {
        "visibility": RoomVisibility.private,
        "preset": RoomPreset.private_chat,
        "name": name,
        "topic": "The door's intercom: rings, pictures and calls from the front door",
        "invite": [resident],
        "is_direct": True,
        "initial_state": initial_state,
        "power_level_override": power_levels(door, resident, room_version),
        "room_version": room_version,
    }
