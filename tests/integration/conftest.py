"""Fixtures for integration tests against a real Synapse on 127.0.0.1 (see :mod:`intercom_dev.testbed.synapse`).

- ``homeserver``: one Synapse for the whole session (starting one costs about a second; installing it, the first
  time on a machine, about half a minute). Tests share it, so each test makes its own users and rooms.
- ``turn_homeserver``: a second Synapse that hands out TURN credentials for :data:`TURN_URIS`, signed with its
  ``turn_shared_secret`` (give the same secret to coturn as ``static-auth-secret``).
- ``matrix_users``: a factory for fresh users with unique localparts.

When Synapse cannot be installed (no access to the package index), the fixtures fail with pip's message: an
integration test that silently skips would hide that the door was never tested against a server.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from intercom_dev.testbed.synapse import Homeserver, SynapseInstallError, ensure_synapse

TURN_URIS = ["turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp"]
TURN_SHARED_SECRET = "intercom-test-turn-secret"


@dataclass(frozen=True)
class MatrixUser:
    """A registered user: what a test needs to log in (password) or call the API directly (access token)."""

    user_id: str
    localpart: str
    password: str
    access_token: str
    device_id: str
    homeserver_url: str


@pytest.fixture(scope="session")
def synapse_python(pytestconfig: pytest.Config) -> Path:
    """The Synapse virtualenv's python, installed on first use (cached per machine).

    Output capture is lifted around the install so its one-line progress message explains the half-minute pause.
    """
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        try:
            return ensure_synapse()
        except SynapseInstallError as err:
            problem = str(err)  # Failed outside the except block, so pytest shows the message, not a traceback chain.
    pytest.fail(f"Synapse is needed for the integration tests and could not be installed:\n{problem}", pytrace=False)


@pytest.fixture(scope="session")
def homeserver(synapse_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Homeserver]:
    """One plain Synapse (no TURN) for the whole test session."""
    with Homeserver(tmp_path_factory.mktemp("synapse"), synapse_python=synapse_python) as hs:
        yield hs


@pytest.fixture(scope="session")
def turn_homeserver(synapse_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Homeserver]:
    """A Synapse that hands out TURN credentials for :data:`TURN_URIS` (no TURN server is started here)."""
    hs = Homeserver(
        tmp_path_factory.mktemp("synapse-turn"),
        synapse_python=synapse_python,
        turn_uris=TURN_URIS,
        turn_shared_secret=TURN_SHARED_SECRET,
    )
    with hs:
        yield hs


@pytest.fixture
def matrix_users(homeserver: Homeserver) -> Callable[..., MatrixUser]:
    """``matrix_users("door")`` registers a new user on ``homeserver`` (or on ``on=``) with a unique localpart."""

    def make(prefix: str = "user", *, on: Homeserver | None = None, admin: bool = False) -> MatrixUser:
        server = on or homeserver
        localpart = f"{prefix}-{secrets.token_hex(4)}"
        password = secrets.token_urlsafe(12)
        user_id, token, device_id = server.register_user(localpart, password, admin=admin)
        return MatrixUser(user_id, localpart, password, token, device_id, server.url)

    return make


@pytest.fixture
def setup(homeserver: Homeserver, matrix_users, tmp_path: Path):
    """A door account, an owner and their two-person room (the door joined), with a config for a simulated door."""
    from .helpers import Setup

    return Setup(homeserver, matrix_users, tmp_path)
