"""Who the door is on Matrix: the adapter's settings, built from the config file's ``[matrix]`` section and its
household (which hold their defaults and check them: a valid homeserver URL and user IDs, exactly one credential).

The household is the people the door serves, each in a room of two with the door (legacy Matrix calls are 1:1):
:attr:`MatrixSettings.residents`. The older single-person form, ``owner`` in ``room_id``, is a household of one
and still works; :attr:`MatrixSettings.household` gives the residents for either form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

#: The name of the rooms the door makes (what the resident's app shows on the invite).
DEFAULT_ROOM_NAME = "Doorbell"


@dataclass(frozen=True, slots=True)
class Credential:
    """How the door proves who it is: its password, or an access token. The secret stays out of ``repr``."""

    kind: Literal["password", "access_token"]
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ResidentRoom:
    """One resident as the Matrix side sees them: their user ID, and the room configured for them (None: the door
    uses a room the resident invites it to, or makes one; see :mod:`intercom.matrix.rooms`)."""

    user_id: str
    room_id: str | None = None

    @classmethod
    def of(cls, item: Any) -> ResidentRoom:
        """From a ``ResidentRoom``, a ``(user_id, room_id)`` pair, or anything with ``user_id`` and ``room_id``
        attributes (the core's :class:`~intercom.core.household.Resident`)."""
        if isinstance(item, ResidentRoom):
            return item
        if isinstance(item, tuple):
            user_id, room_id = item
        else:
            user_id, room_id = item.user_id, item.room_id
        return cls(user_id, room_id or None)


@dataclass(frozen=True, slots=True, kw_only=True)
class MatrixSettings:
    """The door's account, the people it serves and their rooms, and where its session and E2EE store live.

    Give the household as ``residents`` (each a :class:`ResidentRoom`, a ``(user_id, room_id or None)`` pair, or a
    core ``Resident``), or as the single ``owner`` in ``room_id`` (a household of one). With neither (tests of the
    adapter alone), the door joins ``room_id`` when invited and gives room keys to every device.
    """

    homeserver: str  #: base URL, e.g. ``https://matrix.example.org``
    user_id: str  #: the door's own account
    state_dir: Path | str  #: session, E2EE store, trust pins, remembered rooms (created ``0700``)
    credential: Credential
    device_name: str  #: the name of the device a password login creates
    #: The single-person form: the one room the door joins when invited, and calls in.
    room_id: str = ""
    #: The single-person form: the owner, whose keys the door reads and whose trusted devices alone get the room
    #: keys (:mod:`~intercom.matrix.trust`). None (and no ``residents``): tests of the adapter alone, keys to every
    #: device.
    owner: str | None = None
    #: The household, in the config's order (the first is who ``trust.json`` belongs to). Each resident with a
    #: ``room_id`` is served there (the door joins it when invited); one without is served in a room of two they
    #: invite the door to, or else in a private room the door makes for them.
    residents: tuple[ResidentRoom, ...] = ()
    #: The name of the rooms the door makes.
    room_name: str = DEFAULT_ROOM_NAME
    #: Whether the rooms the door makes are end-to-end encrypted (Megolm from the first event). Encrypted is the
    #: default; an unencrypted room rings more reliably on phones (push rules can read the invite) but the
    #: homeserver then reads the calls' SDP and the door's notices.
    encrypt_rooms: bool = True

    def __post_init__(self) -> None:
        residents = tuple(ResidentRoom.of(r) for r in self.residents)
        object.__setattr__(self, "residents", residents)
        ids = [r.user_id for r in residents]
        if len(set(ids)) != len(ids):
            raise ValueError("each resident is listed once")
        if self.user_id in ids or (self.owner is not None and self.owner == self.user_id):
            raise ValueError("the door cannot be its own resident")
        rooms = [r.room_id for r in residents if r.room_id]
        if len(set(rooms)) != len(rooms):
            raise ValueError("two residents cannot share a room: legacy calls are 1:1 in a room of two")
        if residents and self.owner is not None and self.owner != residents[0].user_id:
            raise ValueError("give the household as residents or as owner, not both")

    @property
    def household(self) -> tuple[ResidentRoom, ...]:
        """The residents, from either form (empty: the adapter alone)."""
        if self.residents:
            return self.residents
        if self.owner is not None:
            return (ResidentRoom(self.owner, self.room_id or None),)
        return ()

    @property
    def resident_ids(self) -> tuple[str, ...]:
        """The residents' user IDs in order (for :func:`~intercom.matrix.trust.load_household_pins`)."""
        return tuple(r.user_id for r in self.household)

    def configured_rooms(self) -> dict[str, str | None]:
        """Room ID → the resident configured there (None: the adapter alone's ``room_id``)."""
        rooms: dict[str, str | None] = {r.room_id: r.user_id for r in self.household if r.room_id}
        if not self.household and self.room_id:
            rooms[self.room_id] = None
        return rooms

    @property
    def password(self) -> str | None:
        return self.credential.secret if self.credential.kind == "password" else None

    @property
    def access_token(self) -> str | None:
        return self.credential.secret if self.credential.kind == "access_token" else None

