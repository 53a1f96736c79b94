"""What tests of every kind share: users on a test Synapse, unique names, and waiting for something to happen."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from intercom_dev.testbed.synapse import Homeserver

#: TURN URIs of the ``turn_homeserver`` fixture, deliberately not in the order the door should use them (UDP
#: first, then TCP, then TLS). No TURN server is started for them.
TURN_URIS = ["turns:127.0.0.1:5349?transport=tcp", "turn:127.0.0.1:3478?transport=tcp",
             "turn:127.0.0.1:3478?transport=udp"]
TURN_SHARED_SECRET = "intercom-test-turn-secret"


@dataclass(frozen=True)
class User:
    """A registered user: what a test needs to log in (password) or call the API directly (access token)."""

    user_id: str
    localpart: str
    password: str
    access_token: str
    device_id: str
    homeserver_url: str


def unique(prefix: str) -> str:
    """A name no other test uses: ``prefix-`` and 8 random hex digits."""
    return f"{prefix}-{secrets.token_hex(4)}"


def register(hs: Homeserver, prefix: str = "user", *, admin: bool = False) -> User:
    """A fresh user on ``hs`` with a unique localpart and a random password."""
    localpart, password = unique(prefix), secrets.token_urlsafe(12)
    user_id, token, device_id = hs.register_user(localpart, password, admin=admin)
    return User(user_id, localpart, password, token, device_id, hs.url)


class _Deadline:
    def __init__(self, what: str, timeout: float) -> None:
        self.what, self.timeout, self.at = what, timeout, time.monotonic() + timeout

    def check(self) -> None:
        if time.monotonic() > self.at:
            raise AssertionError(f"timed out after {self.timeout:g} s waiting for {self.what}")


async def wait_until(predicate: Callable[[], Any], what: str = "condition", *, timeout: float = 20.0) -> Any:
    """Poll ``predicate`` until it returns something truthy, and return that; fail the test after ``timeout``."""
    deadline = _Deadline(what, timeout)
    while not (value := predicate()):
        deadline.check()
        await asyncio.sleep(0.02)
    return value


def wait_until_sync(predicate: Callable[[], Any], what: str = "condition", *, timeout: float = 3.0) -> Any:
    """:func:`wait_until` for code that runs outside an event loop (gpiozero's threads drive the panel)."""
    deadline = _Deadline(what, timeout)
    while not (value := predicate()):
        deadline.check()
        time.sleep(0.01)
    return value
