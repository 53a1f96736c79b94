"""Fixtures for the end-to-end tests of the door against a real Synapse (the servers and users: ``tests/conftest.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from intercom_dev.testbed.synapse import Homeserver


@pytest.fixture
def setup(homeserver: Homeserver, matrix_users, tmp_path: Path):
    """A door account, an owner and their two-person room (the door joined), with a config for a simulated door."""
    from .helpers import Setup

    return Setup(homeserver, matrix_users, tmp_path)
