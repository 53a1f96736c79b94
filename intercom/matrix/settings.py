"""Who the door is on Matrix: the adapter's settings, built from the config file's ``[matrix]`` section (which
holds their defaults and checks them: a valid homeserver URL and user ID, exactly one credential)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


@dataclass(frozen=True, slots=True)
class Credential:
    """How the door proves who it is: its password, or an access token. The secret stays out of ``repr``."""

    kind: Literal["password", "access_token"]
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class MatrixSettings:
    """The door's account, its room, and where its session and E2EE store live."""

    homeserver: str  #: base URL, e.g. ``https://matrix.example.org``
    user_id: str  #: the door's own account
    room_id: str  #: the one room the door joins when invited, and calls in
    state_dir: Path | str  #: session and E2EE store (created ``0700``)
    credential: Credential
    device_name: str  #: the name of the device a password login creates
    #: The owner, whose keys the door reads and whose trusted devices alone get the room keys
    #: (:mod:`~intercom.matrix.trust`). None only in tests of the adapter alone: then keys go to every device.
    owner: str | None = None

    @property
    def password(self) -> str | None:
        return self.credential.secret if self.credential.kind == "password" else None

    @property
    def access_token(self) -> str | None:
        return self.credential.secret if self.credential.kind == "access_token" else None
