"""Fixtures every test directory shares: real Synapse servers on 127.0.0.1 (see
:mod:`intercom_dev.testbed.synapse`) and fresh users on them.

- ``homeserver``: one Synapse for the whole session (starting one costs about a second; installing it, the first
  time on a machine, about half a minute). Tests share it, so each test makes its own users and rooms.
- ``turn_homeserver``: a second Synapse that hands out TURN credentials for :data:`~tests.support.TURN_URIS`,
  signed with ``turn_shared_secret``.
- ``matrix_users``: a factory for fresh users with unique localparts (``on=`` another server).

When Synapse cannot be installed (no access to the package index), the fixtures fail with pip's message: a test
that silently skipped would hide that the door was never tested against a server. (The network tests run their
own servers inside network namespaces: ``tests/network/conftest.py``.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from intercom_dev.testbed.synapse import Homeserver, SynapseInstallError, ensure_synapse

from .support import TURN_SHARED_SECRET, TURN_URIS, User, register


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
    pytest.fail(f"Synapse is needed for these tests and could not be installed:\n{problem}", pytrace=False)


@pytest.fixture(scope="session")
def homeserver(synapse_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Homeserver]:
    """One plain Synapse (no TURN) for the whole test session."""
    with Homeserver(tmp_path_factory.mktemp("synapse"), synapse_python=synapse_python) as hs:
        yield hs


@pytest.fixture(scope="session")
def turn_homeserver(synapse_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Homeserver]:
    """A Synapse that hands out TURN credentials for TURN_URIS (no TURN server is started here)."""
    with Homeserver(tmp_path_factory.mktemp("synapse-turn"), synapse_python=synapse_python, turn_uris=TURN_URIS,
                    turn_shared_secret=TURN_SHARED_SECRET) as hs:
        yield hs


@pytest.fixture
def matrix_users(homeserver: Homeserver) -> Callable[..., User]:
    """``matrix_users("door")`` registers a new user on ``homeserver`` (or on ``on=``) with a unique localpart."""

    def make(prefix: str = "user", *, on: Homeserver | None = None, admin: bool = False) -> User:
        return register(on or homeserver, prefix, admin=admin)

    return make
