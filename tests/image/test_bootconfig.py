"""The image's boot-time import of intercom.toml from the SD card (intercom.service.bootconfig), in temporary
directories: the card is one directory, the door's root file system another; no root needed."""

from __future__ import annotations

import io
import os
import stat
import tomllib
from pathlib import Path

import pytest

from intercom.service import bootconfig
from intercom.service.bootconfig import (
    APPLIED_NAME,
    CARD_NAME,
    CONFIG_PATH,
    ERRORS_MARKER,
    ERRORS_NAME,
    NM_KEYFILE,
    WIFI_COUNTRY_FILE,
    Target,
    Wifi,
    import_boot_config,
    nm_keyfile,
)
from intercom.service.config import parse_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "image-build" / "intercom.toml.example"
MATRIX_PASSWORD = "door pass: horse-battery-9"
WIFI_PASSWORD = "wifi secret 123"

GOOD = f"""\
# my door
[matrix]
homeserver = "https://matrix.example.org"
user_id = "@door:example.org"
password = "{MATRIX_PASSWORD}"   # the door's password
room_id = "!abc123:example.org"
owner = "@alice:example.org"

[wifi]
ssid = "Home Net"
password = "{WIFI_PASSWORD}"
country = "de"

[system]
hostname = "front-door"

[calls]
ring_timeout = 45
"""


@pytest.fixture
def card(tmp_path: Path) -> Path:
    path = tmp_path / "card"
    path.mkdir()
    return path


@pytest.fixture
def target(tmp_path: Path) -> Target:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tdoorbell\n::1\tlocalhost\n")
    (root / "etc/hostname").write_text("doorbell\n")
    return Target(root=root, service_uid=os.getuid(), service_gid=os.getgid(), root_uid=os.getuid(),
                  root_gid=os.getgid())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def run(card: Path, target: Target, text: str | None = None) -> tuple[bootconfig.ImportResult, str]:
    if text is not None:
        (card / CARD_NAME).write_text(text)
    log = io.StringIO()
    return import_boot_config(card, target, log), log.getvalue()


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mode)
            for p in sorted(root.rglob("*")) if p.is_file() and not str(p).endswith(ERRORS_MARKER)}


# --- a good file ------------------------------------------------------------------------------------------------------


def test_good_file_is_applied_with_private_secrets(card: Path, target: Target) -> None:
    result, log = run(card, target, GOOD)
    assert result.status == "applied", log
    root = target.root

    config = root / CONFIG_PATH
    assert mode(config) == 0o640 and mode(config.parent) == 0o750
    data = tomllib.loads(config.read_text())
    assert set(data) == {"matrix", "calls"}  # [wifi]/[system] are the image's, not the service's
    assert data["matrix"]["password_file"] == "/etc/intercom/secrets/password"
    assert "password" not in data["matrix"]
    assert data["calls"]["ring_timeout"] == 45
    parse_config(data, check_files=False)  # the service's own checker accepts what was written
    assert MATRIX_PASSWORD not in config.read_text() and WIFI_PASSWORD not in config.read_text()

    secrets = root / "etc/intercom/secrets"
    assert mode(secrets) == 0o700 and mode(secrets / "password") == 0o600
    assert (secrets / "password").read_text() == MATRIX_PASSWORD + "\n"
    assert secrets.stat().st_uid == target.service_uid

    keyfile = root / NM_KEYFILE
    assert mode(keyfile) == 0o600
    assert "ssid=Home Net\n" in keyfile.read_text()
    assert "psk=wifi\\ssecret\\s123\n" in keyfile.read_text()
    assert "key-mgmt=wpa-psk" in keyfile.read_text()
    assert (root / WIFI_COUNTRY_FILE).read_text().splitlines()[-1] == "options cfg80211 ieee80211_regdom=DE"

    assert (root / "etc/hostname").read_text() == "front-door\n"
    hosts = (root / "etc/hosts").read_text().splitlines()
    assert "127.0.1.1\tfront-door" in hosts and "127.0.1.1\tdoorbell" not in hosts and "::1\tlocalhost" in hosts

    assert "applied intercom.toml" in log and MATRIX_PASSWORD not in log and WIFI_PASSWORD not in log


def test_card_copy_is_scrubbed_and_keeps_the_users_text(card: Path, target: Target) -> None:
    (card / ERRORS_NAME).write_text("old errors")
    run(card, target, GOOD)
    assert not (card / CARD_NAME).exists() and not (card / ERRORS_NAME).exists()
    applied = (card / APPLIED_NAME).read_text()
    assert MATRIX_PASSWORD not in applied and WIFI_PASSWORD not in applied
    assert "# my door" in applied and 'hostname = "front-door"' in applied  # comments and settings kept
    data = tomllib.loads(applied)
    assert data["matrix"]["password_file"] == "/etc/intercom/secrets/password"
    assert "password" not in data["matrix"] and "password" not in data["wifi"]


def test_the_applied_copy_can_be_applied_again_and_keeps_the_secrets(card: Path, target: Target) -> None:
    run(card, target, GOOD)
    text = (card / APPLIED_NAME).read_text().replace("ring_timeout = 45", "ring_timeout = 30")
    result, log = run(card, target, text)
    assert result.status == "applied", log
    root = target.root
    assert tomllib.loads((root / CONFIG_PATH).read_text())["calls"]["ring_timeout"] == 30
    assert (root / "etc/intercom/secrets/password").read_text() == MATRIX_PASSWORD + "\n"
    assert "psk=wifi\\ssecret\\s123\n" in (root / NM_KEYFILE).read_text()  # the stored Wi-Fi password stays


def test_access_token_replaces_a_previous_password(card: Path, target: Target) -> None:
    run(card, target, GOOD)
    result, _ = run(card, target, GOOD.replace(f'password = "{MATRIX_PASSWORD}"', 'access_token = "syt_abc_123"'))
    assert result.status == "applied"
    secrets = target.root / "etc/intercom/secrets"
    assert (secrets / "access_token").read_text() == "syt_abc_123\n" and mode(secrets / "access_token") == 0o600
    assert not (secrets / "password").exists()
    matrix = tomllib.loads((target.root / CONFIG_PATH).read_text())["matrix"]
    assert matrix["access_token_file"] == "/etc/intercom/secrets/access_token" and "password_file" not in matrix
    assert "syt_abc_123" not in (card / APPLIED_NAME).read_text()


def test_without_wifi_and_system_sections_only_the_intercom_is_configured(card: Path, target: Target) -> None:
    text = GOOD.split("[wifi]")[0] + "[calls]\nring_timeout = 45\n"
    result, _ = run(card, target, text)
    assert result.status == "applied"
    assert not (target.root / NM_KEYFILE).exists()
    assert (target.root / "etc/hostname").read_text() == "doorbell\n"


def test_ssh_keys_for_root(card: Path, target: Target) -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx me@laptop"
    result, _ = run(card, target, GOOD.replace('hostname = "front-door"',
                                               f'hostname = "front-door"\nssh_authorized_keys = ["{key}"]'))
    assert result.status == "applied"
    keys = target.root / "root/.ssh/authorized_keys"
    assert key in keys.read_text().splitlines() and mode(keys) == 0o600 and mode(keys.parent) == 0o700


def test_a_secret_the_line_rewrite_cannot_remove_is_scrubbed_by_rewriting_the_file(card: Path,
                                                                                   target: Target) -> None:
    text = GOOD.replace(f'password = "{MATRIX_PASSWORD}"', f'password = """{MATRIX_PASSWORD}"""  # {MATRIX_PASSWORD}')
    result, _ = run(card, target, text)
    assert result.status == "applied"
    applied = (card / APPLIED_NAME).read_text()
    assert MATRIX_PASSWORD not in applied and WIFI_PASSWORD not in applied
    assert tomllib.loads(applied)["system"]["hostname"] == "front-door"


# --- a broken file ------------------------------------------------------------------------------------------------------

BROKEN = GOOD.replace('owner = "@alice:example.org"', 'owner = "alice"').replace('country = "de"', 'country = "Germany"')


def test_broken_file_changes_nothing_and_says_what_to_fix(card: Path, target: Target) -> None:
    run(card, target, GOOD)
    before = snapshot(target.root)
    result, log = run(card, target, BROKEN)
    assert result.status == "rejected"
    assert snapshot(target.root) == before  # the previous working config, secrets, Wi-Fi and host name are untouched
    assert (card / CARD_NAME).read_text() == BROKEN  # left for the user to fix

    fields = [problem.field for problem in result.problems]
    assert fields == ["matrix.owner", "wifi.country"]  # in the order of the file
    report = (card / ERRORS_NAME).read_text()
    assert "NOT applied" in report and "keeps using the settings it had before" in report
    assert 'intercom.toml: matrix.owner: "alice" is not a Matrix user ID; write it as @alice:example.org' in report
    assert 'wifi.country: "Germany" is not a two-letter country code' in report and '"DE"' in report
    assert b"\r\n" in (card / ERRORS_NAME).read_bytes()  # readable in any editor on the user's PC
    assert MATRIX_PASSWORD not in report and WIFI_PASSWORD not in report
    assert "<3>intercom-boot-config: intercom.toml: matrix.owner:" in log  # the journal, at error priority
    marker = target.root / ERRORS_MARKER
    assert "matrix.owner" in marker.read_text() and mode(marker) == 0o644  # for the service's ERROR LEDs


def test_fixing_the_file_clears_the_errors(card: Path, target: Target) -> None:
    run(card, target, BROKEN)
    assert (card / ERRORS_NAME).exists() and (target.root / ERRORS_MARKER).exists()
    result, _ = run(card, target, GOOD)
    assert result.status == "applied"
    assert not (card / ERRORS_NAME).exists() and not (target.root / ERRORS_MARKER).exists()


def test_first_boot_with_a_broken_file_says_the_door_has_no_settings(card: Path, target: Target) -> None:
    result, log = run(card, target, BROKEN)
    assert result.status == "rejected" and not (target.root / CONFIG_PATH).exists()
    assert "has no settings yet" in (card / ERRORS_NAME).read_text() and "no settings yet" in log


def test_toml_syntax_error_is_reported_with_its_line(card: Path, target: Target) -> None:
    result, _ = run(card, target, GOOD.replace("ring_timeout = 45", "ring_timeout = 45s"))
    assert result.status == "rejected"
    report = (card / ERRORS_NAME).read_text()
    assert "TOML syntax error at line" in report and "numbers without units" in report


@pytest.mark.parametrize("edit, field, words", [
    (('ssid = "Home Net"', ""), "wifi.ssid", "missing; add ssid ="),
    (('ssid = "Home Net"', 'ssid = "' + "x" * 33 + '"'), "wifi.ssid", "at most 32"),
    ((f'password = "{WIFI_PASSWORD}"', 'password = "short"'), "wifi.password", "8 to 63"),
    ((f'password = "{WIFI_PASSWORD}"', 'password = "CHANGE ME"'), "wifi.password", "placeholder"),
    ((f'password = "{WIFI_PASSWORD}"', 'password = ""'), "wifi.password", "delete the line if the network is open"),
    ((f'password = "{WIFI_PASSWORD}"', 'passwd = "x"'), "wifi.passwd", "did you mean password?"),
    (('country = "de"', ""), "wifi.country", "missing; add country ="),
    (('hostname = "front-door"', 'hostname = "Front Door"'), "system.hostname", 'like "front-door"'),
    (('hostname = "front-door"', "hostname = 7"), "system.hostname", "double quotes"),
    (("[wifi]", "[wify]"), "wify", "did you mean [wifi]?"),
    ((f'password = "{MATRIX_PASSWORD}"', 'password = "changeme"'), "matrix.password", "placeholder"),
    ((f'password = "{MATRIX_PASSWORD}"', 'password_file = "/etc/intercom/secrets/mine"'), "matrix.password_file",
     "does not exist on the door"),
    (('ring_timeout = 45', 'ring_timeout = 4'), "calls.ring_timeout", "out of range"),
])
def test_each_problem_names_the_setting_and_the_fix(card: Path, target: Target, edit: tuple[str, str], field: str,
                                                     words: str) -> None:
    old, new = edit
    assert old in GOOD
    result, _ = run(card, target, GOOD.replace(old, new, 1))
    assert result.status == "rejected"
    assert [p.field for p in result.problems] == [field], result.problems
    assert words in result.problems[0].message
    assert f"{field}: " in (card / ERRORS_NAME).read_text()


def test_password_file_already_on_the_door_is_accepted(card: Path, target: Target) -> None:
    secret = target.root / "etc/intercom/secrets/mine"
    secret.parent.mkdir(parents=True)
    secret.write_text("pw\n")
    text = GOOD.replace(f'password = "{MATRIX_PASSWORD}"', 'password_file = "/etc/intercom/secrets/mine"')
    result, _ = run(card, target, text)
    assert result.status == "applied"
    assert tomllib.loads((target.root / CONFIG_PATH).read_text())["matrix"]["password_file"] == \
        "/etc/intercom/secrets/mine"


def test_a_file_saved_by_notepad_is_accepted(card: Path, target: Target) -> None:
    (card / f"{CARD_NAME}.txt").write_bytes(b"\xef\xbb\xbf" + GOOD.replace("\n", "\r\n").encode())
    result, log = run(card, target)
    assert result.status == "applied", log
    assert "renamed intercom.toml.txt" in log and not (card / f"{CARD_NAME}.txt").exists()
    assert (target.root / "etc/hostname").read_text() == "front-door\n"


def test_no_file_on_the_card_does_nothing(card: Path, target: Target) -> None:
    before = snapshot(target.root)
    result, _ = run(card, target)
    assert result.status == "absent" and snapshot(target.root) == before


# --- the Wi-Fi profile -----------------------------------------------------------------------------------------------


def test_open_network_has_no_security_section() -> None:
    text = nm_keyfile(Wifi("Cafe", None, "GB"))
    assert "[wifi-security]" not in text and "psk=" not in text and "ssid=Cafe\n" in text


def test_unusual_network_names_are_written_as_bytes_and_hidden_is_kept() -> None:
    text = nm_keyfile(Wifi("a;b\\c", "pass\\word 1", "US", hidden=True))
    assert "ssid=97;59;98;92;99;\n" in text and "hidden=true\n" in text
    assert "psk=pass\\\\word\\s1\n" in text


def test_keyfile_is_a_valid_networkmanager_profile() -> None:
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(nm_keyfile(Wifi("Home", "abcdefgh", "DE")))
    assert parser["connection"]["type"] == "wifi" and parser["connection"]["uuid"]
    assert parser["wifi"]["ssid"] == "Home" and parser["wifi-security"]["psk"] == "abcdefgh"


# --- the command line and the shipped example -------------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="main() makes root the owner of /etc/intercom, as at boot: needs root")
def test_main_applies_with_the_service_user_from_the_roots_passwd(card: Path, target: Target) -> None:
    (target.root / "etc/passwd").write_text(f"root:x:0:0::/root:/bin/sh\nintercom:x:{os.getuid()}:{os.getgid()}::"
                                            "/var/lib/intercom:/usr/sbin/nologin\n")
    (card / CARD_NAME).write_text(GOOD)
    assert bootconfig.main(["--card", str(card), "--root", str(target.root)]) == 0
    assert (target.root / CONFIG_PATH).exists()
    (card / CARD_NAME).write_text(BROKEN)
    assert bootconfig.main(["--card", str(card), "--root", str(target.root)]) == 1


def test_main_check_only(card: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (card / CARD_NAME).write_text(BROKEN)
    assert bootconfig.main(["--check", str(card / CARD_NAME)]) == 1
    assert "matrix.owner" in capsys.readouterr().out
    (card / CARD_NAME).write_text(GOOD)
    assert bootconfig.main(["--check", str(card / CARD_NAME)]) == 0


def test_shipped_example_is_valid_once_the_placeholders_are_filled_in(card: Path, target: Target) -> None:
    text = EXAMPLE.read_text()
    data = tomllib.loads(text)
    assert list(data)[:1] == ["matrix"] and set(bootconfig.ALL_SECTIONS) == set(data)
    result, _ = run(card, target, text)
    assert {p.field for p in result.problems} == {"matrix.password", "wifi.password"}  # only the placeholders
    result, log = run(card, target, text.replace('password = "CHANGE ME"', 'password = "a real password 1"'))
    assert result.status == "applied", log
