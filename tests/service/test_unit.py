"""The systemd unit passes systemd's own checker and asks for what the door needs."""

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "intercom.service"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(UNIT)
    return parser


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (Debian: systemd)")
def test_systemd_analyze_verify_passes(tmp_path):
    # verify checks that ExecStart exists; point it at this checkout's entry point, nothing else changes.
    intercom = Path(sys.executable).with_name("intercom")
    text = UNIT.read_text().replace("/opt/intercom/venv/bin/intercom", str(intercom))
    unit = tmp_path / "intercom.service"
    unit.write_text(text)
    # --man=no: a minimal Debian has no man, and verify would fail on the unit's Documentation=man: link.
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    problems = [line for line in result.stderr.splitlines() if "intercom.service" in line]
    assert problems == [], problems


def test_unit_is_notify_with_watchdog_restart_and_hardening():
    service = _unit()["Service"]
    assert service["Type"] == "notify"
    assert int(service["WatchdogSec"]) > 0 and service["Restart"] == "always"
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert service["User"] == "intercom"
    assert set(service["SupplementaryGroups"].split()) == {"gpio", "audio", "video"}
    assert service["CapabilityBoundingSet"] == ""
