"""The SD-card image's configuration import: ``intercom.toml`` on the card's FAT boot partition, applied at boot.

Someone who has just flashed the image edits one file on the card from their PC, ``intercom.toml``: the intercom's
own sections (``[matrix]``, ``[calls]``, ``[panel]``, ``[audio]``, ``[camera]``, checked by exactly the same code as
``intercom check-config``) plus two sections for the image itself::

    [wifi]                      # optional; leave it out for Ethernet
    ssid = "MyNetwork"
    password = "wifi password"  # WPA2/WPA3 personal; leave it out for an open network
    country = "DE"              # two-letter country code: Wi-Fi channels and power depend on it
    hidden = false              # optional: true if the network does not broadcast its name

    [system]                    # optional
    hostname = "doorbell"
    ssh_authorized_keys = ["ssh-ed25519 AAAA... me@laptop"]   # optional: keys that may log in as root over ssh

At every boot where the file is on the card, ``intercom-boot-config.service`` runs this module, which either

- **applies** it: writes ``/etc/intercom/intercom.toml`` (no secrets in it), moves the Matrix password or access
  token into ``/etc/intercom/secrets/`` (0600, owned by the service user) and the Wi-Fi password into a
  NetworkManager profile (0600, root), sets the Wi-Fi country and the host name, and replaces the card's file with
  ``intercom.toml.applied``, the same text with every secret taken out; or
- **rejects** it: changes nothing (the door keeps its previous, working settings) and says why, in the journal,
  in ``intercom-config-errors.txt`` next to the file on the card, and in ``/run/intercom-boot-config/errors``
  (for the service's LEDs). The file stays on the card to be fixed.

Everything is written under a root directory (``/`` on the door, a temporary directory in tests) and the
ownership is given explicitly, so the whole import runs in tests without root.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import difflib
import io
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from intercom.durable import make_dirs, remove_durably, rename_durably, write_atomic

# The config checker's message helpers and placeholder rule, so [wifi] and [system] problems read exactly like the
# others, and a placeholder Wi-Fi password is refused like a placeholder Matrix password.
from intercom.service.checks import PLACEHOLDER, ConfigError, ConfigProblem, Invalid, describe, toml
from intercom.service.config import Config, parse_config, read_config_file

__all__ = [
    "APPLIED_NAME",
    "CARD_NAME",
    "ERRORS_NAME",
    "ImportResult",
    "Plan",
    "Target",
    "check_card_config",
    "import_boot_config",
    "main",
    "nm_keyfile",
    "rejected_card_fault",
    "watch_rejected_card",
]

#: The file the user writes on the card, what it becomes once applied, and the report of a rejected one.
CARD_NAME = "intercom.toml"
APPLIED_NAME = "intercom.toml.applied"
ERRORS_NAME = "intercom-config-errors.txt"

#: Where things go on the door, relative to the target root.
CONFIG_PATH = "etc/intercom/intercom.toml"
SECRETS_DIR = "etc/intercom/secrets"
NM_CONNECTION_ID = "intercom-wifi"
NM_KEYFILE = f"etc/NetworkManager/system-connections/{NM_CONNECTION_ID}.nmconnection"
WIFI_COUNTRY_FILE = "etc/modprobe.d/intercom-wifi-country.conf"
ERRORS_MARKER = "run/intercom-boot-config/errors"
SERVICE_USER = "intercom"

#: The intercom's arrays of tables (``[[residents]]``, ``[[buttons]]``): optional, and passed to the checker like
#: its sections.
INTERCOM_ARRAYS = ("residents", "buttons")
#: The intercom's own sections, in the order the checker defines them.
INTERCOM_SECTIONS = tuple(f.name for f in dataclasses.fields(Config) if f.name not in ("path", *INTERCOM_ARRAYS))
IMAGE_SECTIONS = ("wifi", "system")
ALL_SECTIONS = INTERCOM_SECTIONS + IMAGE_SECTIONS
#: Inline secrets in [matrix]: each is moved into a file of its own and replaced by the matching *_file setting.
MATRIX_SECRETS = ("password", "access_token")


# --- the [wifi] and [system] sections --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Wifi:
    ssid: str
    password: str | None  # None: an open network
    country: str
    hidden: bool = False

    def __repr__(self) -> str:  # never the password
        return f"Wifi(ssid={self.ssid!r}, country={self.country!r}, hidden={self.hidden})"


@dataclass(frozen=True, slots=True)
class System:
    hostname: str | None = None
    ssh_authorized_keys: tuple[str, ...] | None = None


def _text(value: object, example: str) -> str:
    if not isinstance(value, str):
        raise Invalid(f'expected text in double quotes like {example}, got {describe(value)}; put the value in '
                      '"double quotes"')
    if not value.strip():
        raise Invalid(f"is empty; write something like {example}")
    return value


def _ssid(value: object) -> str:
    ssid = _text(value, '"MyNetwork"')
    if len(ssid.encode()) > 32:
        raise Invalid(f"{toml(ssid)} is {len(ssid.encode())} bytes long, but a Wi-Fi network name has at most 32; "
                      "copy the name exactly as your phone or router shows it")
    return ssid


_HEX_PSK = re.compile(r"[0-9a-fA-F]{64}")


def _wifi_password(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid(f'expected the Wi-Fi password in double quotes, got {describe(value)}; write it like '
                      'password = "your wifi password"')
    if value == "":
        raise Invalid("is empty; write the Wi-Fi password, or delete the line if the network is open")
    if PLACEHOLDER.fullmatch(value.strip()):
        raise Invalid("is still a placeholder; write your Wi-Fi network's real password here")
    if _HEX_PSK.fullmatch(value):
        return value
    if any(not " " <= char <= "~" for char in value):
        raise Invalid("contains characters other than plain ASCII letters, digits, spaces and punctuation, which "
                      "WPA passwords cannot have; check the password (it may have been pasted with a line break "
                      "or a typographic quote)")
    if not 8 <= len(value) <= 63:
        raise Invalid(f"is {len(value)} characters long, but a WPA password has 8 to 63; check it (a 64-character "
                      "key must be written in hexadecimal digits)")
    return value


_COUNTRY = re.compile(r"[A-Za-z]{2}")


def _country(value: object) -> str:
    text = _text(value, '"DE"')
    if not _COUNTRY.fullmatch(text.strip()):
        raise Invalid(f"{toml(text)} is not a two-letter country code; write the ISO 3166 code of the country the "
                      'door is in, like "DE", "GB" or "US"')
    return text.strip().upper()


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        hint = "; write true or false without quotes" if isinstance(value, str) else ""
        raise Invalid(f"expected true or false, got {describe(value)}{hint}")
    return value


_HOSTNAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def _hostname(value: object) -> str:
    text = _text(value, '"doorbell"')
    if _HOSTNAME.fullmatch(text):
        return text
    fixed = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].strip("-") or "doorbell"
    raise Invalid(f"{toml(text)} is not a valid host name; use lower-case letters, digits and hyphens (not at "
                  f"the start or end), at most 63 characters, like {toml(fixed)}")


_SSH_KEY = re.compile(r"(?:ssh-(?:ed25519|rsa|dss)|ecdsa-sha2-nistp\d+|sk-[a-z0-9-]+@openssh\.com) [A-Za-z0-9+/]+=*"
                      r"(?: .*)?")


def _ssh_keys(value: object) -> tuple[str, ...]:
    example = '["ssh-ed25519 AAAA... me@laptop"]'
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise Invalid(f"expected a list of public keys like {example}, got {describe(value)}")
    keys = []
    for index, key in enumerate(value, 1):
        if not isinstance(key, str) or not _SSH_KEY.fullmatch(key.strip()) or "\n" in key.strip():
            shown = toml(key) if isinstance(key, str) else describe(key)
            if isinstance(key, str) and len(shown) > 40:
                shown = shown[:37] + '..."'
            raise Invalid(f"key {index} ({shown}) is not an ssh public key; paste one line of your ~/.ssh/id_*.pub "
                          f'file (it starts with "ssh-ed25519 " or "ssh-rsa "), like {example}')
        keys.append(key.strip())
    return tuple(keys)


_WIFI_SETTINGS = {"ssid": _ssid, "password": _wifi_password, "country": _country, "hidden": _flag}
_SYSTEM_SETTINGS = {"hostname": _hostname, "ssh_authorized_keys": _ssh_keys}
_IMAGE_SETTINGS = {"wifi": _WIFI_SETTINGS, "system": _SYSTEM_SETTINGS}


def _check_image_section(section: str, table: Mapping[str, object], problems: list[ConfigProblem]) -> dict[str, Any]:
    settings = _IMAGE_SETTINGS[section]
    values: dict[str, Any] = {}
    for key, raw in table.items():
        check = settings.get(key)
        if check is None:
            guess = difflib.get_close_matches(key.lower(), settings, n=1, cutoff=0.6)
            if guess:
                message = f"unknown setting; did you mean {guess[0]}?"
            else:
                message = f"unknown setting; remove it (the [{section}] settings are: {', '.join(settings)})"
            problems.append(ConfigProblem(f"{section}.{key}", message))
            continue
        try:
            values[key] = check(raw)
        except Invalid as invalid:
            problems.append(ConfigProblem(f"{section}.{key}", str(invalid)))
    return values


def _check_wifi(table: Mapping[str, object], problems: list[ConfigProblem]) -> Wifi | None:
    values = _check_image_section("wifi", table, problems)
    for name, example, about in (("ssid", '"MyNetwork"', "the name of your Wi-Fi network"),
                                 ("country", '"DE"', "the two-letter code of the country the door is in; Wi-Fi "
                                                     "channels depend on it")):
        if name not in table:
            problems.append(ConfigProblem(f"wifi.{name}", f"missing; add {name} = {example} to the [wifi] section "
                                                          f"({about}), or remove the [wifi] section for Ethernet"))
    if "ssid" not in values or "country" not in values or ("password" in table and "password" not in values):
        return None
    return Wifi(values["ssid"], values.get("password"), values["country"], values.get("hidden", False))


# --- checking the card's file ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    """A checked card file, and everything that applying it writes."""

    #: the intercom's sections (a list of tables for [[residents]] and [[buttons]]) with the secrets replaced by
    #: *_file settings
    intercom: dict[str, Any]
    secrets: dict[str, str] = field(repr=False)  # file name in SECRETS_DIR -> secret
    wifi: Wifi | None
    system: System
    card_text: str = field(repr=False)  # the card's file with every secret taken out


def _unknown_section_message(key: str, value: object) -> str | None:
    """Our message for an unknown top-level key, or None to leave it to the intercom's checker."""
    if not isinstance(value, dict):
        home = next((s for s, settings in _IMAGE_SETTINGS.items() if key in settings), None)
        if home is None:
            return None  # a setting of the intercom's own sections above every header: the checker explains that
        return f"this setting is above every [section] header; move it below the [{home}] header"
    names = ", ".join([f"[{name}]" for name in ALL_SECTIONS] + [f"[[{name}]]" for name in INTERCOM_ARRAYS])
    guess = difflib.get_close_matches(key.lower(), ALL_SECTIONS + INTERCOM_ARRAYS, n=1, cutoff=0.6)
    if guess:
        return (f"unknown section [{key}]; did you mean "
                f"{f'[[{guess[0]}]]' if guess[0] in INTERCOM_ARRAYS else f'[{guess[0]}]'}?")
    return f"unknown section [{key}]; remove it (the sections are {names})"


def check_card_config(data: Mapping[str, Any], text: str, *, root: Path, path: str = CARD_NAME) -> Plan:
    """Check a parsed card file (``data``, and its ``text`` for the scrubbed copy). Raises :class:`ConfigError`
    listing every problem, in the order of the sections in the file.

    The intercom's sections go through :func:`~intercom.service.config.parse_config` unchanged, with
    ``check_files=False`` (the secret files are made by the import); a ``*_file`` setting that names a file the
    user put on the door some other way must exist under ``root``.
    """
    problems: list[ConfigProblem] = []
    intercom_data: dict[str, Any] = {}
    for key, value in data.items():
        if key in IMAGE_SECTIONS:
            continue
        message = None if key in INTERCOM_SECTIONS + INTERCOM_ARRAYS else _unknown_section_message(key, value)
        if message is None:
            intercom_data[key] = value
        else:
            problems.append(ConfigProblem(key, message))
    try:
        parse_config(intercom_data, path, check_files=False)
    except ConfigError as err:
        problems.extend(err.problems)

    wifi = system = None
    for section in IMAGE_SECTIONS:
        table = data.get(section)
        if table is None:
            continue
        if not isinstance(table, dict):
            problems.append(ConfigProblem(section, f"expected a [{section}] section, got {describe(table)}; write "
                                                   f"it as a [{section}] header followed by its settings, one per "
                                                   "line"))
        elif section == "wifi":
            wifi = _check_wifi(table, problems)
        else:
            system = System(**_check_image_section("system", table, problems))

    matrix = data.get("matrix")
    if isinstance(matrix, dict):
        for kind in MATRIX_SECRETS:
            given = matrix.get(f"{kind}_file")
            if isinstance(given, str) and os.path.isabs(given) and not (root / given.lstrip("/")).is_file():
                problems.append(ConfigProblem(
                    f"matrix.{kind}_file",
                    f"{given} does not exist on the door; write the {kind.replace('_', ' ')} itself in this file "
                    f'instead ({kind} = "..."): it is moved off the card into a private file when the file is '
                    "applied"))

    if problems:
        order = {key: index for index, key in enumerate(data)}
        # Stable: keeps the checker's order. "residents[2].user_id" is in the file's residents.
        problems.sort(key=lambda p: order.get(re.split(r"[.\[]", p.field, maxsplit=1)[0], len(order)))
        raise ConfigError(problems, path)

    intercom: dict[str, Any] = {name: [dict(entry) for entry in table] if isinstance(table, list) else dict(table)
                                for name, table in intercom_data.items()}
    secrets = {}
    if "matrix" in intercom:
        for kind in MATRIX_SECRETS:
            if kind in intercom["matrix"]:
                secrets[kind] = intercom["matrix"].pop(kind)
                intercom["matrix"][f"{kind}_file"] = f"/{SECRETS_DIR}/{kind}"
    parse_config(intercom, path, check_files=False)  # what gets written must be valid too
    card_text = scrub_card_text(text, data, secrets=[*secrets.values(), wifi.password if wifi and wifi.password else ""])
    return Plan(intercom=intercom, secrets=secrets, wifi=wifi, system=system or System(), card_text=card_text)


# --- writing TOML ----------------------------------------------------------------------------------------------------


def _toml_value(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return toml(value)


def dump_toml(data: Mapping[str, Any], header: str = "") -> str:
    """TOML text for a document of flat sections (all the intercom's settings are plain values), and of arrays of
    flat tables (``[[residents]]``: a list of tables is written as one ``[[name]]`` entry each)."""
    out = io.StringIO()
    out.write(header)
    first = not header
    for section, tables in data.items():
        array = isinstance(tables, list)
        for table in tables if array else [tables]:
            out.write(("" if first else "\n") + (f"[[{section}]]\n" if array else f"[{section}]\n"))
            first = False
            for key, value in table.items():
                out.write(f"{key} = {_toml_value(value)}\n")
    return out.getvalue()


#: A [section] or [[array]] header; an [[array]]'s lines are not any section's.
_HEADER = re.compile(r"\s*\[(\[?)\s*([A-Za-z0-9_-]+)\s*\](\]?)\s*(?:#.*)?")
_KEY_LINE = re.compile(r"\s*([A-Za-z0-9_-]+)\s*=")

# What replaces each secret's line in the card's copy: the [matrix] credential becomes the *_file setting that
# points at the door's copy (so the copy can be applied again as it is); the Wi-Fi password becomes a comment (an
# applied [wifi] without a password keeps the door's stored one for the same network).
_SCRUBBED_LINE = {
    ("matrix", "password"): f'password_file = "/{SECRETS_DIR}/password"  # moved off the card into this file',
    ("matrix", "access_token"): (f'access_token_file = "/{SECRETS_DIR}/access_token"  '
                                 "# moved off the card into this file"),
    ("wifi", "password"): "# password: moved into the door's Wi-Fi settings; write it here again only to change it",
}
_CARD_HEADER = (
    "# Applied on the door. Every password and token was moved off the card into the door (see below).\n"
    f"# To change a setting: edit this file, save it as {CARD_NAME} on this card and start the door.\n"
)


def scrub_card_text(text: str, data: Mapping[str, Any], *, secrets: Iterable[str]) -> str:
    """The card's file without its secrets: each secret's line is replaced (see ``_SCRUBBED_LINE``) and the rest
    is kept as the user wrote it. When that is not possible (a secret written as a multi-line string, or repeated
    in a comment), the file is written anew from ``data`` without the secrets, comments lost."""
    secret_values = [value for value in secrets if value]
    section = None
    lines = []
    for line in text.splitlines():
        header = _HEADER.fullmatch(line)
        if header and header[1] == header[3]:
            section = f"[{header[2]}]" if header[1] else header[2]
        key = _KEY_LINE.match(line)
        if key and (section, key[1]) in _SCRUBBED_LINE:
            lines.append(_SCRUBBED_LINE[section, key[1]])
        else:
            lines.append(line)
    scrubbed = _CARD_HEADER + "\n".join(lines) + "\n"
    expected: dict[str, Any] = {}
    for name, table in data.items():
        if isinstance(table, list):  # [[residents]], [[buttons]]: no secrets in them
            expected[name] = table
        elif isinstance(table, dict):
            expected[name] = {}
            for key, value in table.items():
                if (name, key) not in _SCRUBBED_LINE:
                    expected[name][key] = value
                elif name == "matrix":
                    expected[name][f"{key}_file"] = f"/{SECRETS_DIR}/{key}"
    try:
        same = tomllib.loads(scrubbed) == expected and len(expected) == len(data)
    except tomllib.TOMLDecodeError:
        same = False
    if same and not any(secret in scrubbed for secret in secret_values):
        return scrubbed
    return dump_toml(expected, _CARD_HEADER + "# (rewritten without the original comments)\n\n")


# --- applying ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """Where and as whom the import writes: ``root`` is ``/`` on the door. ``service_uid``/``service_gid`` own
    the secret files (the service user); ``live`` also applies the host name and Wi-Fi country to the running
    system (only on the door itself)."""

    root: Path
    service_uid: int
    service_gid: int
    root_uid: int = 0
    root_gid: int = 0
    live: bool = False

    def path(self, relative: str) -> Path:
        return self.root / relative


def _keyfile_string(value: str) -> str:
    """A string value for a GKeyFile (NetworkManager keyfile): backslashes, spaces and control characters escaped."""
    return (value.replace("\\", "\\\\").replace(" ", "\\s").replace("\n", "\\n").replace("\t", "\\t")
            .replace("\r", "\\r"))


def nm_keyfile(wifi: Wifi) -> str:
    """The NetworkManager connection profile for the [wifi] section."""
    plain = all(char.isprintable() and char not in ";\\" for char in wifi.ssid) and wifi.ssid == wifi.ssid.strip()
    # A name with ; \ or odd spacing is written as its bytes ("65;66;"), which NetworkManager reads unambiguously.
    ssid = wifi.ssid if plain else "".join(f"{byte};" for byte in wifi.ssid.encode())
    lines = [
        "# Written by intercom-boot-config from intercom.toml on the SD card; replaced when a new one is applied.",
        "[connection]",
        f"id={NM_CONNECTION_ID}",
        f"uuid={uuid.uuid5(uuid.NAMESPACE_URL, 'intercom-wifi:' + wifi.ssid)}",
        "type=wifi",
        "autoconnect=true",
        "",
        "[wifi]",
        "mode=infrastructure",
        f"ssid={ssid}",
    ]
    if wifi.hidden:
        lines.append("hidden=true")
    if wifi.password is not None:
        lines += ["", "[wifi-security]", "key-mgmt=wpa-psk", f"psk={_keyfile_string(wifi.password)}"]
    lines += ["", "[ipv4]", "method=auto", "", "[ipv6]", "addr-gen-mode=default", "method=auto", ""]
    return "\n".join(lines)


def _stored_password(target: Target, wifi: Wifi) -> str | None:
    """The password in the door's current Wi-Fi profile if it is for the same network, else None."""
    try:
        current = target.path(NM_KEYFILE).read_text(encoding="utf-8")
    except OSError:
        return None
    ssid_line = next((line for line in nm_keyfile(wifi).splitlines() if line.startswith("ssid=")), None)
    if ssid_line not in current.splitlines():
        return None
    psk = next((line[4:] for line in current.splitlines() if line.startswith("psk=")), None)
    if psk is None:
        return None
    return re.sub(r"\\(.)", lambda m: {"s": " ", "n": "\n", "t": "\t", "r": "\r"}.get(m[1], m[1]), psk)


def _set_hosts_name(hosts: str, hostname: str) -> str:
    lines = [line for line in hosts.splitlines() if not line.startswith("127.0.1.1")]
    index = next((i + 1 for i, line in enumerate(lines) if line.startswith("127.0.0.1")), len(lines))
    lines.insert(index, f"127.0.1.1\t{hostname}")
    return "\n".join(lines) + "\n"


def apply_plan(plan: Plan, target: Target, log: TextIO) -> list[str]:
    """Write everything a checked card file asks for; returns what was done, one short phrase each."""
    done = []
    root_uid, root_gid = target.root_uid, target.root_gid
    make_dirs(target.path("etc/intercom"), 0o750, uid=root_uid, gid=target.service_gid)
    secrets_dir = target.path(SECRETS_DIR)
    if plan.secrets:  # first the secrets, so that the config is never ahead of the files it names
        make_dirs(secrets_dir, 0o700, uid=target.service_uid, gid=target.service_gid)
        for name, secret in plan.secrets.items():
            write_atomic(secrets_dir / name, secret + "\n", 0o600, uid=target.service_uid, gid=target.service_gid)
            done.append(f"{name} in /{SECRETS_DIR}/{name}")
    header = ("# Written by intercom-boot-config from intercom.toml on the SD card's boot partition. Edit that file\n"
              "# instead: this one is replaced whenever a new intercom.toml is applied.\n\n")
    write_atomic(target.path(CONFIG_PATH), dump_toml(plan.intercom, header), 0o640, uid=root_uid,
                 gid=target.service_gid)
    done.append(f"/{CONFIG_PATH}")
    if plan.secrets:  # a credential the new config no longer uses must not linger (the old config named it till now)
        for name in MATRIX_SECRETS:
            if name not in plan.secrets:
                remove_durably(secrets_dir / name)

    if plan.wifi is not None:
        wifi = plan.wifi
        if wifi.password is None:  # the card's applied copy has none: keep the stored one for the same network
            wifi = dataclasses.replace(wifi, password=_stored_password(target, wifi))
        write_atomic(target.path(NM_KEYFILE), nm_keyfile(wifi), 0o600, uid=root_uid, gid=root_gid)
        write_atomic(target.path(WIFI_COUNTRY_FILE), "# Written by intercom-boot-config: the Wi-Fi regulatory "
                     "domain from intercom.toml [wifi] country.\n"
                     f"options cfg80211 ieee80211_regdom={plan.wifi.country}\n", 0o644, uid=root_uid, gid=root_gid)
        done.append(f"Wi-Fi {plan.wifi.ssid!r} (country {plan.wifi.country})")
        if target.live:
            _run(["iw", "reg", "set", plan.wifi.country], log)
            _run(["rfkill", "unblock", "wlan"], log)
    if plan.system.hostname is not None:
        hostname = plan.system.hostname
        write_atomic(target.path("etc/hostname"), hostname + "\n", 0o644, uid=root_uid, gid=root_gid)
        hosts = target.path("etc/hosts")
        write_atomic(hosts, _set_hosts_name(hosts.read_text() if hosts.exists() else "127.0.0.1\tlocalhost\n",
                                            hostname), 0o644, uid=root_uid, gid=root_gid)
        if target.live:
            try:
                socket.sethostname(hostname)
            except OSError as err:
                print(f"intercom-boot-config: could not set the host name now ({err}); it applies at the next boot",
                      file=log)
        done.append(f"host name {hostname}")
    if plan.system.ssh_authorized_keys is not None:
        ssh_dir = target.path("root/.ssh")
        make_dirs(ssh_dir, 0o700, uid=root_uid, gid=root_gid)
        write_atomic(ssh_dir / "authorized_keys",
                     "# Written by intercom-boot-config from intercom.toml [system] ssh_authorized_keys.\n"
                     + "".join(key + "\n" for key in plan.system.ssh_authorized_keys), 0o600, uid=root_uid,
                     gid=root_gid)
        done.append(f"{len(plan.system.ssh_authorized_keys)} ssh key(s) for root")
    return done


def _run(command: list[str], log: TextIO) -> None:
    """Best effort, for the running system: a failure is reported, never fatal; a missing tool is skipped."""
    if shutil.which(command[0]) is None:
        return
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        print(f"intercom-boot-config: {' '.join(command)} did not work ({err}); it applies at the next boot",
              file=log)


# --- the whole import --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportResult:
    """``status`` is "applied", "rejected" or "absent" (no file on the card); ``problems`` for "rejected"."""

    status: str
    problems: tuple[ConfigProblem, ...] = ()
    done: tuple[str, ...] = ()


def _errors_report(problems: Iterable[ConfigProblem], previous: bool) -> str:
    keeps = ("The door keeps using the settings it had before." if previous else
             "The door has no settings yet, so the intercom stays off until this is fixed.")
    lines = [
        f"{CARD_NAME} on this card was NOT applied: it has the problems listed below. {keeps}",
        "",
        "Each line names the setting, says what is wrong and how to fix it:",
        "",
        *(f"  {CARD_NAME}: {problem}" for problem in problems),
        "",
        f"Fix them in {CARD_NAME} on this card, put the card back and start the door again; it checks the file at",
        "every start. (On the door itself, `intercom check-config FILE` checks the intercom's sections the same way.)",
        "",
    ]
    return "\r\n".join(lines)  # CRLF: the file is read on whatever PC the card is put into


def rejected_card_fault(path: Path | None = None) -> str | None:
    """The running door's side: while the card's rejected intercom.toml is unresolved, the fault to show (its
    first problem; the whole list is in the errors file on the card), else None."""
    path = path or Path(os.environ.get("INTERCOM_BOOT_CONFIG_ERRORS", "/" + ERRORS_MARKER))
    try:
        problems = path.read_text(errors="replace").strip()
    except OSError:
        return None
    return f"the SD card's {CARD_NAME} was rejected: {problems.splitlines()[0]}" if problems else None


async def watch_rejected_card(report: Callable[[str | None], None], *, every: float = 20.0) -> None:
    """Call ``report`` with :func:`rejected_card_fault` at once and whenever it changes (checked every ``every``
    seconds: the import runs at boot, before the door, and a fixed card is imported at the next boot)."""
    last: object = object()
    while True:
        fault = rejected_card_fault()
        if fault != last:
            if fault:
                logging.getLogger("intercom").error("%s (see %s on the card)", fault, ERRORS_NAME)
            report(fault)
            last = fault
        await asyncio.sleep(every)


def import_boot_config(card: Path, target: Target, log: TextIO = sys.stdout) -> ImportResult:
    """Check ``card/intercom.toml`` and apply it, or reject it and say why (see the module docstring).

    A power cut at any moment leaves every file on the door with its old or its new content, and the card's
    ``intercom.toml`` in place until all of the new settings are on the door's own file system: each file is
    written by :func:`~intercom.durable.write_atomic`, each removal is durable, and the card's file is the last
    thing removed. So the next boot (this runs before the intercom) applies the same file again and finishes."""
    card_file = card / CARD_NAME
    saved_as_txt = card / f"{CARD_NAME}.txt"  # Windows hides the extension it adds when saving from Notepad
    if not card_file.exists() and saved_as_txt.exists():
        rename_durably(saved_as_txt, card_file)
        print(f"intercom-boot-config: renamed {saved_as_txt.name} to {CARD_NAME}", file=log)
    if not card_file.exists():
        return ImportResult("absent")
    raw = card_file.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):  # a byte-order mark, as some Windows editors write: not valid TOML
        write_atomic(card_file, raw[3:], 0o644)
    errors_file, marker = card / ERRORS_NAME, target.path(ERRORS_MARKER)
    try:
        data = read_config_file(str(card_file))
        text = card_file.read_text(encoding="utf-8")
        plan = check_card_config(data, text, root=target.root)
    except ConfigError as err:
        problems = tuple(err.problems)
        previous = target.path(CONFIG_PATH).exists()
        for problem in problems:
            print(f"<3>intercom-boot-config: {CARD_NAME}: {problem}", file=log)
        print(f"<3>intercom-boot-config: {CARD_NAME} NOT applied ({len(problems)} problem"
              f"{'s' if len(problems) != 1 else ''}); "
              + ("the door keeps its previous settings" if previous else "the door has no settings yet")
              + f"; the problems are also in {ERRORS_NAME} on the card", file=log)
        write_atomic(errors_file, _errors_report(problems, previous), 0o644)
        write_atomic(marker, "".join(f"{problem}\n" for problem in problems), 0o644, uid=target.root_uid,
                     gid=target.root_gid)
        return ImportResult("rejected", problems)

    done = apply_plan(plan, target, log)
    # Only now that the door has everything, durably: the scrubbed copy onto the card, then the card's file goes,
    # last of all (while it is there, the next boot applies it again).
    write_atomic(card / APPLIED_NAME, plan.card_text, 0o644)
    remove_durably(errors_file)
    remove_durably(marker)
    remove_durably(card_file)
    print(f"intercom-boot-config: applied {CARD_NAME}: {', '.join(done)}; the card's copy is now {APPLIED_NAME} "
          "without secrets", file=log)
    return ImportResult("applied", done=tuple(done))


def _service_ids(root: Path, user: str) -> tuple[int, int]:
    """The service user's uid and gid, from the target root's /etc/passwd (the door's, or an image's)."""
    try:
        for line in (root / "etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if len(fields) >= 4 and fields[0] == user:
                return int(fields[2]), int(fields[3])
    except OSError:
        pass
    raise SystemExit(f"intercom-boot-config: there is no user {user!r} in {root / 'etc/passwd'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m intercom.service.bootconfig",
        description=f"Apply {CARD_NAME} from the SD card's boot partition (run at boot by intercom-boot-config."
                    "service), or just check a file with --check.")
    parser.add_argument("--card", default="/boot/firmware", help="the mounted boot partition (default: %(default)s)")
    parser.add_argument("--root", default="/", help="the root file system to configure (default: %(default)s)")
    parser.add_argument("--user", default=SERVICE_USER, help="the service user (default: %(default)s)")
    parser.add_argument("--check", metavar="FILE", help="only check FILE the way the import would; change nothing")
    args = parser.parse_args(argv)
    root = Path(args.root)
    if args.check:
        try:
            data = read_config_file(args.check)
            check_card_config(data, Path(args.check).read_text(encoding="utf-8"), root=root, path=args.check)
        except ConfigError as err:
            for problem in err.problems:
                print(f"{args.check}: {problem}")
            return 1
        print(f"{args.check}: OK")
        return 0
    uid, gid = _service_ids(root, args.user)
    target = Target(root=root, service_uid=uid, service_gid=gid, live=root.resolve() == Path("/"))
    result = import_boot_config(Path(args.card), target)
    if result.status == "absent":
        print(f"intercom-boot-config: no {CARD_NAME} in {args.card}; nothing to do")
    return 1 if result.status == "rejected" else 0


if __name__ == "__main__":
    sys.exit(main())
