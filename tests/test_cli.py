"""The ``intercom`` command as a user runs it: a real subprocess."""

import subprocess
import sys


def _intercom(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "intercom.cli", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_the_commands():
    result = _intercom("--help")
    assert result.returncode == 0
    for command in ("run", "press", "status", "check-config", "doctor"):
        assert command in result.stdout
    assert "demo" not in result.stdout  # a development tool (bash scripts/demo), not a command of the door


def test_unknown_command_fails_with_usage():
    result = _intercom("nonsense")
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_press_without_a_running_service_says_so(tmp_path):
    result = _intercom("press", "--socket", str(tmp_path / "none.sock"))
    assert result.returncode == 1 and "is the intercom service running" in result.stderr
