"""A household config on the SD card (intercom.service.bootconfig): ``[[residents]]`` and ``[[buttons]]`` go
through the boot-time import like the sections do, into the door's config and the card's applied copy."""

from __future__ import annotations

import io
import os
import tomllib
from pathlib import Path

import pytest

from intercom.service.bootconfig import APPLIED_NAME, CARD_NAME, CONFIG_PATH, ERRORS_NAME, Target, dump_toml, \
    import_boot_config, main
from intercom.service.config import parse_config

PASSWORD = "door pass: horse-battery-9"
CARD = f"""\
# our house
[matrix]
homeserver = "https://matrix.example.org"
user_id = "@door:example.org"
password = "{PASSWORD}"   # the door's password

[[residents]]   # Alice, in the room we made
user_id = "@alice:example.org"
room_id = "!alice:example.org"
quiet_hours = "22:00-07:00"

[[residents]]
user_id = "@bob:example.org"
open_door = false

[panel]
relay_pin = 26

[[buttons]]
pin = 5
name = "Flat 1"
residents = ["@alice:example.org"]

[[buttons]]
pin = 6
name = "Flat 2"
residents = ["@bob:example.org"]
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
    return Target(root=root, service_uid=os.getuid(), service_gid=os.getgid(), root_uid=os.getuid(),
                  root_gid=os.getgid())


def run(card: Path, target: Target, text: str):
    (card / CARD_NAME).write_text(text)
    log = io.StringIO()
    return import_boot_config(card, target, log), log.getvalue()


def test_a_household_card_is_applied_with_its_residents_and_buttons(card: Path, target: Target) -> None:
    expected = parse_config(tomllib.loads(CARD), check_files=False)
    result, log = run(card, target, CARD)
    assert result.status == "applied", log

    written = (target.root / CONFIG_PATH).read_text()
    assert PASSWORD not in written and "[[residents]]" in written and "[[buttons]]" in written
    config = parse_config(tomllib.loads(written), check_files=False)
    assert config.household() == expected.household()
    assert config.button_pins() == (5, 6) and config.panel.relay_pin == 26
    assert config.matrix.password_file == "/etc/intercom/secrets/password"

    applied = (card / APPLIED_NAME).read_text()
    assert PASSWORD not in applied
    assert "# Alice, in the room we made" in applied  # the user's file, kept as written (comments and all)
    data = tomllib.loads(applied)
    assert [r["user_id"] for r in data["residents"]] == ["@alice:example.org", "@bob:example.org"]
    assert [b["name"] for b in data["buttons"]] == ["Flat 1", "Flat 2"]


def test_the_applied_copy_can_be_applied_again(card: Path, target: Target) -> None:
    run(card, target, CARD)
    result, log = run(card, target, (card / APPLIED_NAME).read_text())
    assert result.status == "applied", log


def test_a_secret_repeated_in_a_comment_rewrites_the_copy_and_keeps_the_household(card: Path,
                                                                                   target: Target) -> None:
    text = CARD.replace("# our house", f"# our house; the door's password is {PASSWORD}")
    result, log = run(card, target, text)
    assert result.status == "applied", log
    applied = (card / APPLIED_NAME).read_text()
    assert PASSWORD not in applied and "rewritten without the original comments" in applied
    data = tomllib.loads(applied)
    assert len(data["residents"]) == 2 and data["buttons"][1]["residents"] == ["@bob:example.org"]
    assert parse_config(data, check_files=False).button_pins() == (5, 6)


def test_household_problems_on_the_card_are_reported_in_the_order_of_the_file(card: Path, target: Target) -> None:
    text = CARD.replace('user_id = "@bob:example.org"', 'user_id = "@door:example.org"') + (
        '\n[wifi]\nssid = "Home"\ncountry = "Germany"\n')
    text = text.replace("[matrix]", '[resident]\nuser_id = "@carol:example.org"\n\n[matrix]')
    result, _ = run(card, target, text)
    assert result.status == "rejected"
    fields = [p.field for p in result.problems]
    assert fields == ["resident", "residents[2].user_id", "buttons[2].residents", "wifi.country"], fields
    report = (card / ERRORS_NAME).read_text()
    assert "unknown section [resident]; did you mean [[residents]]?" in report
    assert "residents[2].user_id: is the door's own account" in report
    assert "buttons[2].residents: rings @bob:example.org, who is not a resident" in report
    assert PASSWORD not in report
    assert not (target.root / CONFIG_PATH).exists()


def test_check_only_accepts_a_household_card(card: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (card / CARD_NAME).write_text(CARD)
    assert main(["--check", str(card / CARD_NAME), "--root", str(card)]) == 0
    assert capsys.readouterr().out.endswith(": OK\n")


def test_dump_toml_writes_arrays_of_tables() -> None:
    data = {"matrix": {"user_id": "@door:example.org"},
            "residents": [{"user_id": "@a:example.org", "open_door": False}, {"user_id": "@b:example.org"}],
            "calls": {"ring_timeout": 45.0}}
    text = dump_toml(data, "# header\n")
    assert text.count("[[residents]]") == 2
    assert tomllib.loads(text) == data
