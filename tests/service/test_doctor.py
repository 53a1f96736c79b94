"""The pure parts of ``intercom doctor``: judgements, URI parsing, failure explanations, the report, timeouts.

The checks against a real Synapse, coturn and the simulated hardware are in tests/integration/test_doctor.py.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from aioice import stun

from intercom.core.events import RoomMembersChanged
from intercom.service import doctor, doctor_devices
from intercom.service.config import parse_config
from intercom.service.control import ControlServer
from intercom.service.doctor import Report, Result, Status, bounded, in_thread, judge_disk, judge_service
from intercom.service.doctor_devices import judge_frame, judge_microphone, level_dbfs
from intercom.service.doctor_matrix import (
    TurnTarget,
    explain_turn_failure,
    judge_allocations,
    judge_room,
    judge_rooms,
    turn_target,
)

DOOR, OWNER, ROOM = "@door:example.org", "@alice:example.org", "!room:example.org"


def config(**matrix):
    section = {"homeserver": "https://matrix.example.org", "user_id": DOOR, "room_id": ROOM, "owner": OWNER,
               "password": "pw-secret", **matrix}
    return parse_config({"matrix": section}, "/etc/intercom/intercom.toml")


def facts(*members, encrypted=True, join_rule="invite"):
    return RoomMembersChanged(room_id=ROOM, joined=frozenset(members), join_rule=join_rule, encrypted=encrypted)


def sine(peak: float, seconds: float = 1.0, rate: int = 48000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 440 * t) * peak * 32767).astype("<i2").tobytes()


# --- levels and pictures ----------------------------------------------------------------------------------------


def test_level_of_silence_and_of_a_sine():
    assert level_dbfs(bytes(9600)) == -math.inf
    assert level_dbfs(b"") == -math.inf
    assert level_dbfs(sine(10 ** (-12 / 20))) == pytest.approx(-15.0, abs=0.2)  # a sine's RMS is 3 dB below its peak
    assert level_dbfs(sine(1.0)) == pytest.approx(-3.0, abs=0.2)


@pytest.mark.parametrize("dbfs, status, words", [
    (-math.inf, Status.WARN, "digital silence"),
    (-75.0, Status.WARN, "silent"),
    (-0.5, Status.WARN, "clipping"),
    (-20.0, Status.OK, "level -20.0 dBFS"),
])
def test_microphone_levels(dbfs, status, words):
    result = judge_microphone(dbfs, "plughw:CARD=Device,DEV=0", 1.0)
    assert result.status is status and words in result.detail
    assert (result.fix is None) == (status is Status.OK)


def test_a_black_frame_is_a_warning_and_a_wrong_size_too():
    assert judge_frame(1280, 720, 3.0, (1280, 720)).status is Status.WARN
    assert "black" in judge_frame(1280, 720, 3.0, (1280, 720)).detail
    assert judge_frame(640, 480, 120.0, (1280, 720)).status is Status.WARN
    good = judge_frame(1280, 720, 120.0, (1280, 720))
    assert good.status is Status.OK and good.data == {"width": 1280, "height": 720, "mean_brightness": 120.0}


def test_disk_thresholds(tmp_path):
    assert judge_disk(tmp_path, 5 * 2**20).status is Status.FAIL
    assert judge_disk(tmp_path, 100 * 2**20).status is Status.WARN
    assert judge_disk(tmp_path, 4 * 2**30).status is Status.OK


def test_disk_of_a_state_directory_not_made_yet(tmp_path):
    result = doctor.check_disk(str(tmp_path / "not" / "yet"))  # measured on the nearest directory that exists
    assert f"MiB free for {tmp_path / 'not' / 'yet'}" in result.detail and result.data["free_bytes"] > 0


def test_clock(tmp_path):
    assert doctor.judge_clock(True, tmp_path).status is Status.OK
    unsynced = doctor.judge_clock(False, tmp_path / "synchronized")
    assert unsynced.status is Status.WARN and "timedatectl" in unsynced.fix


# --- the room ---------------------------------------------------------------------------------------------------


def test_room_good_encrypted():
    result = judge_room(facts(DOOR, OWNER), config=config(), invited=False)
    assert result.status is Status.OK and result.data["members"] == sorted([DOOR, OWNER])


def test_room_unencrypted_is_a_warning_or_a_failure_when_required():
    plain = judge_room(facts(DOOR, OWNER, encrypted=False), config=config(), invited=False)
    assert plain.status is Status.WARN and "not end-to-end encrypted" in plain.detail
    assert "require_encryption" in plain.fix
    required = judge_room(facts(DOOR, OWNER, encrypted=False), config=config(require_encryption=True), invited=False)
    assert required.status is Status.FAIL and "Encrypted" in required.fix


def test_room_the_door_is_not_in_or_only_invited_to():
    absent = judge_room(None, config=config(), invited=False)
    assert absent.status is Status.FAIL and f"invite {DOOR}" in absent.fix
    invited = judge_room(None, config=config(), invited=True)
    assert invited.status is Status.WARN and "accepts the invite" in invited.fix


@pytest.mark.parametrize("members, join_rule, words, fix", [
    ((DOOR, OWNER, "@eve:example.org"), "invite", "3 members", "remove everyone"),
    ((DOOR,), "invite", f"the owner {OWNER} has not joined", f"invite the owner {OWNER}"),
    ((DOOR, OWNER), "public", "public", "private"),
])
def test_room_problems_fail_with_their_fix(members, join_rule, words, fix):
    result = judge_room(facts(*members, join_rule=join_rule), config=config(), invited=False)
    assert result.status is Status.FAIL and words in result.detail and fix in result.fix


BOB, BOB_ROOM = "@bob:example.org", "!bob:example.org"


def household(**matrix):
    section = {"homeserver": "https://matrix.example.org", "user_id": DOOR, "password": "pw-secret", **matrix}
    residents = [{"user_id": OWNER, "room_id": ROOM}, {"user_id": BOB, "room_id": BOB_ROOM},
                 {"user_id": "@carol:example.org"}]
    return parse_config({"matrix": section, "residents": residents}, "/etc/intercom/intercom.toml")


def test_the_single_owners_room_reads_as_before():
    single = config()
    result = judge_rooms(single, lambda r: judge_room(facts(DOOR, OWNER), config=single, invited=False, resident=r))
    assert result == judge_room(facts(DOOR, OWNER), config=single, invited=False)
    assert result.detail == f"{ROOM}: the door and the owner, encrypted"


def test_each_residents_room_is_checked_and_a_room_the_door_makes_is_fine():
    home = household()
    rooms = {ROOM: facts(DOOR, OWNER), BOB_ROOM: RoomMembersChanged(room_id=BOB_ROOM, joined=frozenset({DOOR, BOB}),
                                                                    join_rule="invite", encrypted=True)}
    seen = []

    def judge(resident):
        seen.append(resident.user_id)
        return judge_room(rooms[resident.room_id], config=home, invited=False, resident=resident)

    result = judge_rooms(home, judge)
    assert seen == [OWNER, BOB]  # carol has no configured room: nothing to look at
    assert result.status is Status.OK and result.fix is None
    assert f"{OWNER}: {ROOM}: the door and the resident, encrypted" in result.detail
    assert f"{BOB}: {BOB_ROOM}: the door and the resident, encrypted" in result.detail
    assert "@carol:example.org: the door makes this room itself" in result.detail
    assert result.data["rooms"]["@carol:example.org"] == {"status": "OK"}
    assert result.data["rooms"][BOB]["members"] == sorted([DOOR, BOB])


def test_a_household_room_problem_names_the_resident_and_their_setting():
    home = household()
    bob = home.residents[1]
    absent = judge_room(None, config=home, invited=False, resident=bob)
    assert absent.status is Status.FAIL and f"is not in the room {BOB_ROOM}" in absent.detail
    assert "from the resident's account" in absent.fix and "residents[2].room_id" in absent.fix
    missing = judge_room(facts(DOOR), config=home, invited=False, resident=bob)
    assert f"invite the resident {BOB}" in missing.fix and "residents[2].user_id" in missing.fix

    def judge(resident):
        return absent if resident.user_id == BOB else judge_room(facts(DOOR, OWNER, encrypted=False), config=home,
                                                                  invited=False, resident=resident)

    result = judge_rooms(home, judge)
    assert result.status is Status.FAIL  # the worst of FAIL (bob), WARN (alice, unencrypted) and OK (carol)
    assert result.fix.startswith(f"{OWNER}: ") and f"; {BOB}: from the resident's account" in result.fix


def test_the_config_line_names_the_household(tmp_path):
    path = tmp_path / "intercom.toml"
    path.write_text(f'[matrix]\nhomeserver = "https://matrix.example.org"\nuser_id = "{DOOR}"\npassword = "pw"\n'
                    f'[[residents]]\nuser_id = "{OWNER}"\n[[residents]]\nuser_id = "{BOB}"\n')
    result, loaded = asyncio.run(doctor._check_config(str(path)))
    assert result.status is Status.OK and loaded is not None
    assert result.detail.startswith(f"door {DOOR} serving 2 residents ({OWNER}, {BOB}), homeserver ")


# --- TURN -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("uri, expected", [
    ("turn:turn.example.org", ("turn.example.org", 3478, "udp", False)),
    ("turn:turn.example.org:3479?transport=tcp", ("turn.example.org", 3479, "tcp", False)),
    ("turn:192.0.2.1:3478?transport=udp", ("192.0.2.1", 3478, "udp", False)),
    ("turns:turn.example.org", ("turn.example.org", 5349, "tcp", True)),
    ("turns:turn.example.org:443?transport=tcp", ("turn.example.org", 443, "tcp", True)),
])
def test_turn_targets(uri, expected):
    target = turn_target(uri)
    assert target is not None and (target.host, target.port, target.transport, target.tls) == expected


@pytest.mark.parametrize("uri", ["stun:stun.example.org", "turns:x?transport=udp", "http://x", "turn:"])
def test_uris_that_are_not_usable_turn_servers(uri):
    assert turn_target(uri) is None


UDP = TurnTarget("turn:t.example.org", "t.example.org", 3478, "udp", False)
TLS = TurnTarget("turns:t.example.org", "t.example.org", 5349, "tcp", True)


def refused(code: int, reason: str) -> stun.TransactionFailed:
    return stun.TransactionFailed(stun.Message(stun.Method.ALLOCATE, stun.Class.ERROR,
                                               attributes={"ERROR-CODE": (code, reason)}))


def test_turn_failures_explained():
    why, fix = explain_turn_failure(UDP, refused(401, "Unauthorized"))
    assert "refused the credentials" in why and "401 Unauthorized" in why and "turn_shared_secret" in fix
    why, fix = explain_turn_failure(UDP, stun.TransactionTimeout())
    assert why == "no answer from t.example.org:3478 over UDP" and "UDP port 3478" in fix
    why, _ = explain_turn_failure(TLS, ConnectionRefusedError())
    assert "nothing listens on t.example.org:5349 over TLS" in why
    why, _ = explain_turn_failure(UDP, socket.gaierror(-2, "Name or service not known"))
    assert "cannot resolve t.example.org" in why
    why, _ = explain_turn_failure(UDP, refused(486, "Allocation Quota Reached"))
    assert "out of allocations" in why


def test_allocations_one_relay_is_enough():
    result = judge_allocations([(UDP, ("203.0.113.5", 50000)), (TLS, ConnectionRefusedError())])
    assert result.status is Status.OK and "relay 203.0.113.5:50000" in result.detail and "failed:" in result.detail
    assert result.data["allocated"] == [UDP.uri] and list(result.data["failed"]) == [TLS.uri]


def test_allocations_none_fails_with_the_preferred_servers_fix():
    result = judge_allocations([(UDP, refused(401, "Unauthorized")), (TLS, stun.TransactionTimeout())])
    assert result.status is Status.FAIL and "turn_shared_secret" in result.fix and "also: no answer" in result.detail


# --- the service --------------------------------------------------------------------------------------------------


def test_service_status_lines():
    good = {"ok": True, "call_state": "idle", "led": "idle", "homeserver": "online", "fault": None,
            "room_problem": None, "trust": {}}
    assert judge_service(good).status is Status.OK
    troubled = judge_service({**good, "homeserver": "offline", "fault": "Matrix: refused"})
    assert troubled.status is Status.WARN and "Matrix: refused" in troubled.detail and "journalctl" in troubled.fix
    assert judge_service({"ok": False, "error": "x"}).status is Status.WARN


def test_asking_the_service(tmp_path):
    assert doctor.ask_service(tmp_path / "absent.sock").running is False
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as leftover:  # bound, never listening: what a crashed service leaves
        leftover.bind(str(stale))
        assert doctor.ask_service(stale).running is False

    async def status(command):
        return {"ok": True, "call_state": "idle", "led": "idle", "homeserver": "online"}

    async def main():
        server = ControlServer(tmp_path / "live.sock", status)
        await server.start()
        try:
            return await in_thread(doctor.ask_service, tmp_path / "live.sock")
        finally:
            await server.close()

    live = asyncio.run(main())
    assert live.running is True and live.result.detail == "running: call idle, LEDs idle, homeserver online"


# --- running checks -----------------------------------------------------------------------------------------------


def test_a_hanging_check_ends_as_a_failure_and_others_go_on():
    released = threading.Event()

    async def hangs_in_a_thread():
        await in_thread(released.wait)
        return doctor.ok("gpio", "never")

    async def hangs():
        await asyncio.Event().wait()

    async def broken():
        raise RuntimeError("surprise")

    async def main():
        return await asyncio.gather(bounded("gpio", hangs_in_a_thread, timeout=0.05),
                                    bounded("room", hangs, timeout=0.05), bounded("disk", broken),
                                    bounded("clock", lambda: asyncio.sleep(0, doctor.ok("clock", "fine"))))

    try:
        thread, loop, error, fine = asyncio.run(main())
    finally:
        released.set()
    assert thread.status is Status.FAIL and thread.detail == "did not finish within 0.05 s" and thread.fix
    assert loop.status is Status.FAIL and loop.name == "room"
    assert error.status is Status.FAIL and "RuntimeError: surprise" in error.detail
    assert fine.status is Status.OK


def test_a_missing_sound_device_fails_with_the_setting_to_change(tmp_path):
    cfg = parse_config({"matrix": {"homeserver": "https://matrix.example.org", "user_id": DOOR, "room_id": ROOM,
                                   "owner": OWNER, "password": "pw-secret", "state_dir": str(tmp_path)},
                        "audio": {"capture_device": "intercom_no_such_device", "playback_device": "nor_this_one"}})
    hw = doctor_devices.hardware_for(cfg, simulate=False)
    mic = asyncio.run(bounded("microphone", lambda: doctor_devices.check_microphone(hw)))
    speaker = asyncio.run(bounded("speaker", lambda: doctor_devices.check_speaker(hw)))
    assert mic.status is Status.FAIL and "audio.capture_device" in mic.fix and "arecord -L" in mic.fix
    assert speaker.status is Status.FAIL and "audio.playback_device" in speaker.fix


def test_a_pressed_button_is_a_warning(monkeypatch, tmp_path):
    cfg = config(state_dir=str(tmp_path))
    hw = doctor_devices.hardware_for(cfg, simulate=True)
    monkeypatch.setattr(doctor_devices, "claim_pins", lambda hw: ([17], "MockFactory"))
    result = asyncio.run(doctor_devices.check_gpio(hw))
    assert result.status is Status.WARN and "reads pressed (GPIO17 low)" in result.detail
    assert "button_pull_up" in result.fix


def test_every_bell_button_is_claimed_and_read(tmp_path):
    """An apartment panel: doctor claims each button's pin and names the one that reads pressed."""
    cfg = parse_config({"matrix": {"homeserver": "https://matrix.example.org", "user_id": DOOR,
                                   "password": "pw-secret", "state_dir": str(tmp_path)},
                        "residents": [{"user_id": OWNER, "room_id": ROOM}],
                        "buttons": [{"pin": 17, "name": "Flat 1"}, {"pin": 5, "name": "Flat 2"}],
                        "panel": {"pin_factory": "mock"}}, check_files=False)
    hw = doctor_devices.hardware_for(cfg, simulate=True)
    assert hw.panel.buttons == (17, 5)
    result = asyncio.run(doctor_devices.check_gpio(hw))
    assert result.status is Status.OK and "buttons GPIO17, GPIO5" in result.detail and "released" in result.detail


# --- the report ---------------------------------------------------------------------------------------------------


def test_report_exit_status_text_and_json():
    results = [doctor.ok("config", "fine"), doctor.warn("clock", "late", "sync it"),
               doctor.fail("login", "refused", "write the password"), doctor.skip("room", "needs login")]
    report = Report("/etc/intercom/intercom.toml", False, results)
    assert report.exit_code == 1
    text = report.render().splitlines()
    assert text[1] == "OK    config      fine"
    assert text[3].strip() == "fix: sync it"
    assert text[-1].startswith("1 failed, 1 warning:")
    data = json.loads(json.dumps(report.to_json()))
    assert data["ok"] is False and data["counts"] == {"OK": 1, "WARN": 1, "FAIL": 1, "SKIP": 1}
    assert data["checks"][2] == {"name": "login", "status": "FAIL", "detail": "refused", "fix": "write the password"}
    assert Report("x", True, results[:2]).exit_code == 0


def test_secrets_are_scrubbed_from_every_field():
    result = Result("login", Status.FAIL, "refused pw-secret", "not pw-secret", {"echo": "pw-secret"})
    clean = result.scrubbed(["pw-secret", ""])
    assert "pw-secret" not in json.dumps(clean.to_json())
    assert clean.detail == "refused ***"


def test_a_broken_config_is_reported_with_every_other_check_skipped(tmp_path):
    bad = tmp_path / "intercom.toml"
    bad.write_text("[matrix]\nuser_id = 'door'\n")
    options = doctor.Options(config_path=str(bad), socket=tmp_path / "none.sock", clock_flag=Path(tmp_path))
    report = asyncio.run(doctor.run_doctor(options))
    statuses = {r.name: r.status for r in report.results}
    assert statuses["config"] is Status.FAIL and statuses["clock"] is Status.OK
    assert {statuses[n] for n in doctor.CHECKS[1:-1]} == {Status.SKIP}
    assert report.exit_code == 1
