"""The words of the config checker: the problems it reports, how it describes values, and one small checker per
kind of value (text, seconds, a GPIO pin, a Matrix user ID...).

A checker takes the raw TOML value and a :class:`Context`, returns the value to store, or raises :class:`Invalid`
with a message that says what is wrong and how to fix it (without the setting's name: the caller adds that, so a
checker can be shared by several settings). The schema that uses them is :mod:`intercom.service.config`.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from intercom.core.household import QuietHours
from intercom.errors import IntercomError


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
    """Raised by a setting's checker (here, in ``config`` and in ``bootconfig``). The message says what is wrong and how to fix it,
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


def one_of(options: Iterable[str], conjunction: str = "or") -> str:
    """'a, b or c' (or 'a, b and c')."""
    items = list(options)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


def suggest(word: str, choices: Iterable[str]) -> str | None:
    """The closest known name to a misspelt one, if any is close enough to be a plausible typo."""
    matches = difflib.get_close_matches(word.lower(), list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


# --- checkers: one small function per kind of value ----------------------------------------------------------------
#
# A checker takes the raw TOML value and a Context, returns the value to store, or raises Invalid.


@dataclass(frozen=True, slots=True)
class Context:
    """What a checker may know besides the value itself."""

    example: str  # an example value written as TOML, e.g. '60' or '"@alice:example.org"'
    table: Mapping[str, object]  # the raw [section] table, for checkers whose advice depends on a neighbour


Checker = Callable[[Any, Context], Any]


def type_error(value: object, expected: str, hint: str = "") -> Invalid:
    return Invalid(f"expected {expected}, got {describe(value)}{hint}")


def text_value(value: object, ctx: Context) -> str:
    """Any non-empty string."""
    if not isinstance(value, str):
        raise type_error(value, f"text in double quotes like {ctx.example}", '; put the value in "double quotes"')
    if not value.strip():
        raise Invalid(f"is empty; write something like {ctx.example}")
    return value


def word(value: object, ctx: Context) -> str:
    """A non-empty string without whitespace (a chat command, a device name)."""
    text = text_value(value, ctx)
    if any(char.isspace() for char in text):
        raise Invalid(f"{toml(text)} contains spaces; write it without spaces, like {ctx.example}")
    return text


def number_value(value: object, ctx: Context, what: str, *, whole: bool) -> int | float:
    """A TOML integer (or float, unless ``whole``). Booleans are refused although Python counts them as ints:
    ``ring_timeout = true`` is a mistake, not 1 second."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (whole and isinstance(value, float)):
        hint = ""
        if isinstance(value, str):
            hint = "; write a bare number, without quotes" + ("" if _looks_numeric(value) else " or units")
        elif isinstance(value, float):
            hint = "; leave out the decimal point"
        raise type_error(value, f"{what} like {ctx.example}", hint)
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


def seconds(low: float, high: float) -> Checker:
    """A duration in seconds, whole or fractional, within [low, high]. Stored as a float."""

    def check(value: object, ctx: Context) -> float:
        number = number_value(value, ctx, "a number of seconds", whole=False)
        _check_range(number, low, high, " seconds")
        return float(number)

    return check


def whole(low: int, high: int, what: str, unit: str, *, even: bool = False) -> Checker:
    """A whole number within [low, high]; ``even`` for video sizes, which the encoder needs divisible by 2."""

    def check(value: object, ctx: Context) -> int:
        number = number_value(value, ctx, what, whole=True)
        _check_range(number, low, high, unit)
        if even and number % 2:
            raise Invalid(
                f"{number} is odd; the video encoder needs an even number, such as {number - 1} or {number + 1}"
            )
        return number

    return check


def short_text(limit: int) -> Checker:
    """A name shown in messages to people: one line, at most ``limit`` characters; stored without surrounding
    spaces."""

    def check(value: object, ctx: Context) -> str:
        text = text_value(value, ctx).strip()
        if not text.isprintable():
            raise Invalid(f"has a line break or another control character; write it on one line, like {ctx.example}")
        if len(text) > limit:
            raise Invalid(f"is {len(text)} characters long; notices show it, so keep it short (at most {limit}), "
                          f"like {ctx.example}")
        return text

    return check


def quiet_hours(value: object, ctx: Context) -> QuietHours:
    """A daily span of local time, ``"HH:MM-HH:MM"`` on the 24-hour clock; it may run over midnight. Stored as the
    core's :class:`~intercom.core.household.QuietHours`."""
    text = text_value(value, ctx)
    how = f'write it as "HH:MM-HH:MM" on the 24-hour clock, like {ctx.example} (it may run over midnight)'
    if text.count("-") != 1:
        raise Invalid(f"{toml(text[:40])} is not a span of time; {how}")
    try:
        hours = QuietHours.parse(text)
    except ValueError as err:
        raise Invalid(f"{err}; {how}") from None
    if hours.start == hours.end:
        raise Invalid(f"{toml(text)} starts and ends at the same time, so it is never quiet; {how}, or delete "
                      "quiet_hours")
    return hours


def flag(value: object, ctx: Context) -> bool:
    if not isinstance(value, bool):
        hint = "; write true or false without quotes" if isinstance(value, str) else ""
        raise type_error(value, f"true or false (like {ctx.example})", hint)
    return value


def choice(*options: str) -> Checker:
    """One of a fixed set of words."""

    def check(value: object, ctx: Context) -> str:
        text = text_value(value, ctx)
        if text not in options:
            guess = suggest(text, options)
            tip = f"did you mean {toml(guess)}? (the choices are {one_of(options)})" if guess else ""
            raise Invalid(f"{toml(text)} is not a valid choice; {tip or 'use ' + one_of(options)}")
        return text

    return check


def gpio_pin(value: object, ctx: Context) -> int:
    """A BCM GPIO number usable on the 40-pin header."""
    pin = number_value(value, ctx, "a BCM GPIO number", whole=True)
    if pin in (0, 1):
        raise Invalid(f"GPIO {pin} is reserved for the HAT ID EEPROM (ID_SD/ID_SC); choose a pin from 2 to 27")
    if not 2 <= pin <= 27:
        raise Invalid(
            f"{pin} is not a GPIO on the Raspberry Pi header; use a BCM GPIO number from 2 to 27 "
            "(the GPIO number, not the physical pin number)"
        )
    return pin


def absolute_path(value: object, ctx: Context) -> str:
    """A path that means the same thing whatever directory the service starts in (systemd starts it in /)."""
    text = text_value(value, ctx)
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


def inline_secret(value: object, ctx: Context) -> str:
    text = text_value(value, ctx)
    if PLACEHOLDER.fullmatch(text.strip()):
        raise Invalid(
            "is still a placeholder; write the door account's real credential here, or better, put it in a "
            "file readable only by the service and set password_file / access_token_file instead"
        )
    return text


def homeserver(value: object, ctx: Context) -> str:
    """The base URL of the door account's homeserver."""
    url = word(value, ctx)
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


def user_id(value: object, ctx: Context) -> str:
    text = text_value(value, ctx)
    if _USER_ID.fullmatch(text):
        return text
    raise Invalid(f"{toml(text)} is not a Matrix user ID; {_user_id_fix(text.strip(), _server_hint(ctx))}")


def _server_hint(ctx: Context) -> str:
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


def room_id(value: object, ctx: Context) -> str:
    text = word(value, ctx)
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


def alsa_device(value: object, ctx: Context) -> str:
    name = word(value, ctx)
    match = _ALSA_CARD_INDEX.fullmatch(name)
    if match:
        raise Invalid(
            f"{toml(name)} picks the sound card by its index ({match['card']}), which can change between boots "
            "(for example when a USB device is plugged in or found in a different order); use the card's name "
            f"instead, like plughw:CARD=<name>,DEV={match['dev'] or 0} (`aplay -L` and `arecord -L` list the names)"
        )
    return name


def list_of(item: Checker, what: str) -> Checker:
    """A TOML list whose every item passes ``item``; stored as a tuple. ``[]`` is the empty list."""

    def check(value: object, ctx: Context) -> tuple[Any, ...]:
        if not isinstance(value, list):
            hint = f"; put it in square brackets, like [{toml(value)}]" if isinstance(value, str) else ""
            raise type_error(value, f"a list of {what} like {ctx.example}", hint)
        items = []
        for index, raw in enumerate(value, 1):
            try:
                items.append(item(raw, ctx))
            except Invalid as invalid:
                raise Invalid(f"item {index}: {invalid}") from None
        return tuple(items)

    return check


def stun_uri(value: object, ctx: Context) -> str:
    """``stun:host`` or ``stun:host:port`` (RFC 7064), as WebRTC and aiortc take it."""
    text = text_value(value, ctx)
    scheme, _, rest = text.partition(":")
    host, _, port = rest.rpartition(":") if rest.count(":") == 1 else (rest, "", "")
    if scheme.lower() != "stun" or not (host or rest) or "/" in rest or "?" in rest \
            or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise Invalid(f"{toml(text)} is not a STUN server URI; write it like \"stun:stun.example.org:3478\" "
                      "(TURN servers come from the homeserver, not from here)")
    return text


def ip_address(value: object, ctx: Context) -> str:
    text = text_value(value, ctx)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise Invalid(f"{toml(text)} is not an IP address; write one of this machine's addresses, like "
                      "\"192.168.1.20\"") from None
