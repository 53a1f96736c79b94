"""The README's first command: the demo (what `bash scripts/demo` runs after installing)."""

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_shows_a_press_ringing_both_residents_becoming_a_call_with_media_and_the_owner_calling_in(
        synapse_python):
    result = subprocess.run([sys.executable, "-m", "intercom_dev.demo"], capture_output=True, text=True,
                            timeout=300)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    steps = ["button pressed; the door's LEDs show calling", "the phone rings: m.call.invite",
             "the partner's phone rings too", "the door selects the answer", "the partner's phone stops ringing",
             "first video frame from the door decoded at the phone", "answered by @owner",
             "the owner hangs up", "the door ended the call", "The owner calls the door from the phone",
             "the door answers by itself", "Demo passed"]
    positions = [out.find(step) for step in steps]
    assert -1 not in positions and positions == sorted(positions), out
    frames = [int(n) for n in re.findall(r"flowed: (\d+) video frames", out)]
    assert len(frames) == 2 and min(frames) > 30, out
