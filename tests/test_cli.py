"""The ``intercom`` command as a user runs it: a real subprocess."""

import subprocess
import sys


def _intercom(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "intercom.cli", *args], capture_output=True, text=True, timeout=120)


def test_demo_shows_a_press_becoming_a_call_and_the_owner_calling_in():
    result = _intercom("demo")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    order = ["visitor presses the doorbell", "LEDs show calling", "door   sends m.call.invite",
             "phone  sends m.call.answer", "door   sends m.call.select_answer", "LEDs show in_call",
             "owner calls the door from the phone", "door   sends m.call.answer"]
    positions = [next(i for i, line in enumerate(lines) if text in line) for text in order]
    assert positions == sorted(positions)


def test_help_lists_the_commands():
    result = _intercom("--help")
    assert result.returncode == 0
    for command in ("run", "demo", "check-config"):
        assert command in result.stdout


def test_unknown_command_fails_with_usage():
    result = _intercom("nonsense")
    assert result.returncode == 2 and "invalid choice" in result.stderr
