"""Fixtures for the MatrixRTC tests: a real LiveKit server (``intercom_dev.testbed.livekit``), built once from its Go
module and cached, and a whole MatrixRTC stack around it. On a machine whose Go cannot build LiveKit, the tests that
need it skip and say why.

- ``livekit``: a LiveKit server of the test's own.
- ``rtc_stack``: for the session, LiveKit, our token service in front of it (``intercom_dev.testbed.rtcfocus``) and a
  Synapse of its own that names that service as its MatrixRTC focus (transports endpoint and ``.well-known``) and
  answers the service's OpenID checks. Started in that order, stopped in reverse.
- ``rtc_users``: fresh users on that Synapse, as ``matrix_users`` makes them on the plain one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from intercom_dev.testbed.livekit import LiveKitServer, LiveKitUnavailable, ensure_livekit
from intercom_dev.testbed.rtcfocus import RtcFocus
from intercom_dev.testbed.synapse import Homeserver

from ..support import User, register


@pytest.fixture(scope="session")
def livekit_binary(pytestconfig: pytest.Config):
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():  # the first build prints its progress
        try:
            return ensure_livekit()
        except LiveKitUnavailable as exc:
            pytest.skip(f"no LiveKit server for the MatrixRTC tests: {exc}")


@pytest.fixture
def livekit(livekit_binary, tmp_path) -> Iterator[LiveKitServer]:
    with LiveKitServer(tmp_path / "livekit", livekit_binary) as server:
        yield server


@dataclass(frozen=True)
class RtcStack:
    """A running MatrixRTC deployment on 127.0.0.1: the SFU, its token service, and the homeserver naming both."""

    livekit: LiveKitServer
    focus: RtcFocus
    homeserver: Homeserver

    @property
    def foci(self) -> list[dict[str, str]]:
        """What the homeserver publishes as its foci (transports)."""
        return [{"type": "livekit", "livekit_service_url": self.focus.url}]


@pytest.fixture(scope="session")
def rtc_stack(livekit_binary, synapse_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtcStack]:
    """LiveKit, then the focus in front of it, then a Synapse naming the focus; torn down in reverse."""
    root = tmp_path_factory.mktemp("rtc")
    with ExitStack() as stack:
        livekit = stack.enter_context(LiveKitServer(root / "livekit", livekit_binary))
        focus = stack.enter_context(RtcFocus(livekit))
        homeserver = stack.enter_context(Homeserver(
            root / "synapse", synapse_python=synapse_python,
            rtc_foci=[{"type": "livekit", "livekit_service_url": focus.url}]))
        focus.homeserver_url = homeserver.url  # known only now: the homeserver's config needed the focus first
        yield RtcStack(livekit, focus, homeserver)


@pytest.fixture
def rtc_users(rtc_stack: RtcStack) -> Callable[..., User]:
    """``rtc_users("door")`` registers a new user on the ``rtc_stack`` homeserver with a unique localpart."""

    def make(prefix: str = "user", *, admin: bool = False) -> User:
        return register(rtc_stack.homeserver, prefix, admin=admin)

    return make
