"""Reading the config file: bytes to a TOML document, with a message a person at a door can act on when the file
cannot be read, is not UTF-8, or is not valid TOML."""

from __future__ import annotations

import re
import tomllib
from typing import Any

from .checks import ConfigError, ConfigProblem


def parse_toml(text: str, path: str) -> dict[str, Any]:
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


#: Setting names whose values are secrets (the Matrix password and token, the Wi-Fi password, the TURN secret...).
_SECRET_NAME = re.compile(r"pass|secret|token|psk|key|credential", re.IGNORECASE)
_SETTING_LINE = re.compile(r"\s*(?P<key>[A-Za-z0-9_.\"' -]+?)\s*=(?P<value>.*)")


def _quotable(line: str) -> str:
    """The part of a bad line that may be shown: a setting line as written, or with its value hidden when the
    setting is a secret; nothing for a line that is no setting (it could be a pasted password)."""
    match = _SETTING_LINE.fullmatch(line)
    if match is None or not match["key"].strip():
        return ""
    if _SECRET_NAME.search(match["key"]):
        return f"{match['key'].strip()} = (value hidden)"
    return line.strip()


def _syntax_problem(text: str, message: str) -> ConfigProblem:
    match = _SYNTAX_POSITION.fullmatch(message)
    what = match["what"] if match else message
    where = "at the end of the file"
    if match and match["line"]:
        line = int(match["line"])
        source = _quotable(text.splitlines()[line - 1]) if line <= len(text.splitlines()) else ""
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
    return parse_toml(text, path)
