"""The door side of the interop tests: a real door (``intercom.app.Service`` on simulated hardware) in this
process, with its own account, the owner's account and their two-person room on the test Synapse.

The door runs in the test's event loop (as in ``tests/integration/test_doorbell.py``) so that its core (call state,
LEDs, the last call's outcome) can be read directly, and a hangup can be asked of it as the service would.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np

from intercom.app import Service
from intercom.core import HangupRequested

from ..integration.helpers import Setup, running_door, wait_until  # noqa: F401 (re-exported for the tests)


# The same door rig and helpers as the end-to-end tests: one definition for both suites.
Rig = Setup


def hang_up_at_the_door(service: Service) -> None:
    """What the service does when it stops, or a panel hangup would do: the core's own hangup."""
    service.orchestrator.feed(HangupRequested())


def speaker_path(service: Service) -> Path:
    return Path(service.config.matrix.state_dir) / "simulated" / "speaker.raw"


def speaker_level(service: Service, seconds: float = 2.0) -> tuple[float, float]:
    """(peak, rms) of the last ``seconds`` the door's speaker played, as fractions of full scale (s16le mono 48 kHz)."""
    path = speaker_path(service)
    if not path.exists():
        return 0.0, 0.0
    data = path.read_bytes()
    take = int(seconds * 48000) * 2
    samples = np.frombuffer(data[-take:][: len(data[-take:]) // 2 * 2], dtype="<i2").astype(np.float64) / 32768
    if samples.size == 0:
        return 0.0, 0.0
    return float(np.abs(samples).max()), float(np.sqrt(np.mean(samples**2)))


async def door_hears(service: Service, *, timeout: float = 15.0, threshold: float = 0.05) -> tuple[float, float]:
    """Wait until the door's speaker played something louder than ``threshold`` in the last second: (peak, rms)."""
    deadline = time.monotonic() + timeout
    level = (0.0, 0.0)
    while time.monotonic() < deadline:
        level = speaker_level(service, seconds=1.0)
        if level[0] > threshold:
            return level
        await asyncio.sleep(0.1)
    raise AssertionError(f"the door's speaker played nothing louder than {threshold} (last second: peak "
                         f"{level[0]:.4f}, rms {level[1]:.4f}); {speaker_path(service)}")


def door_remote_candidates(service: Service, call_id: str) -> set[str]:
    """``ip:port`` of the remote candidates the door's ICE agent holds for a call (read through aiortc's API)."""
    call = service.media._calls.get(call_id)  # read-only look into the running engine
    if call is None:
        return set()
    found: set[str] = set()
    for transceiver in call.pc.getTransceivers():
        ice = transceiver.receiver.transport.transport
        found.update(f"{c.ip}:{c.port}" for c in ice.getRemoteCandidates())
    return found
