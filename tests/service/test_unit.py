"""The systemd unit passes systemd's own checker and asks for what the door needs."""

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "intercom.service"


EXPOSURE_LIMIT = 2.5


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(UNIT)
    return parser


def _directives() -> dict[str, list[str]]:
    """The [Service] section's directives, every value of a directive that is given more than once."""
    directives: dict[str, list[str]] = {}
    section = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#"):
            key, _, value = line.partition("=")
            directives.setdefault(key, []).append(value)
    return directives


def _comments() -> str:
    return "\n".join(line for line in UNIT.read_text().splitlines() if line.lstrip().startswith("#"))


needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed (Debian: systemd)")


def _security(tmp_path) -> str:
    """`systemd-analyze security --offline=yes` of the unit (systemd 250 or newer), as text."""
    unit = tmp_path / "intercom.service"
    unit.write_text(UNIT.read_text())
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
                            capture_output=True, text=True, timeout=60)
    if "--offline" in result.stderr and ("unrecognized" in result.stderr or "Unknown" in result.stderr):
        pytest.skip(f"this systemd-analyze has no --offline (systemd 250 or newer needed): {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    return result.stdout


@needs_analyze
def test_systemd_analyze_security_exposure_is_at_most_2_5(tmp_path):
    out = _security(tmp_path)
    match = re.search(r"Overall exposure level for intercom\.service: (\d+(?:\.\d+)?)", out)
    assert match, out
    assert float(match.group(1)) <= EXPOSURE_LIMIT, out


@needs_analyze
def test_every_exposure_left_is_explained_in_a_comment(tmp_path):
    # Each "✗" line of the analysis names a directive the door leaves relaxed; the unit must say why.
    relaxed = set()
    for line in _security(tmp_path).splitlines():
        if line.startswith("✗"):
            item = line.split()[1]  # e.g. "ProcSubset=", "SystemCallFilter=~@resources", "RootDirectory=/RootImage="
            relaxed.update(part.split("=")[0] for part in item.split("=/"))
            if "=~@" in item:
                relaxed.add(item.split("=~")[1])  # the system call group left allowed
    assert relaxed, "the analysis listed no relaxed directive at all; its output format changed?"
    comments = _comments()
    unexplained = sorted(name for name in relaxed if name not in comments)
    assert unexplained == [], f"relaxed without a comment saying why: {unexplained}"


def test_devices_are_a_closed_list_of_the_doors_hardware():
    service = _directives()
    assert service["DevicePolicy"] == ["closed"]
    allowed = {value.split()[0]: value.split()[1] for value in service["DeviceAllow"]}
    # Kernel class names from /proc/devices: GPIO, sound, camera (video4linux also covers v4l-subdev), DMA heaps.
    assert allowed == {"char-gpiochip": "rw", "char-alsa": "rw", "char-video4linux": "rw", "char-media": "rw",
                       "char-dma_heap": "rw"}
    assert service.get("PrivateDevices", ["no"]) == ["no"]


def test_system_calls_are_filtered_and_a_missed_one_fails_with_eperm():
    service = _directives()
    assert service["SystemCallFilter"] == ["@system-service", "~@privileged"]
    assert service["SystemCallErrorNumber"] == ["EPERM"]
    assert service["SystemCallArchitectures"] == ["native"]


def test_proc_ipc_realtime_and_limits():
    service = _directives()
    assert service["ProtectProc"] == ["invisible"]
    # gpiozero reads the Pi's revision from /proc/device-tree or /proc/cpuinfo: subset=pid would hide both.
    assert service["ProcSubset"] == ["all"]
    assert service["RemoveIPC"] == ["yes"] and service["RestrictRealtime"] == ["yes"]
    memory = service["MemoryMax"][0]
    assert memory.endswith("M") and 200 <= int(memory[:-1]) <= 400, memory  # a Pi Zero 2 W has 512 MB in all
    assert 64 <= int(service["TasksMax"][0]) <= 512


def test_lgpio_makes_its_fifo_in_the_runtime_directory():
    # ProtectSystem=strict leaves the working directory (/) read-only; lgpio would fail to create .lgd-nfy* there.
    service = _directives()
    environment = dict(word.split("=", 1) for value in service["Environment"] for word in value.split())
    assert environment["LG_WD"] == "/run/" + service["RuntimeDirectory"][0]


@needs_analyze
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
    # The slow imports before the main loop extends the timeout itself must fit (a Pi Zero 2 W, a cold SD card).
    assert int(service["TimeoutStartSec"]) >= 120
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert service["User"] == "intercom"
    assert set(service["SupplementaryGroups"].split()) == {"gpio", "audio", "video"}
    assert service["CapabilityBoundingSet"] == ""
