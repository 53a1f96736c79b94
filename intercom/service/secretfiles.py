"""Secret files (the door's password or access token): checked when the config is, read only when needed.

A secret file must exist, be a regular file and be private to the service's user; its first line is the secret.
The secret is read only when the service asks for the credential, so it never sits in a ``Config``.
"""

from __future__ import annotations

import os
import stat

from .checks import ConfigError, ConfigProblem


def secret_file_problem(path: str) -> str | None:
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
        empty = not read_first_line(path)
    except OSError:
        return None  # owned by another user (the service's): fine, and its content is none of our business
    return f"{path} is empty; put the secret on its first line" if empty else None


def read_first_line(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as file:
        return file.readline().strip()


def read_secret_file(path: str, setting: str) -> str:
    try:
        secret = read_first_line(path)
    except OSError as err:
        fix = f"make it readable by the user the service runs as (chown that user {path}; chmod 600 {path})"
        raise ConfigError([ConfigProblem(setting, f"cannot read {path}: {err.strerror}; {fix}")]) from None
    if not secret:
        raise ConfigError([ConfigProblem(setting, f"{path} is empty; put the secret on its first line")])
    return secret
