"""``intercom doctor`` against the real Synapse of the test session, on simulated hardware (``--simulate``).

Most tests run doctor in this process (:func:`run_doctor`, so the clock check can be pointed at a flag file);
the command-line tests run ``intercom doctor`` as a subprocess and read its ``--json`` object and exit status.
TURN allocations go to Debian's coturn on 127.0.0.1, sharing (or, to test the failure, not sharing) the TURN
Synapse's secret.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from intercom.service.doctor import CHECKS, HARDWARE, Options, Report, Status, run_doctor
from intercom.service.doctor_devices import level_dbfs
from intercom.service.doctor_matrix import DEVICE_NAME
from intercom_dev.testbed.door import write_config

from ..network.servers import Coturn
from ..support import TURN_SHARED_SECRET
from .helpers import Setup, running_door

pytestmark = pytest.mark.integration


@pytest.fixture
def clock_flag(tmp_path: Path) -> Path:
    flag = tmp_path / "synchronized"
    flag.touch()
    return flag


def coturn(tmp_path: Path, secret: str) -> Coturn:
    """coturn on 127.0.0.1:3478 (where the TURN Synapse's URIs point; no TLS, so its turns: URI finds nobody)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", 3478))
        except OSError:
            pytest.fail("127.0.0.1:3478 is taken by another program; the TURN tests need it for coturn")
    return Coturn(tmp_path / "coturn", "127.0.0.1", secret).start()


@pytest.fixture
def good_turn(tmp_path: Path):
    server = coturn(tmp_path, TURN_SHARED_SECRET)
    yield server
    server.stop()


@pytest.fixture
def wrong_secret_turn(tmp_path: Path):
    server = coturn(tmp_path, "not-" + TURN_SHARED_SECRET)
    yield server
    server.stop()


def doctor(setup: Setup, clock_flag: Path, *, config: Path | None = None, socket_path: Path | None = None) -> Report:
    options = Options(config_path=str(config or setup.config_path), simulate=True,
                      socket=socket_path or setup.tmp / "no-service.sock", clock_flag=clock_flag)
    return asyncio.run(run_doctor(options))


def by_name(report: Report) -> dict[str, object]:
    return {r.name: r for r in report.results}


def statuses(report: Report) -> dict[str, str]:
    return {r.name: r.status.value for r in report.results}


def assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text


def door_devices(setup: Setup) -> list[dict]:
    return setup.server.api("GET", "/_matrix/client/v3/devices", token=setup.door.access_token)["devices"]


def test_a_good_door_passes_every_check_and_the_temporary_device_is_logged_out(
        turn_homeserver, matrix_users, tmp_path, clock_flag, good_turn):
    setup = Setup(turn_homeserver, lambda prefix: matrix_users(prefix, on=turn_homeserver), tmp_path, encrypted=True)
    devices_before = {d["device_id"] for d in door_devices(setup)}

    report = doctor(setup, clock_flag)

    assert statuses(report) == {name: "OK" for name in CHECKS}, report.render()
    assert report.exit_code == 0 and report.render().endswith("all checks passed")
    checks = by_name(report)
    assert checks["room"].data["members"] == sorted([setup.door.user_id, setup.owner.user_id])
    assert checks["room"].data["encrypted"] is True
    # A real relay from coturn over UDP and TCP; the turns: URI has no TLS server behind it, which is not fatal.
    assert set(checks["turn"].data["allocated"]) == {"turn:127.0.0.1:3478?transport=udp",
                                                     "turn:127.0.0.1:3478?transport=tcp"}
    assert "relay 127.0.0.1:" in checks["turn"].detail
    assert list(checks["turn"].data["failed"]) == ["turns:127.0.0.1:5349?transport=tcp"]
    assert -40 < checks["microphone"].data["level_dbfs"] < -3  # the simulated visitor's voice
    # The speaker's beep reached the simulated speaker (a file): about -15 dBFS RMS for a -12 dBFS peak sine.
    speaker = Path(setup.tmp / "door" / "state" / "simulated" / "speaker.raw").read_bytes()
    assert -20 < level_dbfs(speaker) < -12
    # The doctor's device was logged out again; the door's own devices are untouched.
    assert {d["device_id"] for d in door_devices(setup)} == devices_before
    assert_no_secret(report.render() + json.dumps(report.to_json()), setup.door.password, TURN_SHARED_SECRET)


def test_a_wrong_turn_secret_fails_the_allocation_and_says_which_secret(
        turn_homeserver, matrix_users, tmp_path, clock_flag, wrong_secret_turn):
    setup = Setup(turn_homeserver, lambda prefix: matrix_users(prefix, on=turn_homeserver), tmp_path, encrypted=True)

    report = doctor(setup, clock_flag)

    turn = by_name(report)["turn"]
    assert turn.status is Status.FAIL and report.exit_code == 1
    assert "refused the credentials the homeserver issued (401" in turn.detail
    assert "turn_shared_secret" in turn.fix and "static-auth-secret" in turn.fix
    assert turn.data["allocated"] == []
    assert_no_secret(report.render(), setup.door.password, TURN_SHARED_SECRET)


def test_a_homeserver_without_turn_is_a_warning(setup, clock_flag):
    report = doctor(setup, clock_flag)

    turn = by_name(report)["turn"]
    assert turn.status is Status.WARN and "no TURN" in turn.detail and "turn_uris" in turn.fix


def test_an_unencrypted_room_is_a_warning_and_doctor_still_succeeds(setup, clock_flag):
    report = doctor(setup, clock_flag)  # the setup fixture's room is not encrypted

    room = by_name(report)["room"]
    assert room.status is Status.WARN, report.render()
    assert "not end-to-end encrypted" in room.detail and "encryption" in room.fix
    assert report.exit_code == 0  # warnings only (no TURN on this homeserver is the other one)
    assert {r.status for r in report.results} <= {Status.OK, Status.WARN}


def test_an_unencrypted_room_fails_when_encryption_is_required(setup, clock_flag):
    config = setup.config_path.read_text().replace('device_name = "simulated door"',
                                                   'device_name = "simulated door"\nrequire_encryption = true')
    setup.config_path.write_text(config)

    room = by_name(doctor(setup, clock_flag))["room"]
    assert room.status is Status.FAIL and "require encryption" in room.detail and "encryption" in room.fix


def test_a_wrong_password_fails_the_login_with_the_fix_and_never_shows_a_password(setup, clock_flag):
    wrong = "wrong-" + setup.door.password
    secret_file = setup.tmp / "door" / "password"
    secret_file.write_text(wrong + "\n")

    report = doctor(setup, clock_flag)

    checks = by_name(report)
    assert checks["homeserver"].status is Status.OK
    assert checks["login"].status is Status.FAIL and report.exit_code == 1
    assert "refused the door's password" in checks["login"].detail
    assert str(secret_file) in checks["login"].fix
    assert {checks[n].status for n in ("sync", "room", "turn")} == {Status.SKIP}
    assert checks["microphone"].status is Status.OK  # independent checks still ran
    out = report.render() + json.dumps(report.to_json())
    assert_no_secret(out, wrong, setup.door.password)


def test_a_room_the_door_is_not_in_fails_with_the_fix(setup, clock_flag):
    # A room of the owner's that the door was never invited to.
    other = setup.server.api("POST", "/_matrix/client/v3/createRoom", {"preset": "private_chat"},
                             setup.owner.access_token)["room_id"]
    config = setup.config_path.read_text().replace(setup.room_id, other)
    setup.config_path.write_text(config)

    room = by_name(doctor(setup, clock_flag))["room"]
    assert room.status is Status.FAIL
    assert f"is not in the room {other}" in room.detail and f"invite {setup.door.user_id}" in room.fix


def test_a_room_the_door_is_only_invited_to_is_a_warning(homeserver, matrix_users, tmp_path, clock_flag):
    door, owner = matrix_users("door"), matrix_users("owner")
    room_id = homeserver.create_dm_room(owner.access_token, door.user_id, encrypted=True)
    config = write_config(tmp_path / "door", homeserver=homeserver.url, user_id=door.user_id, password=door.password,
                          room_id=room_id, owner=owner.user_id)

    room = by_name(asyncio.run(run_doctor(Options(config_path=str(config), simulate=True,
                                                  socket=tmp_path / "none.sock", clock_flag=clock_flag))))["room"]
    assert room.status is Status.WARN and "invited" in room.detail and "systemctl start intercom" in room.fix


def test_a_third_member_in_the_room_fails(setup, clock_flag):
    stranger = setup.server.register_user("stranger-" + setup.door.localpart, "pw-stranger-123")
    setup.server.api("POST", f"/_matrix/client/v3/rooms/{setup.room_id}/invite", {"user_id": stranger.user_id},
                     setup.owner.access_token)
    setup.server.join_room(stranger.access_token, setup.room_id)

    room = by_name(doctor(setup, clock_flag))["room"]
    assert room.status is Status.FAIL and "3 members" in room.detail and "remove everyone" in room.fix


def test_an_access_token_is_used_read_only_and_stays_valid(setup, clock_flag):
    token_file = setup.tmp / "door" / "token"
    token_file.touch(mode=0o600)
    token_file.write_text(setup.door.access_token + "\n")
    config = setup.config_path.read_text().replace(f'password_file = "{setup.tmp / "door" / "password"}"',
                                                   f'access_token_file = "{token_file}"')
    setup.config_path.write_text(config)

    report = doctor(setup, clock_flag)

    checks = by_name(report)
    assert checks["login"].status is Status.OK and "read-only" in checks["login"].detail
    assert checks["sync"].status is Status.OK and checks["room"].status is Status.WARN  # unencrypted
    who = setup.server.api("GET", "/_matrix/client/v3/account/whoami", token=setup.door.access_token)
    assert who["user_id"] == setup.door.user_id  # doctor did not log the door's own session out
    assert all(d.get("display_name") != DEVICE_NAME for d in door_devices(setup))
    assert_no_secret(report.render() + json.dumps(report.to_json()), setup.door.access_token)


def test_with_the_service_running_doctor_reports_its_status_and_leaves_the_hardware_alone(setup, clock_flag):
    async def main() -> Report:
        async with running_door(setup) as door:
            report = await run_doctor(Options(config_path=str(setup.config_path), simulate=True,
                                              socket=door.control_path, clock_flag=clock_flag))
            assert door.core.led.value == "idle"  # the door is undisturbed
            return report

    report = asyncio.run(main())

    checks = by_name(report)
    assert checks["service"].status is Status.OK
    assert checks["service"].detail.startswith("running: call idle, LEDs idle, homeserver online")
    for name in HARDWARE:
        assert checks[name].status is Status.WARN and checks[name].detail == "in use by the running service"
        assert "sudo systemctl stop intercom, then intercom doctor" in checks[name].fix
    assert checks["login"].status is Status.OK and checks["room"].status is Status.WARN
    assert report.exit_code == 0


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "intercom.cli", "doctor", *args], capture_output=True, text=True,
                          timeout=180)


def test_the_command_prints_json_and_exits_0_with_only_warnings(setup):
    result = _cli("--config", str(setup.config_path), "--simulate", "--json", "--socket", str(setup.tmp / "x.sock"))

    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["simulate"] is True
    assert [c["name"] for c in report["checks"]] == list(CHECKS)
    assert report["counts"]["FAIL"] == 0 and report["counts"]["WARN"] >= 2  # room unencrypted, no TURN
    assert_no_secret(result.stdout + result.stderr, setup.door.password)


def test_the_command_exits_1_on_a_failure_and_prints_the_fix(setup):
    (setup.tmp / "door" / "password").write_text("not-the-password\n")

    result = _cli("--config", str(setup.config_path), "--simulate", "--socket", str(setup.tmp / "x.sock"))

    assert result.returncode == 1
    lines = result.stdout.splitlines()
    login = next(i for i, line in enumerate(lines) if line.startswith("FAIL  login"))
    assert lines[login + 1].strip().startswith("fix: write the door account's password into")
    assert_no_secret(result.stdout + result.stderr, "not-the-password", setup.door.password)


def test_a_broken_config_fails_and_skips_the_rest(tmp_path):
    config = tmp_path / "intercom.toml"
    config.write_text('[matrix]\nhomeserver = "matrix.example.org"\n')

    result = _cli("--config", str(config), "--json")

    assert result.returncode == 1
    report = json.loads(result.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["config"]["status"] == "FAIL" and "intercom check-config" in checks["config"]["fix"]
    assert "matrix.homeserver" in checks["config"]["detail"]
    assert {checks[n]["status"] for n in CHECKS[1:-1]} == {"SKIP"}
