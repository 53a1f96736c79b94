"""Fixtures for the MatrixRTC tests: a real LiveKit server (``intercom_dev.testbed.livekit``), built once from its Go
module and cached. On a machine whose Go cannot build it, the tests that need it skip and say why."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from intercom_dev.testbed.livekit import LiveKitServer, LiveKitUnavailable, ensure_livekit


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
