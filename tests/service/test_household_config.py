"""The household in the config file: ``[[residents]]`` and ``[[buttons]]``, or the single ``matrix.owner``.

Like tests/service/test_config.py, what matters most is the wording: each problem names the exact setting
(``residents[2].user_id``, counted from 1 as people count), says what is wrong and how to fix it, and every
problem in a file is reported in one run.
"""

from __future__ import annotations

import io
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intercom.core import CoreSettings
from intercom.core.household import Button, QuietHours, Resident
from intercom.service.config import (
    MAX_BUTTONS,
    MAX_RESIDENTS,
    ButtonConfig,
    ConfigError,
    check_config_main,
    parse_config,
    validate_text,
)

SECRET = "syt_household_secret_token"
DOOR = """\
[matrix]
homeserver = "https://matrix.example.org"
user_id = "@door:example.org"
access_token = "syt_household_secret_token"
"""
SINGLE = DOOR + 'room_id = "!abc123:example.org"\nowner = "@alice:example.org"\n'
ALICE = '[[residents]]\nuser_id = "@alice:example.org"\nroom_id = "!alice:example.org"\n'
BOB = '[[residents]]\nuser_id = "@bob:example.org"\n'
HOUSEHOLD = DOOR + "\n" + ALICE + "\n" + BOB


def load(text: str):
    return parse_config(tomllib.loads(text), check_files=False)


def problems_of(text: str) -> dict[str, str]:
    """setting -> message; each setting must be reported once."""
    problems = validate_text(text, check_files=False)
    by_field = {p.field: p.message for p in problems}
    assert len(by_field) == len(problems), problems
    assert all(SECRET not in str(p) for p in problems)
    return by_field


def only_problem(text: str) -> tuple[str, str]:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    return next(iter(problems.items()))


def assert_says(message: str, *words: str) -> None:
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def check(text: str, tmp_path: Path) -> tuple[int, str]:
    path = tmp_path / "intercom.toml"
    path.write_text(text, encoding="utf-8")
    out = io.StringIO()
    return check_config_main(str(path), out), out.getvalue()


# --- good files ------------------------------------------------------------------------------------------------------


def test_a_household_loads_with_its_defaults() -> None:
    config = load(HOUSEHOLD)
    assert config.residents == (
        Resident(user_id="@alice:example.org", room_id="!alice:example.org"),
        Resident(user_id="@bob:example.org", room_id=None, answer_calls=True, open_door=True, quiet_hours=None),
    )
    assert config.buttons == ()
    assert config.matrix.owner is None and config.matrix.room_id is None
    residents, buttons = config.household()
    assert residents == config.residents
    assert buttons == (Button(name="", residents=("@alice:example.org", "@bob:example.org")),)
    assert config.button_pins() == (17,)  # panel.button_pin's default rings everybody


def test_rights_and_quiet_hours_are_loaded() -> None:
    config = load(DOOR + ALICE + 'answer_calls = false\nopen_door = false\nquiet_hours = "22:00-07:00"\n')
    (alice,) = config.residents
    assert (alice.answer_calls, alice.open_door) == (False, False)
    assert alice.quiet_hours == QuietHours.parse("22:00-07:00")
    assert alice.quiet_at(23 * 60) and not alice.quiet_at(12 * 60)  # runs over midnight


def test_buttons_get_names_by_position_and_ring_everybody_by_default() -> None:
    config = load(HOUSEHOLD + '[[buttons]]\npin = 5\nname = " Flat 1 "\nresidents = ["@alice:example.org"]\n'
                              '[[buttons]]\npin = 6\n')
    assert config.buttons == (
        ButtonConfig(pin=5, name="Flat 1", residents=("@alice:example.org",)),
        ButtonConfig(pin=6, name="Button 2", residents=("@alice:example.org", "@bob:example.org")),
    )
    assert config.household()[1] == (Button(name="Flat 1", residents=("@alice:example.org",)),
                                      Button(name="Button 2", residents=("@alice:example.org", "@bob:example.org")))
    assert config.button_pins() == (5, 6)


def test_a_button_may_use_the_pin_panel_button_pin_would_have_had() -> None:
    config = load(HOUSEHOLD + "[[buttons]]\npin = 17\n")  # panel.button_pin is unused with [[buttons]]
    assert config.button_pins() == (17,)


def test_the_single_owner_form_is_a_household_of_one_as_before() -> None:
    config = load(SINGLE + "[panel]\nbutton_pin = 5\n")
    assert (config.residents, config.buttons) == ((), ())
    assert (config.matrix.owner, config.matrix.room_id) == ("@alice:example.org", "!abc123:example.org")
    assert config.household() == ((Resident(user_id="@alice:example.org", room_id="!abc123:example.org"),),
                                   (Button(name="", residents=("@alice:example.org",)),))
    assert config.button_pins() == (5,)


def test_the_single_owner_form_may_have_buttons_ringing_the_owner() -> None:
    config = load(SINGLE + "[[buttons]]\npin = 5\nname = \"Front\"\n[[buttons]]\npin = 6\nname = \"Back\"\n")
    assert config.household()[1] == (Button(name="Front", residents=("@alice:example.org",)),
                                      Button(name="Back", residents=("@alice:example.org",)))
    assert config.button_pins() == (5, 6)


def test_the_household_is_what_the_core_takes() -> None:
    residents, buttons = load(HOUSEHOLD + "[[buttons]]\npin = 5\nresidents = [\"@bob:example.org\"]\n").household()
    core = CoreSettings(user_id="@door:example.org", party_id="p", residents=residents, buttons=buttons)
    assert core.owner == "@alice:example.org" and core.buttons == buttons


def test_the_limits_themselves_are_accepted() -> None:
    people = "".join(f'[[residents]]\nuser_id = "@p{i}:example.org"\n' for i in range(MAX_RESIDENTS))
    pins = [p for p in range(2, 28) if p not in (22, 23, 27)][:MAX_BUTTONS]
    buttons = "".join(f"[[buttons]]\npin = {pin}\n" for pin in pins)
    config = load(DOOR + people + buttons)
    assert len(config.residents) == MAX_RESIDENTS and len(config.buttons) == MAX_BUTTONS


# --- either the owner or residents ------------------------------------------------------------------------------------


def test_neither_owner_nor_residents_explains_both_ways() -> None:
    problems = problems_of(DOOR)
    assert set(problems) == {"matrix.owner", "matrix.room_id"}
    assert_says(problems["matrix.owner"], "missing", 'add owner = "@alice:example.org" to the [matrix] section',
                "[[residents]]", 'user_id = "@alice:example.org"')
    assert_says(problems["matrix.room_id"], "missing", 'add room_id = "!abc123:example.org"')


def test_owner_and_residents_together() -> None:
    field, message = only_problem(DOOR + 'owner = "@alice:example.org"\n' + BOB)
    assert field == "matrix.owner"
    assert_says(message, "set together with [[residents]]", "use one of the two", "delete owner and room_id")


def test_room_id_without_owner_belongs_to_a_resident() -> None:
    field, message = only_problem(DOOR + 'room_id = "!abc123:example.org"\n' + BOB)
    assert field == "matrix.room_id"
    assert_says(message, "each resident has a room of their own", "[[residents]] entry", "delete it from [matrix]")


def test_owner_without_room_id_still_needs_the_room() -> None:
    field, message = only_problem(DOOR + 'owner = "@alice:example.org"\n')
    assert field == "matrix.room_id"
    assert_says(message, "missing", 'add room_id = "!abc123:example.org" to the [matrix] section')


def test_residents_written_as_one_table() -> None:
    field, message = only_problem(DOOR + '[residents]\nuser_id = "@alice:example.org"\n')
    assert field == "residents"
    assert_says(message, "one [residents] table", "write [[residents]]", "two pairs of square brackets")


def test_buttons_written_as_one_table() -> None:
    field, message = only_problem(SINGLE + "[buttons]\npin = 5\n")
    assert field == "buttons"
    assert_says(message, "one [buttons] table", "write [[buttons]]")


@pytest.mark.parametrize("value, got", [('["@alice:example.org"]', "a list"), ('"@alice:example.org"', "the string")])
def test_residents_that_are_not_tables(value: str, got: str) -> None:
    field, message = only_problem(f"residents = {value}\n" + DOOR)
    assert field == "residents"
    assert_says(message, f"expected [[residents]] entries, got {got}", "[[residents]] header",
                'user_id = "@alice:example.org"')


def test_an_empty_list_of_residents() -> None:
    field, message = only_problem("residents = []\n" + DOOR)
    assert field == "residents"
    assert_says(message, "lists no resident", "[[residents]] entry", "or delete residents = [] and use matrix.owner")


def test_misspelt_array_headers() -> None:
    problems = problems_of(SINGLE + '[[resident]]\nuser_id = "@bob:example.org"\n[[button]]\npin = 5\n')
    assert_says(problems["resident"], "unknown section [[resident]]", "did you mean [[residents]]?")
    assert_says(problems["button"], "unknown section [[button]]", "did you mean [[buttons]]?")


def test_too_many_residents() -> None:
    people = "".join(f'[[residents]]\nuser_id = "@p{i}:example.org"\n' for i in range(MAX_RESIDENTS + 1))
    field, message = only_problem(DOOR + people)
    assert field == "residents"
    assert_says(message, f"lists {MAX_RESIDENTS + 1} residents", f"at most {MAX_RESIDENTS}", "remove 1 of")


def test_too_many_buttons() -> None:
    buttons = "".join(f"[[buttons]]\npin = {pin}\n" for pin in range(2, 2 + MAX_BUTTONS + 1))  # GPIO 2 to 18
    field, message = only_problem(SINGLE + buttons)
    assert field == "buttons"
    assert_says(message, f"lists {MAX_BUTTONS + 1} buttons", f"at most {MAX_BUTTONS}", "remove 1 of the [[buttons]]")


# --- one resident -----------------------------------------------------------------------------------------------------


def test_a_resident_needs_a_user_id() -> None:
    field, message = only_problem(DOOR + '[[residents]]\nroom_id = "!r:example.org"\n')
    assert field == "residents[1].user_id"
    assert_says(message, "missing", 'add user_id = "@alice:example.org" to this [[residents]] entry')


def test_a_bad_user_id_is_explained_with_the_doors_server() -> None:
    field, message = only_problem(DOOR.replace("example.org", "home.example") + ALICE + '[[residents]]\n'
                                                                                    'user_id = "bob"\n')
    assert field == "residents[2].user_id"
    assert_says(message, '"bob" is not a Matrix user ID', "write it as @bob:home.example")


def test_a_room_alias_is_not_a_room_id() -> None:
    field, message = only_problem(DOOR + BOB + 'room_id = "#bob:example.org"\n')
    assert field == "residents[1].room_id"
    assert_says(message, "is a room alias", "Room settings > Advanced")


def test_a_resident_is_not_the_door() -> None:
    field, message = only_problem(DOOR + ALICE + '[[residents]]\nuser_id = "@door:example.org"\n')
    assert field == "residents[2].user_id"
    assert_says(message, "the door's own account (matrix.user_id)", "write the person's own account here")


def test_each_resident_once() -> None:
    field, message = only_problem(HOUSEHOLD + '[[residents]]\nuser_id = "@alice:example.org"\n')
    assert field == "residents[3].user_id"
    assert_says(message, "@alice:example.org is already residents[1]", "list each person once", "delete this entry")


def test_two_residents_do_not_share_a_room() -> None:
    field, message = only_problem(HOUSEHOLD + 'room_id = "!alice:example.org"\n')
    assert field == "residents[2].room_id"
    assert_says(message, "!alice:example.org is already the room of residents[1]", "a room of their own",
                "leave room_id out and the door makes one")


@pytest.mark.parametrize("value, words", [
    ('"22:00-07:00"', None),
    ('"7:30-9:00"', None),
    ('"22-7"', ['"22" is not a time of day', '"HH:MM-HH:MM"', "24-hour clock", '"22:00-07:00"']),
    ('"25:00-07:00"', ['"25:00" is not a time of day', "24-hour clock"]),
    ('"22:00 to 07:00"', ['"22:00 to 07:00" is not a span of time', '"HH:MM-HH:MM"']),
    ('"22:00-07:00-08:00"', ["is not a span of time", '"HH:MM-HH:MM"']),
    ('"10:00-10:00"', ["starts and ends at the same time", "never quiet", "delete quiet_hours"]),
    ("22", ['expected text in double quotes like "22:00-07:00"', "the whole number 22"]),
])
def test_quiet_hours_are_checked_with_an_explanation(value: str, words: list[str] | None) -> None:
    text = DOOR + BOB + f"quiet_hours = {value}\n"
    if words is None:
        assert problems_of(text) == {}
        return
    field, message = only_problem(text)
    assert field == "residents[1].quiet_hours"
    assert_says(message, *words)


@pytest.mark.parametrize("key", ["answer_calls", "open_door"])
def test_rights_are_true_or_false(key: str) -> None:
    field, message = only_problem(DOOR + BOB + f'{key} = "no"\n')
    assert field == f"residents[1].{key}"
    assert_says(message, "true or false", "without quotes")


@pytest.mark.parametrize("line, words", [
    ('answer_call = true', ["unknown setting in a [[residents]] entry", "did you mean answer_calls?"]),
    ('owner = "@bob:example.org"', ["did you mean user_id?"]),
    ("ring_timeout = 45", ["belongs in the [calls] section, not in a [[residents]] entry", "below the [calls] header",
                           "up to the next header"]),
    ("pin = 5", ["belongs in a [[buttons]] entry", "[[buttons]] header"]),
    ("colour = 5", ["unknown setting; remove it", "user_id, room_id, answer_calls, open_door, quiet_hours"]),
])
def test_unknown_keys_in_a_resident(line: str, words: list[str]) -> None:
    field, message = only_problem(DOOR + BOB + line + "\n")
    assert field == f"residents[1].{line.split(' =')[0]}"
    assert_says(message, *words)


# --- one button -------------------------------------------------------------------------------------------------------


def test_a_button_needs_a_pin() -> None:
    field, message = only_problem(HOUSEHOLD + '[[buttons]]\npin = 5\n[[buttons]]\nname = "Back"\n')
    assert field == "buttons[2].pin"
    assert_says(message, "missing", "add pin = 17 to this [[buttons]] entry", "BCM GPIO number")


@pytest.mark.parametrize("value, words", [
    ("1", ["reserved for the HAT ID EEPROM", "from 2 to 27"]),
    ("40", ["not the physical pin number", "from 2 to 27"]),
    ('"17"', ["a BCM GPIO number like 17", "without quotes"]),
])
def test_a_button_pin_is_checked_like_panel_button_pin(value: str, words: list[str]) -> None:
    field, message = only_problem(HOUSEHOLD + f"[[buttons]]\npin = {value}\n")
    assert field == "buttons[1].pin"
    assert_says(message, *words)


def test_a_button_name_is_short_and_on_one_line() -> None:
    long = "The flat on the second floor, left-hand side"
    problems = problems_of(HOUSEHOLD + f'[[buttons]]\npin = 5\nname = "{long}"\n'
                                       '[[buttons]]\npin = 6\nname = "Flat\\n2"\n[[buttons]]\npin = 7\nname = ""\n')
    assert_says(problems["buttons[1].name"], f"is {len(long)} characters long", "at most 40", '"Flat 1"')
    assert_says(problems["buttons[2].name"], "line break", "on one line")
    assert_says(problems["buttons[3].name"], "is empty", '"Flat 1"')
    assert len(problems) == 3


def test_button_names_differ() -> None:
    field, message = only_problem(HOUSEHOLD + '[[buttons]]\npin = 5\nname = "Flat"\n[[buttons]]\npin = 6\n'
                                              'name = "Flat"\n')
    assert field == "buttons[2].name"
    assert_says(message, '"Flat" is already the name of buttons[1]', "its own name")


def test_a_button_rings_only_residents_and_names_the_unknown_one() -> None:
    field, message = only_problem(HOUSEHOLD + '[[buttons]]\npin = 5\nresidents = ["@bob:example.org", '
                                              '"@carol:example.org"]\n')
    assert field == "buttons[1].residents"
    assert_says(message, "rings @carol:example.org, who is not a resident",
                'add a [[residents]] entry with user_id = "@carol:example.org"', "or correct the ID",
                "the residents are @alice:example.org and @bob:example.org")


def test_a_button_of_the_single_owner_form_rings_only_the_owner() -> None:
    field, message = only_problem(SINGLE + '[[buttons]]\npin = 5\nresidents = ["@bob:example.org"]\n')
    assert field == "buttons[1].residents"
    assert_says(message, "rings @bob:example.org, who is not a resident", "only matrix.owner (@alice:example.org)",
                "[[residents]]")


def test_a_button_that_rings_nobody() -> None:
    field, message = only_problem(HOUSEHOLD + "[[buttons]]\npin = 5\nresidents = []\n")
    assert field == "buttons[1].residents"
    assert_says(message, "is empty, so this button would ring nobody", 'residents = ["@alice:example.org"]',
                "delete the line to ring every resident")


def test_a_button_lists_each_resident_once() -> None:
    field, message = only_problem(HOUSEHOLD + '[[buttons]]\npin = 5\nresidents = ["@bob:example.org", '
                                              '"@bob:example.org"]\n')
    assert field == "buttons[1].residents"
    assert_says(message, "lists @bob:example.org twice", "once")


def test_a_bad_user_id_in_a_buttons_residents() -> None:
    field, message = only_problem(HOUSEHOLD + '[[buttons]]\npin = 5\nresidents = ["bob"]\n')
    assert field == "buttons[1].residents"
    assert_says(message, "item 1", '"bob" is not a Matrix user ID', "write it as @bob:example.org")


def test_no_unknown_resident_is_claimed_while_a_residents_id_is_itself_wrong() -> None:
    problems = problems_of(DOOR + '[[residents]]\nuser_id = "bob"\n[[buttons]]\npin = 5\n'
                                  'residents = ["@bob:example.org"]\n')
    assert set(problems) == {"residents[1].user_id"}


@pytest.mark.parametrize("line, words", [
    ("gpio = 5", ["unknown setting in a [[buttons]] entry", "did you mean pin?"]),
    ('rings = ["@bob:example.org"]', ["did you mean residents?"]),
    ("debounce_ms = 80", ["belongs in the [panel] section, not in a [[buttons]] entry", "below the [panel] header"]),
    ('quiet_hours = "22:00-07:00"', ["belongs in a [[residents]] entry"]),
    ("colour = 5", ["unknown setting; remove it", "pin, name, residents"]),
])
def test_unknown_keys_in_a_button(line: str, words: list[str]) -> None:
    problems = problems_of(HOUSEHOLD + "[[buttons]]\npin = 5\n" + line + "\n")
    field = f"buttons[1].{line.split(' =')[0]}"
    assert set(problems) == {field}, problems
    assert_says(problems[field], *words)


# --- pins -------------------------------------------------------------------------------------------------------------


def test_button_pins_differ_from_each_other_and_from_the_panels() -> None:
    problems = problems_of(HOUSEHOLD + "[panel]\nrelay_pin = 6\n"
                           "[[buttons]]\npin = 5\n[[buttons]]\npin = 5\n[[buttons]]\npin = 22\n[[buttons]]\npin = 6\n")
    assert set(problems) == {"buttons[2].pin", "buttons[3].pin", "buttons[4].pin"}
    assert_says(problems["buttons[2].pin"], "GPIO 5 is already used by buttons[1].pin", "its own pin")
    assert_says(problems["buttons[3].pin"], "GPIO 22 is already used by panel.call_led_pin (its default)",
                "give each button and each of panel.call_led_pin, panel.status_led_pin and panel.relay_pin its own "
                "pin")
    assert "(its default)" not in problems["buttons[4].pin"]
    assert_says(problems["buttons[4].pin"], "GPIO 6 is already used by panel.relay_pin")


def test_panel_button_pin_is_not_set_with_buttons() -> None:
    field, message = only_problem(HOUSEHOLD + "[panel]\nbutton_pin = 5\n[[buttons]]\npin = 6\n")
    assert field == "panel.button_pin"
    assert_says(message, "set together with [[buttons]]", "put this pin in a [[buttons]] entry",
                "delete button_pin from [panel]")


def test_the_panels_own_pins_still_clash_as_before_with_buttons() -> None:
    field, message = only_problem(HOUSEHOLD + "[panel]\nstatus_led_pin = 22\n[[buttons]]\npin = 5\n")
    assert field == "panel.status_led_pin"
    assert_says(message, "GPIO 22 is already used by panel.call_led_pin", "its own pin")


# --- all at once, no secrets, the summary -----------------------------------------------------------------------------

MANY = DOOR + '''owner = "@alice:example.org"

[panel]
button_pin = 5

[[residents]]
user_id = "@door:example.org"
quiet_hours = "late"

[[residents]]
user_id = "@bob:example.org"
room_id = "!shared:example.org"

[[residents]]
user_id = "@bob:example.org"
room_id = "!shared:example.org"
answer_call = false

[[buttons]]
pin = 22
residents = []

[[buttons]]
name = "Back door"
'''


def test_all_household_problems_are_reported_at_once() -> None:
    problems = problems_of(MANY)
    assert list(problems) == [
        "matrix.owner", "residents[1].quiet_hours", "residents[1].user_id", "residents[3].answer_call",
        "residents[3].user_id", "residents[3].room_id", "panel.button_pin", "buttons[1].residents", "buttons[2].pin",
        "buttons[1].pin",
    ]
    with pytest.raises(ConfigError) as caught:
        load(MANY)
    assert len(caught.value.problems) == 10 and SECRET not in str(caught.value)


def test_check_config_prints_the_household(tmp_path: Path) -> None:
    text = (DOOR + ALICE + 'quiet_hours = "22:00-07:00"\n' + BOB + "answer_calls = false\nopen_door = false\n"
            '[[buttons]]\npin = 5\nname = "Flat 1"\nresidents = ["@alice:example.org"]\n[[buttons]]\npin = 6\n')
    status, output = check(text, tmp_path)
    assert status == 0, output
    lines = output.splitlines()
    assert "  resident 1  @alice:example.org, room !alice:example.org; the door answers their calls, may open the " \
           "door, quiet hours 22:00-07:00" in lines
    assert "  resident 2  @bob:example.org, room: the door makes one; the door does not answer their calls, may not " \
           "open the door, no quiet hours" in lines
    assert '  button 1    "Flat 1" on GPIO 5, rings @alice:example.org' in lines
    assert '  button 2    "Button 2" on GPIO 6, rings every resident' in lines
    assert "any session signed in to a resident's account counts as that resident" in output
    assert SECRET not in output and "owner" not in output


def test_check_config_of_the_single_owner_form_is_as_before_plus_its_button(tmp_path: Path) -> None:
    status, output = check(SINGLE, tmp_path)
    assert status == 0, output
    lines = output.splitlines()
    assert lines[3:6] == ["  room        !abc123:example.org", "  owner       @alice:example.org",
                          "  button      GPIO 17, rings @alice:example.org"]
    assert "the owner's account counts as the owner" in output


def test_check_config_reports_household_problems_with_their_settings(tmp_path: Path) -> None:
    status, output = check(HOUSEHOLD + 'room_id = "!alice:example.org"\n', tmp_path)
    assert status == 1
    assert f"{tmp_path / 'intercom.toml'}: residents[2].room_id: !alice:example.org is already the room of " \
           "residents[1]" in output
    assert output.splitlines()[-1].endswith("1 problem found; fix it and run intercom check-config again")


# --- robustness -------------------------------------------------------------------------------------------------------

_values = st.recursive(
    st.booleans() | st.integers(-5, 40) | st.sampled_from(["@alice:example.org", "@door:example.org", "!r:x", "",
                                                           "22:00-07:00", "x"]),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=4,
)
_entry = st.dictionaries(st.sampled_from(["user_id", "room_id", "answer_calls", "open_door", "quiet_hours", "pin",
                                          "name", "residents", "bogus"]), _values, max_size=5)


@settings(max_examples=300, deadline=None)
@given(residents=st.none() | st.lists(_entry, max_size=3) | _entry | _values,
       buttons=st.none() | st.lists(_entry, max_size=3) | _entry | _values,
       owner=st.booleans(), panel=st.dictionaries(st.sampled_from(["button_pin", "relay_pin"]), _values, max_size=2))
def test_any_household_gives_a_config_or_explained_problems(residents, buttons, owner, panel) -> None:
    data = tomllib.loads(DOOR)
    if owner:
        data["matrix"].update(owner="@alice:example.org", room_id="!abc123:example.org")
    data["panel"] = panel
    for key, value in (("residents", residents), ("buttons", buttons)):
        if value is not None:
            data[key] = value
    try:
        config = parse_config(data, check_files=False)
    except ConfigError as err:
        assert err.problems and all(p.field and p.message for p in err.problems)
    else:
        household, buttons_ = config.household()
        assert household and len(buttons_) == len(config.button_pins())
        CoreSettings(user_id=config.matrix.user_id, party_id="p", residents=household, buttons=buttons_)
