"""Tests for the config loader and ``intercom check-config``.

What matters most is the wording of the problems: each one must name the dotted setting and say how to fix it,
and every problem in a file must be reported in one run. The broken files live in ``configs/``; the ``BROKEN``
table lists, for each file, exactly which settings must be reported and a piece of each fix.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import subprocess
import sys
import tomllib
from importlib.resources import files
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intercom.errors import IntercomError
from intercom.service.config import (
    AudioConfig,
    CallsConfig,
    CameraConfig,
    Config,
    ConfigError,
    ConfigProblem,
    MatrixConfig,
    PanelConfig,
    check_config_main,
    load_config,
    parse_config,
    validate_text,
)

CONFIGS = Path(__file__).parent / "configs"
EXAMPLE_TEXT = files("intercom").joinpath("data/intercom.example.toml").read_text(encoding="utf-8")
EXAMPLE_SECRET_PATH = "/etc/intercom/secrets/password"

# file -> {dotted setting: [text that must appear in its message]}. The setting set must match exactly, so a
# file that also reports an unrelated problem fails too. "" is a problem with the file as a whole.
BROKEN: dict[str, dict[str, list[str]]] = {
    "bad_owner.toml": {"matrix.owner": ['"bob" is not a Matrix user ID', "write it as @bob:example.org"]},
    "room_alias.toml": {"matrix.room_id": ["is a room alias", "Room settings > Advanced", "starts with '!'"]},
    "plain_http.toml": {"matrix.homeserver": ["plain http", 'use "https://matrix.example.org"', "localhost"]},
    "owner_is_door.toml": {"matrix.owner": ["same account as matrix.user_id", "@alice:example.org"]},
    "ring_timeout_string.toml": {
        "calls.ring_timeout": ['expected a number of seconds like 60, got the string "60s"', "without quotes"],
    },
    "bool_as_number.toml": {"calls.max_call_duration": ["like 300", "got the boolean true"]},
    "out_of_range.toml": {
        "calls.ring_timeout": ["out of range", "from 10 to 600 seconds"],
        "panel.relay_pulse": ["out of range", "from 0.2 to 30 seconds"],
        "camera.bitrate_kbps": ["out of range", "from 100 to 8000"],
    },
    "invite_before_ring.toml": {"calls.invite_lifetime": ["calls.ring_timeout", "at least 120"]},
    "odd_width.toml": {
        "camera.width": ["is odd", "1278 or 1280"],
        "camera.height": ["whole number of pixels like 720", "leave out the decimal point"],
    },
    "duplicate_pins.toml": {
        "panel.status_led_pin": ["GPIO 5 is already used by panel.call_led_pin", "its own pin"],
        "panel.relay_pin": ["GPIO 17 is already used by panel.button_pin (its default)", "its own pin"],
    },
    "reserved_pin.toml": {
        "panel.button_pin": ["reserved for the HAT ID EEPROM", "from 2 to 27"],
        "panel.relay_pin": ["not the physical pin number", "from 2 to 27"],
    },
    "alsa_card_index.toml": {
        "audio.capture_device": ["can change between boots", "plughw:CARD=<name>,DEV=0", "arecord -L"],
        "audio.playback_device": ["can change between boots", "plughw:CARD=<name>,DEV=0", "aplay -L"],
    },
    "unknown_key.toml": {
        "panel.buton_pin": ["unknown setting", "did you mean button_pin?"],
        "camrea": ["unknown section", "did you mean [camera]?"],
    },
    "misplaced_settings.toml": {
        "ring_timeout": ["above every [section] header", "move it below the [calls] header"],
        "panel.framerate": ["belongs in the [camera] section", "move it below the [camera] header"],
    },
    "missing_required.toml": {
        "matrix.user_id": ["missing", 'add user_id = "@door:example.org" to the [matrix] section'],
        "matrix.room_id": ["missing", 'add room_id = "!abc123:example.org"'],
        "matrix.owner": ["missing", 'add owner = "@alice:example.org"', "or, for a household", "[[residents]]"],
    },
    "missing_matrix.toml": {  # the other sections are still checked
        "matrix": ["missing section", "add a [matrix] section"],
        "calls.ring_timeout": ["from 10 to 600 seconds"],
    },
    "two_credentials.toml": {
        "matrix.access_token": ["set together with matrix.password", "keep exactly one", "password_file"],
    },
    "no_credential.toml": {"matrix.password_file": ["needs a credential", 'add password_file = "/etc/intercom/']},
    "syntax_error.toml": {"": ["TOML syntax error at line 4, column 9", "owner = @alice", '"double quotes"']},
    "many_problems.toml": {
        "matrix.homeserver": ['"https://matrix.example.org"'],
        "matrix.user_id": ["write it as @door:example.org"],
        "matrix.password_file": ["relative path", "absolute path"],
        "matrix.room_id": ["not a room ID", "Room settings > Advanced"],
        "matrix.owner": ["missing", "add owner ="],
        "calls.ring_timeout": ['got the string "1 minute"', "like 60"],
        "calls.connect_timeout": ["from 3 to 120 seconds"],
        "panel.pin_factory": ['did you mean "lgpio"?'],
        "panel.open_command": ["contains spaces", 'without spaces, like "!open"'],
        "panel.buton_pull_up": ["did you mean button_pull_up?"],
        "panel.call_led_pin": ["already used by panel.button_pin"],
        "audio.playback_device": ["plughw:CARD=<name>,DEV=0"],
        "audio.echo_cancellation": ["true or false", "without quotes"],
        "camera.source": ["use picamera2 or synthetic"],
    },
}


def _write_private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def _config_with_secret(tmp_path: Path, mode: int = 0o600, secret: str = "hunter2-door\n") -> tuple[Path, Path]:
    """The shipped example, pointed at a password file created in tmp_path with the given mode."""
    secret_file = _write_private(tmp_path / "password", secret, mode)
    config = tmp_path / "intercom.toml"
    config.write_text(EXAMPLE_TEXT.replace(EXAMPLE_SECRET_PATH, str(secret_file)), encoding="utf-8")
    return config, secret_file


def _check(path: Path) -> tuple[int, str]:
    out = io.StringIO()
    return check_config_main(str(path), out), out.getvalue()


# --- the broken files ------------------------------------------------------------------------------------------------


def test_every_broken_file_is_in_the_table() -> None:
    on_disk = {p.name for p in CONFIGS.glob("*.toml")} - {"good_minimal.toml"}
    assert on_disk == set(BROKEN)


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_file_reports_each_setting_with_its_fix(name: str) -> None:
    expected = BROKEN[name]
    status, output = _check(CONFIGS / name)

    lines = output.splitlines()
    prefix = f"{CONFIGS / name}: "
    assert all(line.startswith(prefix) for line in lines), output
    reported = [line.removeprefix(prefix) for line in lines]
    if "" in expected:  # unparsable: one line, no count, exit status 2
        assert status == 2
        assert len(reported) == 1
        assert all(fix in reported[0] for fix in expected[""]), output
        return

    assert status == 1
    *problems, count = reported
    assert count.startswith(f"{len(expected)} problem")
    by_field = {line.split(": ", 1)[0]: line for line in problems}
    assert set(by_field) == set(expected), output
    for field, fixes in expected.items():
        for fix in fixes:
            assert fix in by_field[field], f"{fix!r} not in {by_field[field]!r}"


@pytest.mark.parametrize("name", sorted(n for n, fields in BROKEN.items() if "" not in fields))
def test_load_config_raises_with_the_same_problems(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(str(CONFIGS / name))
    assert {p.field for p in caught.value.problems} == set(BROKEN[name])
    assert not caught.value.unreadable


@pytest.mark.parametrize("value", ['"door"', "5", "[1, 2]"])
def test_section_that_is_not_a_table_is_one_problem(value: str) -> None:
    problems = validate_text(f"matrix = {value}\n[calls]\nring_timeout = 5\n")
    assert [p.field for p in problems] == ["matrix", "calls.ring_timeout"]
    assert "expected a [matrix] section" in problems[0].message


def test_all_problems_are_reported_at_once() -> None:
    problems = validate_text((CONFIGS / "many_problems.toml").read_text(encoding="utf-8"))
    assert len(problems) == len(BROKEN["many_problems.toml"]) == 14


# --- secret files ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_password_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    config, secret = _config_with_secret(tmp_path, mode)
    status, output = _check(config)
    assert status == 1
    assert f"matrix.password_file: {secret} can be read or changed by other users (mode {mode:04o})" in output
    assert f"chmod 600 {secret}" in output
    assert "chown" in output
    assert "hunter2" not in output


def test_missing_password_file(tmp_path: Path) -> None:
    config, secret = _config_with_secret(tmp_path)
    secret.unlink()
    status, output = _check(config)
    assert status == 1
    assert f"matrix.password_file: {secret} does not exist; create it" in output
    assert f"chmod 600 {secret}" in output


def test_password_file_that_is_a_directory(tmp_path: Path) -> None:
    config, secret = _config_with_secret(tmp_path)
    secret.unlink()
    secret.mkdir(mode=0o700)
    assert "is not a regular file" in _check(config)[1]


def test_empty_password_file(tmp_path: Path) -> None:
    config, _ = _config_with_secret(tmp_path, secret="\n")
    assert "is empty; put the secret on its first line" in _check(config)[1]


def test_private_password_file_is_read_only_when_asked(tmp_path: Path) -> None:
    config, secret = _config_with_secret(tmp_path)
    loaded = load_config(str(config))
    secret.write_text("rotated\n", encoding="utf-8")  # read at call time, so a new password is picked up
    assert loaded.matrix.read_secret() == ("password", "rotated")
    assert "rotated" not in repr(loaded)


def test_read_secret_explains_a_file_that_vanished(tmp_path: Path) -> None:
    config, secret = _config_with_secret(tmp_path)
    loaded = load_config(str(config))
    secret.unlink()
    with pytest.raises(ConfigError, match="matrix.password_file: cannot read"):
        loaded.matrix.read_secret()


def test_check_files_false_skips_the_filesystem() -> None:
    data = tomllib.loads(EXAMPLE_TEXT)
    assert parse_config(data, check_files=False).matrix.password_file == EXAMPLE_SECRET_PATH


@pytest.mark.skipif(os.path.exists(EXAMPLE_SECRET_PATH), reason="this machine has a real intercom secret")
def test_shipped_example_only_lacks_its_secret_file() -> None:
    """As documented at the top of the example: the one problem is the password file that isn't created yet."""
    problems = validate_text(EXAMPLE_TEXT)
    assert [p.field for p in problems] == ["matrix.password_file"]
    assert "does not exist" in problems[0].message


# --- good files ------------------------------------------------------------------------------------------------------


def test_example_config_loads_to_the_documented_values(tmp_path: Path) -> None:
    config, secret = _config_with_secret(tmp_path)
    loaded = load_config(str(config))
    assert loaded == Config(
        matrix=MatrixConfig(
            homeserver="https://matrix.example.org",
            user_id="@door:example.org",
            password_file=str(secret),
            device_name="Front door intercom",
            room_id="!abc123:example.org",
            owner="@alice:example.org",
            state_dir="/var/lib/intercom",
        ),
        calls=CallsConfig(ring_timeout=60, invite_lifetime=90, connect_timeout=15, max_call_duration=300,
                          prepare_timeout=10, ended_display=10),
        panel=PanelConfig(pin_factory="auto", button_pin=17, button_pull_up=True, debounce_ms=50, call_led_pin=22,
                          status_led_pin=23, relay_pin=27, relay_active_high=True, relay_pulse=3.0,
                          open_command="!open", open_window=60, snapshot_command="!snapshot"),
        audio=AudioConfig(capture_device="default", playback_device="default", echo_cancellation=True),
        camera=CameraConfig(source="picamera2", width=1280, height=720, framerate=30, bitrate_kbps=1500,
                            keyframe_interval=2.0, snapshots_kept=100, snapshots_max_mb=50, ring_picture=True),
        path=str(config),
    )
    assert loaded.matrix.read_secret() == ("password", "hunter2-door")


def test_example_documents_every_setting_and_shows_the_defaults() -> None:
    """The example is the reference users copy from: it must mention every setting, and its optional sections
    must show the real defaults, as its header promises."""
    for section, cls in [("matrix", MatrixConfig), ("calls", CallsConfig), ("panel", PanelConfig),
                         ("audio", AudioConfig), ("camera", CameraConfig)]:
        for f in dataclasses.fields(cls):
            # Set, or shown commented out as an alternative ("# access_token_file = ...").
            assert re.search(rf"^(# )?{f.name} = ", EXAMPLE_TEXT, re.MULTILINE), f"{section}.{f.name} isn't shown"
    data = tomllib.loads(EXAMPLE_TEXT)
    for section, cls in [("calls", CallsConfig), ("panel", PanelConfig), ("audio", AudioConfig),
                         ("camera", CameraConfig)]:
        assert cls(**data[section]) == cls(), f"[{section}] in the example differs from the defaults"


def test_minimal_config_takes_the_defaults() -> None:
    loaded = load_config(str(CONFIGS / "good_minimal.toml"))
    assert loaded.matrix.device_name == "Doorbell intercom"
    assert loaded.matrix.state_dir == "/var/lib/intercom"
    assert (loaded.calls, loaded.panel, loaded.audio, loaded.camera) == (
        CallsConfig(), PanelConfig(), AudioConfig(), CameraConfig()
    )
    assert loaded.matrix.read_secret() == ("access_token", "syt_ZG9vcg_test_token")
    assert "syt_ZG9vcg" not in repr(loaded)  # inline secrets stay out of repr
    assert loaded.matrix.credential_source == "access token written in the config file"


def test_check_config_ok_prints_a_summary_without_secrets(tmp_path: Path) -> None:
    config, secret = _config_with_secret(tmp_path)
    status, output = _check(config)
    assert status == 0
    assert output.splitlines()[0] == f"{config}: OK"
    for shown in ("https://matrix.example.org", "@door:example.org", "!abc123:example.org", "@alice:example.org",
                  f"password from {secret}"):
        assert shown in output
    assert "hunter2" not in output


@pytest.mark.parametrize("text", [
    'homeserver = "http://localhost:8008"',
    'homeserver = "http://127.0.0.1:8008/"',
    'room_id = "!opaqueRoomIdWithoutServer"',  # room version 12 IDs have no ":server" part
    'owner = "@bob.smith+door=1/x:example.org:8448"',
])
def test_accepted_variants(text: str) -> None:
    base = (CONFIGS / "good_minimal.toml").read_text(encoding="utf-8")
    key = text.split(" = ")[0]
    lines = [text if line.startswith(f"{key} = ") else line for line in base.splitlines()]
    assert validate_text("\n".join(lines)) == []


# --- unreadable files, errors, the real command ----------------------------------------------------------------------


def test_file_that_does_not_exist(tmp_path: Path) -> None:
    status, output = _check(tmp_path / "nope.toml")
    assert status == 2
    assert output.startswith(f"{tmp_path / 'nope.toml'}: no such file; check the path")
    assert output.count("\n") == 1


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[matrix]\ndevice_name = "T\xfcr"\n')
    status, output = _check(path)
    assert status == 2 and "is not UTF-8 text" in output


def test_config_error_is_an_intercom_error_and_a_value_error() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"matrix": {}})
    assert isinstance(caught.value, IntercomError) and isinstance(caught.value, ValueError)
    assert str(caught.value).startswith("<memory>: matrix.homeserver: missing")


def test_problem_str() -> None:
    assert str(ConfigProblem("matrix.owner", "x; y")) == "matrix.owner: x; y"
    assert str(ConfigProblem("", "TOML syntax error")) == "TOML syntax error"


def _run_cli(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "intercom.cli", "check-config", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_cli_reports_a_broken_file() -> None:
    result = _run_cli(CONFIGS / "ring_timeout_string.toml")
    assert result.returncode == 1
    assert "calls.ring_timeout: expected a number of seconds like 60" in result.stdout
    assert "without quotes or units" in result.stdout


def test_cli_accepts_a_good_file(tmp_path: Path) -> None:
    config, _ = _config_with_secret(tmp_path)
    result = _run_cli(config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"{config}: OK")


def test_cli_reports_a_syntax_error() -> None:
    result = _run_cli(CONFIGS / "syntax_error.toml")
    assert result.returncode == 2
    assert "line 4, column 9" in result.stdout


# --- robustness: whatever the file holds, the answer is a Config or a ConfigError ------------------------------------

_toml_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
).filter(lambda v: v is not None)
_setting_names = st.sampled_from(
    [f.name for cls in (MatrixConfig, CallsConfig, PanelConfig, AudioConfig, CameraConfig)
     for f in dataclasses.fields(cls)] + ["bogus"]
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(
    st.sampled_from(["matrix", "calls", "panel", "audio", "camera", "extra"]),
    st.dictionaries(_setting_names, _toml_values, max_size=6) | _toml_values,
    max_size=5,
))
def test_any_document_gives_a_config_or_explained_problems(data: dict) -> None:
    try:
        parse_config(data, check_files=False)
    except ConfigError as err:
        assert err.problems
        assert all(p.field and p.message for p in err.problems)


@pytest.mark.parametrize("value, words", [
    ("0", ["camera.snapshots_max_mb", "0 is out of range", "from 1 to 10000 MB"]),
    ("20000", ["20000 is out of range", "from 1 to 10000 MB"]),
    ('"50 MB"', ['expected a whole number of megabytes like 50, got the string "50 MB"', "without quotes"]),
    ("0.5", ["whole number of megabytes like 50", "leave out the decimal point"]),
])
def test_snapshots_max_mb_is_checked_with_an_explanation(value: str, words: list[str]) -> None:
    text = (CONFIGS / "good_minimal.toml").read_text(encoding="utf-8") + f"\n[camera]\nsnapshots_max_mb = {value}\n"
    (problem,) = validate_text(text)
    assert problem.field == "camera.snapshots_max_mb"
    for word in words:
        assert word in str(problem)


def test_snapshots_max_mb_is_loaded() -> None:
    data = tomllib.loads((CONFIGS / "good_minimal.toml").read_text())
    assert parse_config(data, check_files=False).camera.snapshots_max_mb == 50
    data["camera"] = {"snapshots_max_mb": 200, "snapshots_kept": 1000}
    camera = parse_config(data, check_files=False).camera
    assert (camera.snapshots_max_mb, camera.snapshots_kept) == (200, 1000)


def test_call_and_command_settings_reach_the_core_with_the_cores_defaults() -> None:
    from intercom.app import core_settings
    from intercom.core import CallTimings, CommandSettings

    # Every [calls] setting is a core timing, and the config's defaults are the core's own.
    assert {f.name for f in dataclasses.fields(CallsConfig)} <= {f.name for f in dataclasses.fields(CallTimings)}
    defaults = core_settings(load_config(str(CONFIGS / "good_minimal.toml")), "party")
    assert defaults.timings == CallTimings() and defaults.commands == CommandSettings()
    # A value set in the file gets to the core.
    data = tomllib.loads((CONFIGS / "good_minimal.toml").read_text())
    data["calls"] = {"ring_timeout": 45, "connect_timeout": 20, "ended_display": 3}
    data["panel"] = {"open_command": "!door", "open_window": 30, "relay_pulse": 1.5}
    custom = core_settings(parse_config(data, check_files=False), "party")
    assert (custom.timings.ring_timeout, custom.timings.connect_timeout, custom.timings.ended_display) == (45, 20, 3)
    assert custom.commands == CommandSettings(open_command="!door", open_window=30, relay_pulse=1.5)


@pytest.mark.parametrize("text", [
    '[matrix]\npassword = hunter2 x\n', '[matrix]\naccess_token = syt_hunter2 x\n', '[matrix]\nhunter2 x\n',
    '[wifi]\npassword = "hunter2\n',
])
def test_a_syntax_error_never_echoes_a_secret(text):
    """The bad line is quoted to help find it, except a secret's value (or a line that is no setting at all)."""
    (problem,) = validate_text(text)
    assert "TOML syntax error at line 2" in str(problem) and "hunter2" not in str(problem)
