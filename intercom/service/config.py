"""The intercom's configuration: one TOML file, checked up front, loaded into frozen dataclasses.

The person reading our error messages is usually standing at a door with a laptop, not a Python programmer, so
the checker's job is to explain: every problem names the dotted setting (``calls.ring_timeout``), says what is
wrong and says how to fix it, and all problems are reported at once so one run of ``intercom check-config`` is
enough to fix a file.

How it fits together:

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
import difflib
import ipaddress
import json
import os
import re
import stat
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO
from urllib.parse import urlsplit

from intercom.core import CallTimings, CommandSettings
from intercom.errors import IntercomError

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


# --- problems and the error that carries them ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a config file.

    ``field`` is the dotted setting (``"matrix.owner"``), or ``""`` for problems with the file as a whole (it can't
    be read, or it isn't valid TOML). ``message`` says what is wrong and how to fix it.
    """

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class ConfigError(IntercomError, ValueError):
    """The configuration can't be used; ``problems`` lists every reason, each with its fix.

    ``unreadable`` is true when the file could not be read or parsed as TOML at all, so no setting was checked.
    """

    def __init__(self, problems: Iterable[ConfigProblem], path: str = "<memory>", *, unreadable: bool = False):
        self.problems = list(problems)
        self.path = path
        self.unreadable = unreadable
        super().__init__("\n".join(f"{path}: {problem}" for problem in self.problems))


class Invalid(IntercomError, ValueError):
    """Raised by a setting's checker (here and in ``bootconfig``). The message says what is wrong and how to fix it,
    without the setting's name (the caller adds that, so each checker can be shared by several settings)."""


# --- describing values in messages ----------------------------------------------------------------------------------


def toml(value: object) -> str:
    """Write a value the way it would appear in the TOML file, for examples in messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is also a valid TOML basic string
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # "60", not "60.0": both are valid, the short one reads better
    return str(value)


def describe(value: object) -> str:
    """Name a raw TOML value and its type, as in 'got the string "60s"'."""
    if isinstance(value, bool):
        return f"the boolean {toml(value)}"
    if isinstance(value, int):
        return f"the whole number {value}"
    if isinstance(value, float):
        return f"the number {value!r}"  # as written: 1081.0 must not read as the whole number 1081
    if isinstance(value, str):
        return f"the string {toml(value)}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return f"the date/time {value}"  # the only other types tomllib produces


def _one_of(options: Iterable[str], conjunction: str = "or") -> str:
    """'a, b or c' (or 'a, b and c')."""
    items = list(options)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


def _suggest(word: str, choices: Iterable[str]) -> str | None:
    """The closest known name to a misspelt one, if any is close enough to be a plausible typo."""
    matches = difflib.get_close_matches(word.lower(), list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


# --- checkers: one small function per kind of value ----------------------------------------------------------------
#
# A checker takes the raw TOML value and a _Context, returns the value to store, or raises Invalid.


@dataclass(frozen=True, slots=True)
class _Context:
    """What a checker may know besides the value itself."""

    example: str  # an example value written as TOML, e.g. '60' or '"@alice:example.org"'
    table: Mapping[str, object]  # the raw [section] table, for checkers whose advice depends on a neighbour


Checker = Callable[[Any, _Context], Any]


def _type_error(value: object, expected: str, hint: str = "") -> Invalid:
    return Invalid(f"expected {expected}, got {describe(value)}{hint}")


def _text(value: object, ctx: _Context) -> str:
    """Any non-empty string."""
    if not isinstance(value, str):
        raise _type_error(value, f"text in double quotes like {ctx.example}", '; put the value in "double quotes"')
    if not value.strip():
        raise Invalid(f"is empty; write something like {ctx.example}")
    return value


def _word(value: object, ctx: _Context) -> str:
    """A non-empty string without whitespace (a chat command, a device name)."""
    text = _text(value, ctx)
    if any(char.isspace() for char in text):
        raise Invalid(f"{toml(text)} contains spaces; write it without spaces, like {ctx.example}")
    return text


def _number(value: object, ctx: _Context, what: str, *, whole: bool) -> int | float:
    """A TOML integer (or float, unless ``whole``). Booleans are refused although Python counts them as ints:
    ``ring_timeout = true`` is a mistake, not 1 second."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (whole and isinstance(value, float)):
        hint = ""
        if isinstance(value, str):
            hint = "; write a bare number, without quotes" + ("" if _looks_numeric(value) else " or units")
        elif isinstance(value, float):
            hint = "; leave out the decimal point"
        raise _type_error(value, f"{what} like {ctx.example}", hint)
    return value


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_range(value: float, low: float, high: float, unit: str) -> None:
    # Written as "not low <= value <= high" so that nan (valid TOML) is out of range too.
    if not low <= value <= high:
        raise Invalid(f"{toml(value)} is out of range; use a value from {toml(low)} to {toml(high)}{unit}")


def _seconds(low: float, high: float) -> Checker:
    """A duration in seconds, whole or fractional, within [low, high]. Stored as a float."""

    def check(value: object, ctx: _Context) -> float:
        number = _number(value, ctx, "a number of seconds", whole=False)
        _check_range(number, low, high, " seconds")
        return float(number)

    return check


def _whole(low: int, high: int, what: str, unit: str, *, even: bool = False) -> Checker:
    """A whole number within [low, high]; ``even`` for video sizes, which the encoder needs divisible by 2."""

    def check(value: object, ctx: _Context) -> int:
        number = _number(value, ctx, what, whole=True)
        _check_range(number, low, high, unit)
        if even and number % 2:
            raise Invalid(
                f"{number} is odd; the video encoder needs an even number, such as {number - 1} or {number + 1}"
            )
        return number

    return check


def _flag(value: object, ctx: _Context) -> bool:
    if not isinstance(value, bool):
        hint = "; write true or false without quotes" if isinstance(value, str) else ""
        raise _type_error(value, f"true or false (like {ctx.example})", hint)
    return value


def _choice(*options: str) -> Checker:
    """One of a fixed set of words."""

    def check(value: object, ctx: _Context) -> str:
        text = _text(value, ctx)
        if text not in options:
            guess = _suggest(text, options)
            tip = f"did you mean {toml(guess)}? (the choices are {_one_of(options)})" if guess else ""
            raise Invalid(f"{toml(text)} is not a valid choice; {tip or 'use ' + _one_of(options)}")
        return text

    return check


def _gpio_pin(value: object, ctx: _Context) -> int:
    """A BCM GPIO number usable on the 40-pin header."""
    pin = _number(value, ctx, "a BCM GPIO number", whole=True)
    if pin in (0, 1):
        raise Invalid(f"GPIO {pin} is reserved for the HAT ID EEPROM (ID_SD/ID_SC); choose a pin from 2 to 27")
    if not 2 <= pin <= 27:
        raise Invalid(
            f"{pin} is not a GPIO on the Raspberry Pi header; use a BCM GPIO number from 2 to 27 "
            "(the GPIO number, not the physical pin number)"
        )
    return pin


def _absolute_path(value: object, ctx: _Context) -> str:
    """A path that means the same thing whatever directory the service starts in (systemd starts it in /)."""
    text = _text(value, ctx)
    if text.startswith("~"):
        raise Invalid(
            f"{toml(text)} starts with ~, which the service does not expand; write the full path, like {ctx.example}"
        )
    if not os.path.isabs(text):
        raise Invalid(
            f"{toml(text)} is a relative path, which would depend on the directory the service starts in; "
            f"write an absolute path like {ctx.example}"
        )
    return text


# Whole-value placeholders people leave in when copying an example. Matched case-insensitively against the entire
# value only, so a real password that merely contains such a word is never refused.
PLACEHOLDER = re.compile(
    r"change[-_ ]?me|change[-_ ]?it|your[-_ ]?(?:password|access[-_ ]?token|token)|placeholder|secret|password"
    r"|<[^>]*>|x+|\*+|\.\.\.|todo",
    re.IGNORECASE,
)


def _inline_secret(value: object, ctx: _Context) -> str:
    text = _text(value, ctx)
    if PLACEHOLDER.fullmatch(text.strip()):
        raise Invalid(
            "is still a placeholder; write the door account's real credential here, or better, put it in a "
            "file readable only by the service and set password_file / access_token_file instead"
        )
    return text


def _homeserver(value: object, ctx: _Context) -> str:
    """The base URL of the door account's homeserver."""
    url = _word(value, ctx)
    if "://" not in url:
        raise Invalid(f"{toml(url)} has no scheme; write the full URL, like {toml('https://' + url)}")
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 -- raises ValueError for a port that isn't a number
    except ValueError:
        raise Invalid(f"{toml(url)} has an invalid port; write it like https://matrix.example.org:8448") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(f"{toml(url)} is not an http(s) URL; write the homeserver's address like {ctx.example}")
    if parts.query or parts.fragment:
        raise Invalid(f"{toml(url)} should be just the server's address, without ? or #; write it like {ctx.example}")
    if parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
        https = "https://" + url.split("://", 1)[1]
        raise Invalid(
            f"{toml(url)} uses plain http, which would send the door's password and every call's setup "
            f"unencrypted across the network; use {toml(https)} (plain http is allowed only for localhost or "
            "127.0.0.1, e.g. a homeserver on the same machine)"
        )
    return url


# Matrix user IDs per the spec's grammar: lower-case localpart, then a server name (host, IPv4 or [IPv6], port).
_SERVER_NAME = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?"
_USER_ID = re.compile(rf"@(?P<local>[a-z0-9._=/+-]+):(?P<server>{_SERVER_NAME})")


def _user_id(value: object, ctx: _Context) -> str:
    text = _text(value, ctx)
    if _USER_ID.fullmatch(text):
        return text
    raise Invalid(f"{toml(text)} is not a Matrix user ID; {_user_id_fix(text.strip(), _server_hint(ctx))}")


def _server_hint(ctx: _Context) -> str:
    """The server name to use in a suggested user ID: the one the other account in [matrix] uses, as the door and
    its owner usually share a homeserver; else the generic example.org."""
    for key in ("user_id", "owner"):
        match = _USER_ID.fullmatch(str(ctx.table.get(key, "")))
        if match:
            return match["server"]
    return "example.org"


def _user_id_fix(text: str, server: str) -> str:
    """How to turn a mistaken user ID into a valid one, guessing what was meant."""
    if _USER_ID.fullmatch(text):
        return f"remove the spaces around it: {text}"
    if text[:1] in ("#", "!"):
        kind = "a room alias" if text[0] == "#" else "a room ID"
        return f"that is {kind}; write the person's account instead, like @alice:{server}"
    name = text.removeprefix("@")
    if "@" in name and ":" not in name:  # written like an e-mail address: alice@example.org
        local, _, host = name.rpartition("@")
        return f"Matrix IDs are written @user:server, not like an e-mail address; write it as @{local}:{host}"
    local, colon, host = name.partition(":")
    if not local:
        return f"write it like @alice:{server}"
    if not colon:
        return f"write it as @{local}:{server} (the part after ':' is the account's server name)"
    if not text.startswith("@"):
        return f"it must start with @; write it as @{name}"
    if local != local.lower():
        return f"user IDs are lower-case; write it as @{local.lower()}:{host}"
    return (
        "the part before ':' may only use a-z, 0-9 and . _ = - / +, and the part after it is a server name; "
        f"write it like @alice:{server}"
    )


def _room_id(value: object, ctx: _Context) -> str:
    text = _word(value, ctx)
    where = "in Element open the room, then Room settings > Advanced, and copy the \"Internal room ID\""
    if text.startswith("#"):
        raise Invalid(
            f"{toml(text)} is a room alias, but the intercom needs the room ID (it starts with '!', like "
            f"!abc123:example.org); {where}"
        )
    if not text.startswith("!") or len(text) < 2:
        raise Invalid(f"{toml(text)} is not a room ID; room IDs start with '!', like {ctx.example}; {where}")
    return text


# An ALSA PCM that picks the card by its index: hw:1, hw:1,0, plughw:CARD=1,DEV=0, default:1, dsnoop:0,0, ...
_ALSA_CARD_INDEX = re.compile(r"[A-Za-z_]\w*:(?:CARD=)?(?P<card>\d+)(?:,(?:DEV=)?(?P<dev>\d+))?(?:,.*)?")


def _alsa_device(value: object, ctx: _Context) -> str:
    name = _word(value, ctx)
    match = _ALSA_CARD_INDEX.fullmatch(name)
    if match:
        raise Invalid(
            f"{toml(name)} picks the sound card by its index ({match['card']}), which can change between boots "
            "(for example when a USB device is plugged in or found in a different order); use the card's name "
            f"instead, like plughw:CARD=<name>,DEV={match['dev'] or 0} (`aplay -L` and `arecord -L` list the names)"
        )
    return name


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

    homeserver: str = _setting(check=_homeserver, example='"https://matrix.example.org"',
                               about="the URL of the door account's homeserver")
    user_id: str = _setting(check=_user_id, example='"@door:example.org"', about="the door's own Matrix account")
    room_id: str = _setting(check=_room_id, example='"!abc123:example.org"',
                            about="the room the door calls in; Element shows its ID under Room settings > Advanced")
    owner: str = _setting(check=_user_id, example='"@alice:example.org"', about="the person the door calls")
    device_name: str = _setting("Doorbell intercom", check=_text)
    state_dir: str = _setting("/var/lib/intercom", check=_absolute_path)
    password_file: str | None = _setting(None, check=_absolute_path, example='"/etc/intercom/secrets/password"')
    access_token_file: str | None = _setting(None, check=_absolute_path,
                                             example='"/etc/intercom/secrets/access_token"')
    password: str | None = _setting(None, check=_inline_secret, example='"correct horse battery staple"', show=False)
    access_token: str | None = _setting(None, check=_inline_secret, example='"syt_..."', show=False)

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
                return kind, _read_secret_file(path, f"matrix.{kind}_file")  # type: ignore[return-value]
        raise ConfigError([_no_credential_problem()])


@dataclass(frozen=True, slots=True, kw_only=True)
class CallsConfig:
    """``[calls]``: how long each phase of a call may take, in seconds."""

    ring_timeout: float = _setting(_core_default(CallTimings, "ring_timeout"), check=_seconds(10, 600))
    invite_lifetime: float = _setting(_core_default(CallTimings, "invite_lifetime"), check=_seconds(60, 600))
    connect_timeout: float = _setting(_core_default(CallTimings, "connect_timeout"), check=_seconds(3, 120))
    max_call_duration: float = _setting(_core_default(CallTimings, "max_call_duration"), check=_seconds(30, 7200))
    prepare_timeout: float = _setting(_core_default(CallTimings, "prepare_timeout"), check=_seconds(2, 60))
    ended_display: float = _setting(_core_default(CallTimings, "ended_display"), check=_seconds(1, 3600))


@dataclass(frozen=True, slots=True, kw_only=True)
class PanelConfig:
    """``[panel]``: the button, LEDs and door relay (BCM GPIO numbers), and the chat commands that drive them."""

    pin_factory: str = _setting("auto", check=_choice("auto", "lgpio", "rpigpio", "pigpio", "native", "mock"))
    button_pin: int = _setting(17, check=_gpio_pin)
    button_pull_up: bool = _setting(True, check=_flag)
    debounce_ms: int = _setting(50, check=_whole(5, 500, "a whole number of milliseconds", " ms"))
    call_led_pin: int = _setting(22, check=_gpio_pin)
    status_led_pin: int = _setting(23, check=_gpio_pin)
    relay_pin: int = _setting(27, check=_gpio_pin)
    relay_active_high: bool = _setting(True, check=_flag)
    relay_pulse: float = _setting(_core_default(CommandSettings, "relay_pulse"), check=_seconds(0.2, 30))
    open_command: str = _setting(_core_default(CommandSettings, "open_command"), check=_word)
    open_window: float = _setting(_core_default(CommandSettings, "open_window"), check=_seconds(0, 600))
    snapshot_command: str = _setting(_core_default(CommandSettings, "snapshot_command"), check=_word)


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioConfig:
    """``[audio]``: ALSA PCM names for the microphone and the speaker."""

    capture_device: str = _setting("default", check=_alsa_device)
    playback_device: str = _setting("default", check=_alsa_device)
    echo_cancellation: bool = _setting(True, check=_flag)


@dataclass(frozen=True, slots=True, kw_only=True)
class CameraConfig:
    """``[camera]``: where video comes from and how it is encoded."""

    source: str = _setting("picamera2", check=_choice("picamera2", "synthetic"))
    width: int = _setting(1280, check=_whole(160, 1920, "a whole number of pixels", " pixels", even=True))
    height: int = _setting(720, check=_whole(120, 1080, "a whole number of pixels", " pixels", even=True))
    framerate: int = _setting(30, check=_whole(5, 30, "a whole number of frames per second", " frames per second"))
    bitrate_kbps: int = _setting(1500, check=_whole(100, 8000, "a whole number of kbit/s", " kbit/s"))
    keyframe_interval: float = _setting(2.0, check=_seconds(0.5, 2.0))
    snapshots_kept: int = _setting(100, check=_whole(0, 10000, "a whole number of pictures", " pictures"))
    ring_picture: bool = _setting(True, check=_flag)


def _list_of(item: Checker, what: str) -> Checker:
    """A TOML list whose every item passes ``item``; stored as a tuple. ``[]`` is the empty list."""

    def check(value: object, ctx: _Context) -> tuple[Any, ...]:
        if not isinstance(value, list):
            hint = f"; put it in square brackets, like [{toml(value)}]" if isinstance(value, str) else ""
            raise _type_error(value, f"a list of {what} like {ctx.example}", hint)
        items = []
        for index, raw in enumerate(value, 1):
            try:
                items.append(item(raw, ctx))
            except Invalid as invalid:
                raise Invalid(f"item {index}: {invalid}") from None
        return tuple(items)

    return check


def _stun_uri(value: object, ctx: _Context) -> str:
    """``stun:host`` or ``stun:host:port`` (RFC 7064), as WebRTC and aiortc take it."""
    text = _text(value, ctx)
    scheme, _, rest = text.partition(":")
    host, _, port = rest.rpartition(":") if rest.count(":") == 1 else (rest, "", "")
    if scheme.lower() != "stun" or not (host or rest) or "/" in rest or "?" in rest \
            or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise Invalid(f"{toml(text)} is not a STUN server URI; write it like \"stun:stun.example.org:3478\" "
                      "(TURN servers come from the homeserver, not from here)")
    return text


def _ip_address(value: object, ctx: _Context) -> str:
    text = _text(value, ctx)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise Invalid(f"{toml(text)} is not an IP address; write one of this machine's addresses, like "
                      "\"192.168.1.20\"") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkConfig:
    """``[network]``: how calls find a path. TURN servers come from the homeserver; these add to that."""

    stun_servers: tuple[str, ...] = _setting((), check=_list_of(_stun_uri, "STUN URIs"),
                                             example='["stun:stun.example.org:3478"]')
    ice_addresses: tuple[str, ...] = _setting((), check=_list_of(_ip_address, "IP addresses"),
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
            values[key] = spec.metadata["check"](raw, _Context(spec.metadata["example"], table))
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
    guess = _suggest(key, _SETTINGS[section])
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
    guess = _suggest(key, _SECTIONS)
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
        f"{_one_of(_CREDENTIALS[1:])}",
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
            f"{_one_of(_CREDENTIALS)}) and delete the others",
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
                f"give each of {_one_of(_PINS, 'and')} its own pin",
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


# --- secret files ----------------------------------------------------------------------------------------------------


def _secret_file_problem(path: str) -> str | None:
    """Why a secret file can't be used, or None. The file must exist, be a regular file and be private."""
    fix = f"run chmod 600 {path} and chown it to the user the intercom service runs as"
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return f"{path} does not exist; create it with the secret on its first line, then {fix}"
    except OSError as err:  # typically a directory on the way that this user may not enter
        return f"cannot check {path}: {err.strerror}; run check-config as root or as the service's user"
    if not stat.S_ISREG(info.st_mode):
        return f"{path} is not a regular file; point this setting at a file that contains only the secret"
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        return f"{path} can be read or changed by other users (mode {mode:04o}); {fix}"
    if not mode & stat.S_IRUSR:
        return f"{path} cannot be read even by its owner (mode {mode:04o}); {fix}"
    try:
        empty = not _read_first_line(path)
    except OSError:
        return None  # owned by another user (the service's): fine, and its content is none of our business
    return f"{path} is empty; put the secret on its first line" if empty else None


def _read_first_line(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as file:
        return file.readline().strip()


def _read_secret_file(path: str, setting: str) -> str:
    try:
        secret = _read_first_line(path)
    except OSError as err:
        fix = f"make it readable by the user the service runs as (chown that user {path}; chmod 600 {path})"
        raise ConfigError([ConfigProblem(setting, f"cannot read {path}: {err.strerror}; {fix}")]) from None
    if not secret:
        raise ConfigError([ConfigProblem(setting, f"{path} is empty; put the secret on its first line")])
    return secret


def _check_secret_files(matrix: _Values, problems: list[ConfigProblem]) -> None:
    for key in ("password_file", "access_token_file"):
        path = matrix.get(key)
        problem = _secret_file_problem(path) if path is not None else None
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


def _parse_toml(text: str, path: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError([_syntax_problem(text, str(err))], path, unreadable=True) from None


# tomllib's message prefixes, and what they usually mean in a hand-written config file.
_SYNTAX_HINTS = (
    ("Invalid value", 'text must be in "double quotes" (owner = "@alice:example.org"); numbers and true/false '
                      "are written without quotes"),
    ("Cannot overwrite", "a setting is written twice; delete one of them"),
    ("Cannot declare", "a [section] header appears twice; merge the two sections into one"),
    ("Expected '=' after a key", "each setting is written as name = value"),
    ("Expected newline or end of document", 'a value must end its line: numbers without units (60, not 60s), text '
                                            'in "double quotes", comments after a #'),
    ("Unterminated string", 'a string is missing its closing "'),
    ("Expected ']'", "a section header needs its closing ], like [calls]"),
)
_SYNTAX_POSITION = re.compile(r"(?P<what>.*) \(at (?:line (?P<line>\d+), column (?P<column>\d+)|end of document)\)")


def _syntax_problem(text: str, message: str) -> ConfigProblem:
    match = _SYNTAX_POSITION.fullmatch(message)
    what = match["what"] if match else message
    where = "at the end of the file"
    if match and match["line"]:
        line = int(match["line"])
        source = text.splitlines()[line - 1].strip() if line <= len(text.splitlines()) else ""
        where = f"at line {line}, column {match['column']}" + (f" ({source})" if source else "")
    hint = next((h for prefix, h in _SYNTAX_HINTS if what.startswith(prefix)),
                'check the syntax there: settings are name = value, text in "double quotes", sections like [calls]')
    return ConfigProblem("", f"TOML syntax error {where}: {what}; {hint}")


def read_config_file(path: str) -> dict[str, Any]:
    """Read and parse a TOML file without checking its settings.

    Raises :class:`ConfigError` with ``unreadable=True`` and a one-line problem if the file can't be read or isn't
    valid TOML.
    """
    def fail(message: str) -> ConfigError:
        return ConfigError([ConfigProblem("", message)], path, unreadable=True)

    try:
        with open(path, "rb") as file:
            raw = file.read()
    except FileNotFoundError:
        raise fail("no such file; check the path (the service reads /etc/intercom/intercom.toml unless given "
                   "--config), or start from the commented example intercom.example.toml") from None
    except IsADirectoryError:
        raise fail("is a directory; give the path of the .toml config file") from None
    except PermissionError:
        raise fail("permission denied; run the check as a user who may read it, e.g. with sudo") from None
    except OSError as err:
        raise fail(f"cannot read the file: {err.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise fail(f"is not UTF-8 text (byte {err.start}); save it as UTF-8 (TOML files must be)") from None
    return _parse_toml(text, path)


def load_config(path: str, *, check_files: bool = True) -> Config:
    """Read, parse and check a config file. Raises :class:`ConfigError` listing every problem."""
    return parse_config(read_config_file(path), path, check_files=check_files)


def validate_text(text: str, *, check_files: bool = True) -> list[ConfigProblem]:
    """Every problem in a config given as TOML text; an empty list means it is valid."""
    try:
        data = _parse_toml(text, "<memory>")
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
    return 0
