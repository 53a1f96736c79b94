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

from . import checks, secretfiles, tomlfile
from .checks import Checker, ConfigError, ConfigProblem, Invalid, describe, toml
from .tomlfile import read_config_file

__all__ = [
    "AudioConfig",
    "CallsConfig",
    "CameraConfig",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "CredentialKind",
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

    Exactly one of the four credential settings is set. Inline ``password``/``access_token`` are accepted for
    quick tests but kept out of ``repr``; read the credential with :meth:`read_secret`.
    """

    homeserver: str = _setting(check=checks.homeserver, example='"https://matrix.example.org"',
                               about="the URL of the door account's homeserver")
    user_id: str = _setting(check=checks.user_id, example='"@door:example.org"', about="the door's own Matrix account")
    room_id: str = _setting(check=checks.room_id, example='"!abc123:example.org"',
                            about="the room the door calls in; Element shows its ID under Room settings > Advanced")
    owner: str = _setting(check=checks.user_id, example='"@alice:example.org"', about="the person the door calls")
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The whole configuration. ``path`` is the file it came from (``"<memory>"`` for :func:`parse_config`)."""

    matrix: MatrixConfig
    calls: CallsConfig = field(default_factory=CallsConfig)
    panel: PanelConfig = field(default_factory=PanelConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    path: str = "<memory>"


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


def _home_section(key: str) -> str | None:
    """The section a setting name belongs to, to explain a setting written in the wrong place."""
    return next((section for section, settings in _SETTINGS.items() if key in settings), None)


# --- checking sections -----------------------------------------------------------------------------------------------

# _check_section returns the checked values of one section: its defaults, overwritten by every valid value from
# the file. A setting whose value was invalid (or that is required and missing) is absent, so rules that need it
# are skipped rather than piling up follow-on complaints about a value the user already has to fix.
_Values = dict[str, Any]


def _check_section(section: str, table: Mapping[str, object], problems: list[ConfigProblem]) -> _Values:
    settings = _SETTINGS[section]
    values = {name: f.default for name, f in settings.items() if f.default is not dataclasses.MISSING}
    for key, raw in table.items():  # file order, so problems come out in the order the user reads them
        spec = settings.get(key)
        if spec is None:
            problems.append(ConfigProblem(f"{section}.{key}", _unknown_setting_message(section, key)))
            continue
        try:
            values[key] = spec.metadata["check"](raw, checks.Context(spec.metadata["example"], table))
        except Invalid as invalid:
            problems.append(ConfigProblem(f"{section}.{key}", str(invalid)))
            values.pop(key, None)
    for name, spec in settings.items():
        if spec.default is dataclasses.MISSING and name not in table:
            about = f" ({spec.metadata['about']})" if spec.metadata["about"] else ""
            example = spec.metadata["example"]
            problems.append(ConfigProblem(
                f"{section}.{name}", f"missing; add {name} = {example} to the [{section}] section{about}"
            ))
    return values


def _unknown_setting_message(section: str, key: str) -> str:
    home = _home_section(key)
    if home is not None:
        return f"this setting belongs in the [{home}] section, not [{section}]; move it below the [{home}] header"
    guess = checks.suggest(key, _SETTINGS[section])
    if guess is not None:
        return f"unknown setting; did you mean {guess}?"
    return f"unknown setting; remove it (the [{section}] settings are: {', '.join(_SETTINGS[section])})"


def _unknown_top_level_message(key: str, value: object) -> str:
    sections = ", ".join(f"[{name}]" for name in _SECTIONS)
    if not isinstance(value, dict):
        home = _home_section(key)
        if home is not None:
            return (f"this setting is above every [section] header; move it below the [{home}] header "
                    f"(it belongs in [{home}])")
        return f"unknown setting; settings go inside one of the sections {sections}"
    guess = checks.suggest(key, _SECTIONS)
    if guess is not None:
        return f"unknown section [{key}]; did you mean [{guess}]?"
    return f"unknown section [{key}]; remove it (the sections are {sections})"


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
    if "owner" in matrix and matrix.get("owner") == matrix.get("user_id"):
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


# --- public API ------------------------------------------------------------------------------------------------------


def _collect(data: Mapping[str, Any], *, check_files: bool) -> tuple[dict[str, _Values], list[ConfigProblem]]:
    """Check a parsed TOML document: return the checked values of every usable section, and every problem found.

    A section that is missing or not a table is unusable: it gets one problem and no follow-on ones. The other
    sections are still checked, so the user sees everything in one run.
    """
    problems: list[ConfigProblem] = []
    for key, value in data.items():
        if key not in _SECTIONS:
            problems.append(ConfigProblem(key, _unknown_top_level_message(key, value)))

    values: dict[str, _Values] = {}
    for section in _SECTIONS:
        table = data.get(section, None if section == "matrix" else {})  # only [matrix] is required
        if table is None:
            problems.append(ConfigProblem(
                "matrix",
                "missing section; add a [matrix] section with homeserver, user_id, room_id, owner and "
                "password_file (see the commented example intercom.example.toml)",
            ))
        elif not isinstance(table, dict):
            problems.append(ConfigProblem(
                section, f"expected a [{section}] section, got {describe(table)}; write it as a [{section}] header "
                         "followed by its settings, one per line",
            ))
        else:
            values[section] = _check_section(section, table, problems)
            for rule in _SECTION_RULES.get(section, ()):
                rule(table, values[section], problems)
    if check_files and "matrix" in values:
        _check_secret_files(values["matrix"], problems)
    return values, problems


def parse_config(data: Mapping[str, Any], path: str = "<memory>", *, check_files: bool = True) -> Config:
    """Build a :class:`Config` from a parsed TOML document (a dict as ``tomllib`` returns it).

    Raises :class:`ConfigError` listing every problem. ``check_files=False`` skips the checks that look at the
    secret files on this machine, for callers that prepare a config for another machine (the first-boot importer).
    """
    values, problems = _collect(data, check_files=check_files)
    if problems:
        raise ConfigError(problems, path)
    sections = {name: cls(**values[name]) for name, cls in _SECTIONS.items()}
    return Config(**sections, path=path)


def load_config(path: str, *, check_files: bool = True) -> Config:
    """Read, parse and check a config file. Raises :class:`ConfigError` listing every problem."""
    return parse_config(read_config_file(path), path, check_files=check_files)


def validate_text(text: str, *, check_files: bool = True) -> list[ConfigProblem]:
    """Every problem in a config given as TOML text; an empty list means it is valid."""
    try:
        data = tomlfile.parse_toml(text, "<memory>")
    except ConfigError as err:
        return err.problems
    return _collect(data, check_files=check_files)[1]


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
    for label, value in (
        ("homeserver", matrix.homeserver),
        ("user", f"{matrix.user_id} ({matrix.credential_source})"),
        ("room", matrix.room_id),
        ("owner", matrix.owner),
    ):
        print(f"  {label:<12}{value}", file=out)
    if matrix.require_encryption:
        print(f"  {'encryption':<12}required: the door refuses to work in an unencrypted room", file=out)
    else:
        print(f"  {'encryption':<12}warning: not required. If the room is not end-to-end encrypted, the homeserver "
              "can read every message and picture, and any session signed in to the owner's account counts as the "
              "owner (it is answered and may open the door). Turn encryption on in the room, and set "
              "matrix.require_encryption = true to refuse to work without it.", file=out)
    return 0
