"""Fixtures for the Matrix adapter's tests: real Synapse servers from :mod:`intercom_dev.testbed.synapse`.

The servers are this directory's own (the fixtures in ``tests/integration`` are not visible here); one plain and
one with TURN for the whole session, shared by the tests, which register fresh users each.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from intercom_dev.testbed.synapse import Homeserver, SynapseInstallError, ensure_synapse

#: Deliberately not in the order the door should use them (UDP first, then TCP, then TLS).
TURN_URIS = ["turns:127.0.0.1:5349?transport=tcp", "turn:127.0.0.1:3478?transport=tcp",
             "turn:127.0.0.1:3478?transport=udp"]
TURN_SHARED_SECRET = "intercom-matrix-test-turn-secret"


@dataclass(frozen=True)
class User:
    user_id: str
    password: str
    access_token: str
    device_id: str


@pytest.fixture(scope="session")
def synapse_python() -> Path:
    try:
        return ensure_synapse()
    except SynapseInstallError as err:
        pytest.fail(f"Synapse is needed for the Matrix adapter's tests and could not be installed:\n{err}",
                    pytrace=False)


@pytest.fixture(scope="session")
def homeserver(synapse_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Homeserver]:
    with Homeserver(tmp_path_factory.mktemp("matrix-synapse"), synapse_python=synapse_python) as hs:
        yield hs


@pytest.fixture(scope="session")
def turn_homeserver(synapse_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Homeserver]:
    hs = Homeserver(tmp_path_factory.mktemp("matrix-synapse-turn"), synapse_python=synapse_python,
                    turn_uris=TURN_URIS, turn_shared_secret=TURN_SHARED_SECRET)
    with hs:
        yield hs


@pytest.fixture
def new_user(homeserver: Homeserver) -> Callable[..., User]:
    """``new_user("door")`` registers a fresh user (on ``homeserver``, or ``on=``)."""

    def make(prefix: str = "user", *, on: Homeserver | None = None) -> User:
        server = on or homeserver
        password = secrets.token_urlsafe(12)
        user_id, token, device_id = server.register_user(f"{prefix}-{secrets.token_hex(4)}", password)
        return User(user_id, password, token, device_id)

    return make
