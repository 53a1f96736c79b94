"""The intercom's configuration: one TOML file, checked up front, loaded into frozen dataclasses.

The person reading our error messages is usually standing at a door with a laptop, not a Python programmer, so
the checker's job is to explain: every problem names the dotted setting (``calls.ring_timeout``), says what is
wrong and says how to fix it, and all problems are reported at once so one run of ``intercom check-config`` is
enough to fix a file.

How it fits together (this module is the schema and the rules; the words and the checkers of single values are
:mod:`~intercom.service.checks`, reading the file is :mod:`~intercom.service.tomlfile`, secret files are
:mod:`~intercom.service.secretfiles`):

- Each setting is declared once, as a dataclass field made by :func:`_setting`. Its metadata holds the checker
  that validates the raw TOML value and an example used in messages; its default is the dataclass default.
- :func:`_check_section` runs those checkers over one ``[section]`` table; rules that involve several settings
  (pins must differ, the invite must outlive the ringing, ...) run afterwards, from :data:`_SECTION_RULES`.
- The household (who the door serves, and the buttons that ring them) is either the single ``matrix.owner`` in
  ``matrix.room_id``, or arrays of tables, ``[[residents]]`` and ``[[buttons]]``, whose entries are checked like
  sections (:func:`_check_table`) and then against each other and the rest of the file (:func:`_check_household`).
  :meth:`Config.household` turns either form into the core's :class:`~intercom.core.household.Resident` and
  :class:`~intercom.core.household.Button`.
- Secret files are checked last (they must exist and be private) and only read when the service asks for the
  credential via :meth:`MatrixConfig.read_secret`, so a file's secret never sits in a ``Config``; inline
  secrets (for quick tests) do, but are left out of its ``repr``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

from intercom.core import CallTimings, CommandSettings
from intercom.core.household import CALL_TECHNOLOGIES, Button, QuietHours, Resident

from . import checks, secretfiles, tomlfile
from .checks import Checker, ConfigError, ConfigProblem, Invalid, describe, toml
from .tomlfile import read_config_file

__all__ = [
    "AudioConfig",
    "ButtonConfig",
    "CallsConfig",
    "CameraConfig",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "CredentialKind",
    "MAX_BUTTONS",
    "MAX_RESIDENTS",
    "MatrixConfig",
    "NetworkConfig",
    "PanelConfig",
    "check_config_main",
    "load_config",
    "parse_config",
    "read_config_file",
    "validate_text",
]

CredentialKind = Literal["password", "access_token"]


# --- the schema: one dataclass per [section], one field per setting ------------------------------------------------


def _setting(default: Any = dataclasses.MISSING, *, check: Checker, example: str | None = None,
             about: str = "", show: bool = True) -> Any:
    """Declare a setting: a dataclass field whose metadata holds the checker for its raw TOML value.

    ``example`` (TOML text) appears in messages; it defaults to the default value. ``about`` explains a required
    setting when it is missing. ``show=False`` keeps the value out of ``repr`` (secrets).
    """
    if example is None:
        example = toml(default)
    return field(default=default, repr=show, metadata={"check": check, "example": example, "about": about})


def _core_default(settings: type, name: str) -> Any:
    """The default of a core setting: the core's dataclass is its one home, the config file only exposes it."""
    return next(f.default for f in dataclasses.fields(settings) if f.name == name)


_CREDENTIALS = ("password_file", "access_token_file", "password", "access_token")


@dataclass(frozen=True, slots=True, kw_only=True)
class MatrixConfig:
    """``[matrix]``: the door's own account, the room it calls in and the person it calls.

    ``owner`` and ``room_id`` are the single-person form of the household; with ``[[residents]]`` they are None
    (each resident has their own room). Use :meth:`Config.household` rather than reading them.

    Exactly one of the four credential settings is set. Inline ``password``/``access_token`` are accepted for
    quick tests but kept out of ``repr``; read the credential with :meth:`read_secret`.
    """

    homeserver: str = _setting(check=checks.homeserver, example='"https://matrix.example.org"',
                               about="the URL of the door account's homeserver")
    user_id: str = _setting(check=checks.user_id, example='"@door:example.org"', about="the door's own Matrix account")
    #: Required unless the file lists [[residents]] (see _check_who); None then.
    room_id: str | None = _setting(None, check=checks.room_id, example='"!abc123:example.org"',
                                   about="the room the door calls in; Element shows its ID under Room settings > "
                                         "Advanced")
    owner: str | None = _setting(None, check=checks.user_id, example='"@alice:example.org"',
                                 about="the person the door calls")
    device_name: str = _setting("Doorbell intercom", check=checks.text_value)
    #: Refuse to work in a room without end-to-end encryption (see the README's trust model).
    require_encryption: bool = _setting(False, check=checks.flag)
    state_dir: str = _setting("/var/lib/intercom", check=checks.absolute_path)
    password_file: str | None = _setting(None, check=checks.absolute_path, example='"/etc/intercom/secrets/password"')
    access_token_file: str | None = _setting(None, check=checks.absolute_path,
                                             example='"/etc/intercom/secrets/access_token"')
    password: str | None = _setting(None, check=checks.inline_secret, example='"correct horse battery staple"', show=False)
    access_token: str | None = _setting(None, check=checks.inline_secret, example='"syt_..."', show=False)

    @property
    def credential_source(self) -> str:
        """Where the credential comes from, for logs and summaries; never the secret itself."""
        for kind in ("password", "access_token"):
            path = getattr(self, f"{kind}_file")
            if path is not None:
                return f"{kind.replace('_', ' ')} from {path}"
            if getattr(self, kind) is not None:
                return f"{kind.replace('_', ' ')} written in the config file"
        return "no credential"

    def read_secret(self) -> tuple[CredentialKind, str]:
        """Return ``("password" | "access_token", value)``, reading a secret file now rather than at load time, so
        the secret lives only as long as the caller keeps it and a rotated file is picked up on restart.

        Raises :class:`ConfigError` if the file can no longer be read or is empty.
        """
        for kind in ("password", "access_token"):
            inline = getattr(self, kind)
            if inline is not None:
                return kind, inline  # type: ignore[return-value]
            path = getattr(self, f"{kind}_file")
            if path is not None:
                return kind, secretfiles.read_secret_file(path, f"matrix.{kind}_file")  # type: ignore[return-value]
        raise ConfigError([_no_credential_problem()])


@dataclass(frozen=True, slots=True, kw_only=True)
class CallsConfig:
    """``[calls]``: how long each phase of a call may take, in seconds."""

    ring_timeout: float = _setting(_core_default(CallTimings, "ring_timeout"), check=checks.seconds(10, 600))
    invite_lifetime: float = _setting(_core_default(CallTimings, "invite_lifetime"), check=checks.seconds(60, 600))
    connect_timeout: float = _setting(_core_default(CallTimings, "connect_timeout"), check=checks.seconds(3, 120))
    max_call_duration: float = _setting(_core_default(CallTimings, "max_call_duration"), check=checks.seconds(30, 7200))
    prepare_timeout: float = _setting(_core_default(CallTimings, "prepare_timeout"), check=checks.seconds(2, 60))
    ended_display: float = _setting(_core_default(CallTimings, "ended_display"), check=checks.seconds(1, 3600))


@dataclass(frozen=True, slots=True, kw_only=True)
class PanelConfig:
    """``[panel]``: the button, LEDs and door relay (BCM GPIO numbers), and the chat commands that drive them."""

    pin_factory: str = _setting("auto", check=checks.choice("auto", "lgpio", "rpigpio", "pigpio", "native", "mock"))
    button_pin: int = _setting(17, check=checks.gpio_pin)
    button_pull_up: bool = _setting(True, check=checks.flag)
    debounce_ms: int = _setting(50, check=checks.whole(5, 500, "a whole number of milliseconds", " ms"))
    call_led_pin: int = _setting(22, check=checks.gpio_pin)
    status_led_pin: int = _setting(23, check=checks.gpio_pin)
    relay_pin: int = _setting(27, check=checks.gpio_pin)
    relay_active_high: bool = _setting(True, check=checks.flag)
    relay_pulse: float = _setting(_core_default(CommandSettings, "relay_pulse"), check=checks.seconds(0.2, 30))
    open_command: str = _setting(_core_default(CommandSettings, "open_command"), check=checks.word)
    open_window: float = _setting(_core_default(CommandSettings, "open_window"), check=checks.seconds(0, 600))
    open_after_owner_call: bool = _setting(_core_default(CommandSettings, "open_after_owner_call"), check=checks.flag)
    openings_per_ring: int = _setting(_core_default(CommandSettings, "openings_per_ring"),
                                      check=checks.whole(1, 20, "a whole number of openings", " openings"))
    snapshot_command: str = _setting(_core_default(CommandSettings, "snapshot_command"), check=checks.word)


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioConfig:
    """``[audio]``: ALSA PCM names for the microphone and the speaker."""

    capture_device: str = _setting("default", check=checks.alsa_device)
    playback_device: str = _setting("default", check=checks.alsa_device)
    echo_cancellation: bool = _setting(True, check=checks.flag)


@dataclass(frozen=True, slots=True, kw_only=True)
class CameraConfig:
    """``[camera]``: where video comes from and how it is encoded."""

    source: str = _setting("picamera2", check=checks.choice("picamera2", "synthetic"))
    width: int = _setting(1280, check=checks.whole(160, 1920, "a whole number of pixels", " pixels", even=True))
    height: int = _setting(720, check=checks.whole(120, 1080, "a whole number of pixels", " pixels", even=True))
    framerate: int = _setting(30, check=checks.whole(5, 30, "a whole number of frames per second", " frames per second"))
    bitrate_kbps: int = _setting(1500, check=checks.whole(100, 8000, "a whole number of kbit/s", " kbit/s"))
    keyframe_interval: float = _setting(2.0, check=checks.seconds(0.5, 2.0))
    snapshots_kept: int = _setting(100, check=checks.whole(0, 10000, "a whole number of pictures", " pictures"))
    #: Disk space the kept pictures may take at most (oldest deleted first), beside their count.
    snapshots_max_mb: int = _setting(50, check=checks.whole(1, 10000, "a whole number of megabytes", " MB"))
    ring_picture: bool = _setting(True, check=checks.flag)


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkConfig:
    """``[network]``: how calls find a path. TURN servers come from the homeserver; these add to that."""

    stun_servers: tuple[str, ...] = _setting((), check=checks.list_of(checks.stun_uri, "STUN URIs"),
                                             example='["stun:stun.example.org:3478"]')
    ice_addresses: tuple[str, ...] = _setting((), check=checks.list_of(checks.ip_address, "IP addresses"),
                                              example='["192.168.1.20"]')


#: The most residents and buttons one door serves: each resident is a room the door keeps in sync and a ring may
#: call several at once; the header's GPIOs are shared by the buttons, the LEDs and the relay.
MAX_RESIDENTS = 20
MAX_BUTTONS = 16
#: The longest button name: notices say which button was pressed, so it must read at a glance ("Flat 2").
MAX_BUTTON_NAME = 40


@dataclass(frozen=True, slots=True, kw_only=True)
class _ResidentEntry:
    """The schema of one ``[[residents]]`` entry (checked like a section; loaded as the core's
    :class:`~intercom.core.household.Resident`, which has the same fields)."""

    user_id: str = _setting(check=checks.user_id, example='"@alice:example.org"',
                            about="the person's Matrix account")
    room_id: str | None = _setting(None, check=checks.room_id, example='"!abc123:example.org"')
    answer_calls: bool = _setting(True, check=checks.flag)
    open_door: bool = _setting(True, check=checks.flag)
    quiet_hours: QuietHours | None = _setting(None, check=checks.quiet_hours, example='"22:00-07:00"')
    calls: str = _setting("auto", check=checks.choice(*CALL_TECHNOLOGIES), example='"matrixrtc"',
                          about="how a press rings them: legacy (Element Web/Desktop, Nheko...), matrixrtc "
                                "(Element X, Element Call), or auto")


@dataclass(frozen=True, slots=True, kw_only=True)
class ButtonConfig:
    """One bell button: its ``[[buttons]]`` entry, with the defaults filled in.

    ``name`` is what notices say was pressed ("Button 1", "Button 2"... by position when the entry has none; ""
    for the one button of the single-owner form); ``residents`` are the user IDs it rings (all residents when the
    entry lists none)."""

    pin: int = _setting(check=checks.gpio_pin, example="17", about="the button's BCM GPIO number")
    name: str = _setting("", check=checks.short_text(MAX_BUTTON_NAME), example='"Flat 1"')
    residents: tuple[str, ...] = _setting((), check=checks.list_of(checks.user_id, "Matrix user IDs"),
                                          example='["@alice:example.org"]')

    def button(self) -> Button:
        """The core's view of this button (without its pin: the front panel has those)."""
        return Button(name=self.name, residents=self.residents)


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The whole configuration. ``path`` is the file it came from (``"<memory>"`` for :func:`parse_config`).

    ``residents`` and ``buttons`` are the file's ``[[residents]]`` and ``[[buttons]]`` entries, in file order;
    both are empty when the file does not have them (the single ``matrix.owner``, the one ``panel.button_pin``).
    Use :meth:`household` and :meth:`button_pins`, which give the same answer for either form.
    """

    matrix: MatrixConfig
    calls: CallsConfig = field(default_factory=CallsConfig)
    panel: PanelConfig = field(default_factory=PanelConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    residents: tuple[Resident, ...] = ()
    buttons: tuple[ButtonConfig, ...] = ()
    path: str = "<memory>"

    def household(self) -> tuple[tuple[Resident, ...], tuple[Button, ...]]:
        """The residents and the buttons, as the core takes them (:class:`~intercom.core.settings.CoreSettings`).

        The single-owner form is a household of one: the owner, in ``matrix.room_id``, with every right, rung by
        one button named "" (so notices read as they always did). Without ``[[buttons]]``, one button rings every
        resident."""
        if self.residents:
            residents = self.residents
        else:
            assert self.matrix.owner is not None, "a checked config has matrix.owner or [[residents]]"
            residents = (Resident(user_id=self.matrix.owner, room_id=self.matrix.room_id),)
        if self.buttons:
            buttons = tuple(button.button() for button in self.buttons)
        else:
            buttons = (Button(name="", residents=tuple(r.user_id for r in residents)),)
        return residents, buttons

    def button_pins(self) -> tuple[int, ...]:
        """The GPIO (BCM) of each button, in the order of :meth:`household`'s buttons."""
        return tuple(b.pin for b in self.buttons) if self.buttons else (self.panel.button_pin,)


_SECTIONS: dict[str, type] = {
    "matrix": MatrixConfig,
    "calls": CallsConfig,
    "panel": PanelConfig,
    "audio": AudioConfig,
    "camera": CameraConfig,
    "network": NetworkConfig,
}
_SETTINGS: dict[str, dict[str, dataclasses.Field[Any]]] = {
    name: {f.name: f for f in dataclasses.fields(cls)} for name, cls in _SECTIONS.items()
}
#: The arrays of tables (``[[residents]]``): each entry is checked like a section, with these settings.
_ENTRIES: dict[str, dict[str, dataclasses.Field[Any]]] = {
    "residents": {f.name: f for f in dataclasses.fields(_ResidentEntry)},
    "buttons": {f.name: f for f in dataclasses.fields(ButtonConfig)},
}
_ENTRY_LIMITS = {"residents": MAX_RESIDENTS, "buttons": MAX_BUTTONS}
#: What one entry is, in messages.
_ENTRY_NOUN = {"residents": "resident", "buttons": "button"}
#: Names people write for an entry's setting, and the setting they mean.
_ENTRY_ALIASES = {"owner": "user_id", "user": "user_id", "room": "room_id", "button_pin": "pin", "gpio": "pin",
                  "rings": "residents"}


def _home_section(key: str) -> str | None:
    """The section a setting name belongs to, to explain a setting written in the wrong place."""
    return next((section for section, settings in _SETTINGS.items() if key in settings), None)


# --- checking sections -----------------------------------------------------------------------------------------------

# _check_section returns the checked values of one section: its defaults, overwritten by every valid value from
# the file. A setting whose value was invalid (or that is required and missing) is absent, so rules that need it
# are skipped rather than piling up follow-on complaints about a value the user already has to fix.
_Values = dict[str, Any]


def _check_section(section: str, table: Mapping[str, object], problems: list[ConfigProblem]) -> _Values:
    return _check_table(section, _SETTINGS[section], table, problems, place=f"the [{section}] section",
                        unknown=lambda key: _unknown_setting_message(section, key))


def _check_table(where: str, settings: Mapping[str, dataclasses.Field[Any]], table: Mapping[str, object],
                 problems: list[ConfigProblem], *, place: str, unknown: Callable[[str], str],
                 hints: Mapping[str, object] | None = None) -> _Values:
    """Check one table: a ``[section]`` (``where`` is its name) or an entry of an array of tables (``where`` is
    like ``residents[2]``). ``place`` says where a missing setting goes; ``unknown`` explains a key that is no
    setting; ``hints`` is what checkers see of the neighbours (default: the table itself)."""
    values = {name: f.default for name, f in settings.items() if f.default is not dataclasses.MISSING}
    for key, raw in table.items():  # file order, so problems come out in the order the user reads them
        spec = settings.get(key)
        if spec is None:
            problems.append(ConfigProblem(f"{where}.{key}", unknown(key)))
            continue
        try:
            values[key] = spec.metadata["check"](raw, checks.Context(spec.metadata["example"],
                                                                     table if hints is None else hints))
        except Invalid as invalid:
            problems.append(ConfigProblem(f"{where}.{key}", str(invalid)))
            values.pop(key, None)
    for name, spec in settings.items():
        if spec.default is dataclasses.MISSING and name not in table:
            problems.append(_missing_problem(f"{where}.{name}", spec, place))
    return values


def _missing_problem(dotted: str, spec: dataclasses.Field[Any], place: str, alternative: str = "") -> ConfigProblem:
    name = dotted.rsplit(".", 1)[1]
    about = f" ({spec.metadata['about']})" if spec.metadata["about"] else ""
    return ConfigProblem(dotted, f"missing; add {name} = {spec.metadata['example']} to {place}{about}{alternative}")


def _unknown_setting_message(section: str, key: str) -> str:
    home = _home_section(key)
    if home is not None:
        return f"this setting belongs in the [{home}] section, not [{section}]; move it below the [{home}] header"
    guess = checks.suggest(key, _SETTINGS[section])
    if guess is not None:
        return f"unknown setting; did you mean {guess}?"
    return f"unknown setting; remove it (the [{section}] settings are: {', '.join(_SETTINGS[section])})"


def _unknown_entry_message(array: str, key: str) -> str:
    """An unknown key in a ``[[residents]]``/``[[buttons]]`` entry. Every line below a ``[[...]]`` header, up to
    the next header, belongs to that entry, so a setting of a section written there is most likely a missing
    header."""
    settings = _ENTRIES[array]
    guess = _ENTRY_ALIASES.get(key) if _ENTRY_ALIASES.get(key) in settings else checks.suggest(key, settings)
    if guess is not None:
        return f"unknown setting in a [[{array}]] entry; did you mean {guess}?"
    home = _home_section(key)
    if home is not None:
        return (f"this setting belongs in the [{home}] section, not in a [[{array}]] entry (every line below "
                f"[[{array}]] up to the next header belongs to that {_ENTRY_NOUN[array]}); move it below the "
                f"[{home}] header")
    other = next((name for name, entry in _ENTRIES.items() if name != array and key in entry), None)
    if other is not None:
        return (f"this setting belongs in a [[{other}]] entry, not in a [[{array}]] entry; move it below a "
                f"[[{other}]] header")
    return f"unknown setting; remove it (a [[{array}]] entry takes: {', '.join(settings)})"


def _is_array_of_tables(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def _unknown_top_level_message(key: str, value: object) -> str:
    sections = ", ".join([f"[{name}]" for name in _SECTIONS] + [f"[[{name}]]" for name in _ENTRIES])
    array = _is_array_of_tables(value)
    if not isinstance(value, dict) and not array:
        home = _home_section(key)
        if home is not None:
            return (f"this setting is above every [section] header; move it below the [{home}] header "
                    f"(it belongs in [{home}])")
        return f"unknown setting; settings go inside one of the sections {sections}"
    written = f"[[{key}]]" if array else f"[{key}]"
    guess = checks.suggest(key, [*_SECTIONS, *_ENTRIES])
    if guess is not None:
        return f"unknown section {written}; did you mean {f'[[{guess}]]' if guess in _ENTRIES else f'[{guess}]'}?"
    return f"unknown section {written}; remove it (the sections are {sections})"


# --- rules involving several settings of one section ----------------------------------------------------------------
#
# Each rule gets the section's raw table, its checked values (see _check_section) and the problem list.


def _no_credential_problem() -> ConfigProblem:
    return ConfigProblem(
        "matrix.password_file",
        f"missing: the door needs a credential for its account; add password_file = "
        f"{_SETTINGS['matrix']['password_file'].metadata['example']} (recommended), or else exactly one of "
        f"{checks.one_of(_CREDENTIALS[1:])}",
    )


def _check_credentials(table: Mapping[str, object], matrix: _Values, problems: list[ConfigProblem]) -> None:
    # Counted from the raw table: a password_file with a bad path is still the source the user chose, so it
    # must not also produce "no credential".
    given = [key for key in _CREDENTIALS if key in table]
    if not given:
        problems.append(_no_credential_problem())
    for extra in given[1:]:
        problems.append(ConfigProblem(
            f"matrix.{extra}",
            f"is set together with matrix.{given[0]}; keep exactly one credential source (one of "
            f"{checks.one_of(_CREDENTIALS)}) and delete the others",
        ))


def _check_owner_is_not_door(table: Mapping[str, object], matrix: _Values, problems: list[ConfigProblem]) -> None:
    if matrix.get("owner") is not None and matrix.get("owner") == matrix.get("user_id"):
        problems.append(ConfigProblem(
            "matrix.owner",
            "is the same account as matrix.user_id; the door calls the owner, so give the door an account of its "
            "own in user_id and put the person's account (like @alice:example.org) in owner",
        ))


def _check_invite_outlives_ringing(table: Mapping[str, object], calls: _Values, problems: list[ConfigProblem]) -> None:
    ring, invite = calls.get("ring_timeout"), calls.get("invite_lifetime")
    if ring is not None and invite is not None and invite < ring:
        problems.append(ConfigProblem(
            "calls.invite_lifetime",
            f"{toml(invite)} is shorter than calls.ring_timeout ({toml(ring)}), so the call invite would expire "
            f"while the phone is still ringing; set invite_lifetime to at least {toml(ring)}",
        ))


_PINS = ("button_pin", "call_led_pin", "status_led_pin", "relay_pin")


def _check_pins_differ(table: Mapping[str, object], panel: _Values, problems: list[ConfigProblem]) -> None:
    owner_of: dict[int, str] = {}
    for name in _PINS:
        pin = panel.get(name)
        if pin is None:
            continue
        if pin in owner_of:
            other = owner_of[pin]
            default = "" if other in table else " (its default)"
            problems.append(ConfigProblem(
                f"panel.{name}",
                f"GPIO {pin} is already used by panel.{other}{default}; "
                f"give each of {checks.one_of(_PINS, 'and')} its own pin",
            ))
        else:
            owner_of[pin] = name


def _check_commands_differ(table: Mapping[str, object], panel: _Values, problems: list[ConfigProblem]) -> None:
    if "open_command" in panel and panel["open_command"] == panel.get("snapshot_command"):
        problems.append(ConfigProblem(
            "panel.snapshot_command",
            "is the same as panel.open_command, so the door could not tell them apart; choose another word, "
            'like "!snapshot"',
        ))


_SECTION_RULES: dict[str, tuple[Callable[[Mapping[str, object], _Values, list[ConfigProblem]], None], ...]] = {
    "matrix": (_check_credentials, _check_owner_is_not_door),
    "calls": (_check_invite_outlives_ringing,),
    "panel": (_check_pins_differ, _check_commands_differ),
}


def _check_secret_files(matrix: _Values, problems: list[ConfigProblem]) -> None:
    for key in ("password_file", "access_token_file"):
        path = matrix.get(key)
        problem = secretfiles.secret_file_problem(path) if path is not None else None
        if problem is not None:
            problems.append(ConfigProblem(f"matrix.{key}", problem))


# --- the household: who the door serves, and the buttons that ring them ----------------------------------------------
#
# Entries of an array of tables are counted from 1, as people count them: residents[1] is the first [[residents]].


def _check_who(data: Mapping[str, Any], table: Mapping[str, object], problems: list[ConfigProblem]) -> None:
    """Either the single ``matrix.owner`` in ``matrix.room_id``, or ``[[residents]]``; never both, never neither.

    Decided by what the file has, not by whether it is valid: a misspelt owner is still the form the user chose."""
    settings = _SETTINGS["matrix"]
    if "residents" not in data:
        if "owner" not in table:
            problems.append(_missing_problem(
                "matrix.owner", settings["owner"], "the [matrix] section",
                f", or, for a household, write each person as a [[residents]] entry with user_id = "
                f"{settings['owner'].metadata['example']} instead"))
        if "room_id" not in table:
            problems.append(_missing_problem("matrix.room_id", settings["room_id"], "the [matrix] section"))
        return
    if "owner" in table:
        problems.append(ConfigProblem(
            "matrix.owner",
            "is set together with [[residents]]; use one of the two: owner and room_id in [matrix] for one person, "
            "or a [[residents]] entry for each person. To keep the [[residents]]: give this person an entry of "
            "their own (user_id = the owner's ID, room_id = the room's ID) and delete owner and room_id from "
            "[matrix]",
        ))
    if "room_id" in table:
        problems.append(ConfigProblem(
            "matrix.room_id",
            "is set in [matrix], but with [[residents]] each resident has a room of their own; move it into the "
            "[[residents]] entry of the person it belongs to (room_id = ...) and delete it from [matrix]",
        ))


def _entries(array: str, raw: object, problems: list[ConfigProblem]) -> list[Mapping[str, object]] | None:
    """The tables of ``[[array]]``, or None when the file has none or they cannot be read as entries (one
    problem then, no follow-on ones)."""
    noun = _ENTRY_NOUN[array]
    example = {"residents": 'user_id = "@alice:example.org"', "buttons": "pin = 17"}[array]
    if raw is None:
        return None
    if isinstance(raw, dict):
        problems.append(ConfigProblem(
            array, f"is written as one [{array}] table; write [[{array}]] (two pairs of square brackets) above "
                   f"each {noun}'s settings, so that the file can list several",
        ))
        return None
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        problems.append(ConfigProblem(
            array, f"expected [[{array}]] entries, got {describe(raw)}; write each {noun} as a [[{array}]] header "
                   f"followed by its settings, one per line (like {example})",
        ))
        return None
    if not raw:
        instead = "use matrix.owner" if array == "residents" else "use panel.button_pin"
        problems.append(ConfigProblem(
            array, f"lists no {noun}; write a [[{array}]] entry ({example}) for each {noun}, or delete "
                   f"{array} = [] and {instead}",
        ))
        return None
    limit = _ENTRY_LIMITS[array]
    if len(raw) > limit:
        problems.append(ConfigProblem(
            array, f"lists {len(raw)} {array}, but one door serves at most {limit}; remove "
                   f"{len(raw) - limit} of the [[{array}]] entries",
        ))
    return raw


def _check_residents(entries: list[Mapping[str, object]], door: object, hints: Mapping[str, object],
                     problems: list[ConfigProblem]) -> tuple[list[Resident | None], tuple[str, ...] | None]:
    """Each ``[[residents]]`` entry (None for one with a problem), and the rules between them and the door.
    Also returns the residents' user IDs, for the buttons; None when an entry has none that is valid (a button
    naming that person must not be called unknown)."""
    residents: list[Resident | None] = []
    users: list[str] | None = []
    first_of: dict[str, int] = {}
    room_of: dict[str, int] = {}
    for index, table in enumerate(entries, 1):
        where = f"residents[{index}]"
        before = len(problems)
        values = _check_table(where, _ENTRIES["residents"], table, problems, place=f"this [[residents]] entry",
                              unknown=lambda key: _unknown_entry_message("residents", key), hints=hints)
        user, room = values.get("user_id"), values.get("room_id")
        if user is not None and user == door:
            problems.append(ConfigProblem(
                f"{where}.user_id",
                "is the door's own account (matrix.user_id); the door rings its residents, so write the person's "
                "own account here (like @alice:example.org) and keep the door's in matrix.user_id",
            ))
        elif user is not None and user in first_of:
            problems.append(ConfigProblem(
                f"{where}.user_id",
                f"{user} is already residents[{first_of[user]}]; list each person once: delete this entry, or "
                "correct the user ID if it is someone else",
            ))
        elif user is not None:
            first_of[user] = index
        if room is not None and room in room_of:
            problems.append(ConfigProblem(
                f"{where}.room_id",
                f"{room} is already the room of residents[{room_of[room]}]; each resident needs a room of their "
                "own with the door (calls are between two people): make a new room with just this person and the "
                "door, or leave room_id out and the door makes one",
            ))
        elif room is not None:
            room_of[room] = index
        residents.append(Resident(**values) if len(problems) == before else None)
        if user is None or users is None:
            users = None
        else:
            users.append(user)
    return residents, None if users is None else tuple(users)


def _check_buttons(entries: list[Mapping[str, object]], known: tuple[str, ...] | None, single_owner: bool,
                   hints: Mapping[str, object], problems: list[ConfigProblem]) -> list[ButtonConfig | None]:
    """Each ``[[buttons]]`` entry with its defaults filled in (None for one with a problem). ``known``: the user
    IDs of the residents (None when they have problems of their own, so nobody is called unknown by mistake)."""
    buttons: list[ButtonConfig | None] = []
    name_of: dict[str, int] = {}
    for index, table in enumerate(entries, 1):
        where = f"buttons[{index}]"
        before = len(problems)
        values = _check_table(where, _ENTRIES["buttons"], table, problems, place="this [[buttons]] entry",
                              unknown=lambda key: _unknown_entry_message("buttons", key), hints=hints)
        name = values.get("name") or f"Button {index}"
        if "name" in table and name in name_of:
            problems.append(ConfigProblem(
                f"{where}.name",
                f"{toml(name)} is already the name of buttons[{name_of[name]}]; notices say which button was "
                "pressed, so give each button its own name",
            ))
        name_of.setdefault(name, index)
        rings = values.get("residents")
        if "residents" in table and rings == ():
            problems.append(ConfigProblem(
                f"{where}.residents",
                "is empty, so this button would ring nobody; list whom it rings, like residents = "
                '["@alice:example.org"], or delete the line to ring every resident',
            ))
        elif rings and known is not None:
            seen: set[str] = set()
            for user in rings:
                if user in seen:
                    problems.append(ConfigProblem(
                        f"{where}.residents", f"lists {user} twice; list each resident once"))
                elif user not in known:
                    if single_owner:
                        fix = (f"the door serves only matrix.owner ({', '.join(known)}); list the people it "
                               "serves as [[residents]] entries instead, or correct the ID")
                    else:
                        fix = (f'add a [[residents]] entry with user_id = {toml(user)}, or correct the ID (the '
                               f"residents are {checks.one_of(known, 'and')})")
                    problems.append(ConfigProblem(
                        f"{where}.residents", f"rings {user}, who is not a resident; {fix}"))
                seen.add(user)
        if len(problems) != before or known is None or "pin" not in values:
            buttons.append(None)
        else:
            buttons.append(ButtonConfig(pin=values["pin"], name=name, residents=rings or known))
    return buttons


def _check_button_pins(entries: list[Mapping[str, object]], panel_table: Mapping[str, object],
                       panel: _Values | None, problems: list[ConfigProblem]) -> None:
    """Each button's pin differs from the other buttons' and from the panel's LEDs and relay (the panel's own
    pins are checked against each other by :func:`_check_pins_differ`)."""
    owner_of: dict[int, str] = {}
    for name in _PINS[1:]:
        pin = (panel or {}).get(name)
        if pin is not None:
            owner_of.setdefault(pin, f"panel.{name}" + ("" if name in panel_table else " (its default)"))
    for index, table in enumerate(entries, 1):
        pin = table.get("pin")
        try:
            pin = checks.gpio_pin(pin, checks.Context("17", table))
        except Invalid:
            continue  # reported with the entry
        if pin in owner_of:
            problems.append(ConfigProblem(
                f"buttons[{index}].pin",
                f"GPIO {pin} is already used by {owner_of[pin]}; give each button and each of "
                f"{checks.one_of([f'panel.{n}' for n in _PINS[1:]], 'and')} its own pin",
            ))
        else:
            owner_of[pin] = f"buttons[{index}].pin"


def _check_household(data: Mapping[str, Any], values: Mapping[str, _Values], problems: list[ConfigProblem]
                     ) -> tuple[tuple[Resident, ...], tuple[ButtonConfig, ...]]:
    """The ``[[residents]]`` and ``[[buttons]]`` entries, checked against each other and the rest of the file.
    Returns them (empty when the file has none); when there are problems, what it returns is not used."""
    matrix = values.get("matrix")
    raw_matrix = data.get("matrix") if isinstance(data.get("matrix"), dict) else {}
    # The door's server, for suggesting a resident's ID: residents mostly share the door's homeserver.
    hints = {"owner": raw_matrix.get("user_id")}
    resident_entries = _entries("residents", data.get("residents"), problems)
    residents: list[Resident | None] = []
    known: tuple[str, ...] | None = None  # whom a button may ring; None: not known for sure
    if resident_entries is not None:
        residents, known = _check_residents(resident_entries, matrix.get("user_id") if matrix else None, hints,
                                            problems)
    elif "residents" not in data and matrix is not None and matrix.get("owner") is not None:
        known = (matrix["owner"],)

    button_entries = _entries("buttons", data.get("buttons"), problems)
    buttons: list[ButtonConfig | None] = []
    if button_entries is not None:
        panel_table = data.get("panel") if isinstance(data.get("panel"), dict) else {}
        if "button_pin" in panel_table:
            problems.append(ConfigProblem(
                "panel.button_pin",
                "is set together with [[buttons]]; with [[buttons]] each button's pin is set in its own entry: put "
                "this pin in a [[buttons]] entry (pin = ...) and delete button_pin from [panel]",
            ))
        buttons = _check_buttons(button_entries, known, "residents" not in data, hints, problems)
        _check_button_pins(button_entries, panel_table, values.get("panel"), problems)
    return (tuple(r for r in residents if r is not None), tuple(b for b in buttons if b is not None))


# --- public API ------------------------------------------------------------------------------------------------------


_Household = tuple[tuple[Resident, ...], tuple[ButtonConfig, ...]]


def _collect(data: Mapping[str, Any], *, check_files: bool
             ) -> tuple[dict[str, _Values], _Household, list[ConfigProblem]]:
    """Check a parsed TOML document: return the checked values of every usable section, the household's entries,
    and every problem found.

    A section that is missing or not a table is unusable: it gets one problem and no follow-on ones. The other
    sections are still checked, so the user sees everything in one run.
    """
    problems: list[ConfigProblem] = []
    for key, value in data.items():
        if key not in _SECTIONS and key not in _ENTRIES:
            problems.append(ConfigProblem(key, _unknown_top_level_message(key, value)))

    values: dict[str, _Values] = {}
    for section in _SECTIONS:
        table = data.get(section, None if section == "matrix" else {})  # only [matrix] is required
        if table is None:
            problems.append(ConfigProblem(
                "matrix",
                "missing section; add a [matrix] section with homeserver, user_id, room_id, owner and "
                "password_file (with [[residents]]: without room_id and owner; see the commented example "
                "intercom.example.toml)",
            ))
        elif not isinstance(table, dict):
            problems.append(ConfigProblem(
                section, f"expected a [{section}] section, got {describe(table)}; write it as a [{section}] header "
                         "followed by its settings, one per line",
            ))
        else:
            values[section] = _check_section(section, table, problems)
            checked = values[section]
            if section == "matrix":
                _check_who(data, table, problems)
            elif section == "panel" and "buttons" in data:
                # With [[buttons]], panel.button_pin is not used (setting it is an error of its own), so its
                # default must not clash with anything; the buttons' pins are checked with the household.
                checked = {key: value for key, value in checked.items() if key != "button_pin"}
            for rule in _SECTION_RULES.get(section, ()):
                rule(table, checked, problems)
    household = _check_household(data, values, problems)
    if check_files and "matrix" in values:
        _check_secret_files(values["matrix"], problems)
    return values, household, problems


def parse_config(data: Mapping[str, Any], path: str = "<memory>", *, check_files: bool = True) -> Config:
    """Build a :class:`Config` from a parsed TOML document (a dict as ``tomllib`` returns it).

    Raises :class:`ConfigError` listing every problem. ``check_files=False`` skips the checks that look at the
    secret files on this machine, for callers that prepare a config for another machine (the first-boot importer).
    """
    values, (residents, buttons), problems = _collect(data, check_files=check_files)
    if problems:
        raise ConfigError(problems, path)
    sections = {name: cls(**values[name]) for name, cls in _SECTIONS.items()}
    return Config(**sections, residents=residents, buttons=buttons, path=path)


def load_config(path: str, *, check_files: bool = True) -> Config:
    """Read, parse and check a config file. Raises :class:`ConfigError` listing every problem."""
    return parse_config(read_config_file(path), path, check_files=check_files)


def validate_text(text: str, *, check_files: bool = True) -> list[ConfigProblem]:
    """Every problem in a config given as TOML text; an empty list means it is valid."""
    try:
        data = tomlfile.parse_toml(text, "<memory>")
    except ConfigError as err:
        return err.problems
    return _collect(data, check_files=check_files)[2]


def check_config_main(path: str, out: TextIO) -> int:
    """``intercom check-config FILE``: print ``FILE: OK`` and a summary (no secrets) and return 0; or print one
    line per problem and a count, and return 1; or return 2 if the file can't be read or parsed at all."""
    try:
        config = load_config(path)
    except ConfigError as err:
        for problem in err.problems:
            print(f"{path}: {problem}", file=out)
        if err.unreadable:
            return 2
        count = len(err.problems)
        print(f"{path}: {count} problem{'s' if count != 1 else ''} found; fix "
              f"{'them' if count != 1 else 'it'} and run intercom check-config again", file=out)
        return 1
    matrix = config.matrix
    print(f"{path}: OK", file=out)
    print(f"  {'homeserver':<12}{matrix.homeserver}", file=out)
    print(f"  {'user':<12}{matrix.user_id} ({matrix.credential_source})", file=out)
    for label, value in household_summary(config):
        print(f"  {label:<12}{value}", file=out)
    if matrix.require_encryption:
        print(f"  {'encryption':<12}required: the door refuses to work in an unencrypted room", file=out)
    else:
        room, account, who = (("the room", "the owner's", "the owner") if not config.residents else
                               ("a resident's room", "a resident's", "that resident"))
        print(f"  {'encryption':<12}warning: not required. If {room} is not end-to-end encrypted, the homeserver "
              f"can read every message and picture, and any session signed in to {account} account counts as "
              f"{who} (it is answered and may open the door). Turn encryption on in the room, and set "
              "matrix.require_encryption = true to refuse to work without it.", file=out)
    return 0


def household_summary(config: Config) -> list[tuple[str, str]]:
    """``check-config``'s lines about whom the door serves: (label, text) pairs. The single-owner form reads as it
    always did (room, owner) plus its button; a household gets a line per resident and per button."""
    residents, buttons = config.household()
    pins = config.button_pins()
    everybody = tuple(r.user_id for r in residents)

    def rings(button: Button) -> str:
        if button.residents == everybody and len(everybody) > 1:
            return "every resident"
        return checks.one_of(button.residents, "and")

    if not config.residents:
        lines = [("room", str(config.matrix.room_id)), ("owner", str(config.matrix.owner))]
    else:
        lines = []
        for index, resident in enumerate(residents, 1):
            room = f"room {resident.room_id}" if resident.room_id else "room: the door makes one"
            rights = ["the door answers their calls" if resident.answer_calls else "the door does not answer their "
                      "calls", f"{'may' if resident.open_door else 'may not'} open the door",
                      f"quiet hours {resident.quiet_hours}" if resident.quiet_hours else "no quiet hours"]
            lines.append((f"resident {index}", f"{resident.user_id}, {room}; {', '.join(rights)}"))
    if not config.buttons:
        lines.append(("button", f"GPIO {pins[0]}, rings {rings(buttons[0])}"))
    else:
        for index, (button, pin) in enumerate(zip(buttons, pins, strict=True), 1):
            lines.append((f"button {index}", f"{toml(button.name)} on GPIO {pin}, rings {rings(button)}"))
    return lines
