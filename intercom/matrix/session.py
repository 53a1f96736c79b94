"""The door's login session on disk: who it is on the homeserver, so that a restart is the same device.

Layout of the state directory (created ``0700``; every file in it ``0600``)::

    <state_dir>/session.json          homeserver, user_id, device_id, access_token
    <state_dir>/crypto/               matrix-nio's E2EE store (Olm account, Megolm sessions, sync token)
    <state_dir>/crypto.key            the random key the store's secrets are pickled with (kept outside it)
    <state_dir>/trust.json            the first resident's pins (intercom.matrix.trust)
    <state_dir>/trust-<hex>.json      each other resident's pins
    <state_dir>/rooms.json            the residents' rooms the config does not name (intercom.matrix.rooms)

Keeping the device ID and the crypto store together matters: a new device ID would be a new, unknown device to
the owner's clients, with new keys, and encrypted rooms would stop working until it was trusted again.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from intercom.durable import make_dirs, remove_durably, write_atomic

log = logging.getLogger(__name__)

SESSION_FILE = "session.json"
CRYPTO_DIR = "crypto"
CRYPTO_KEY_FILE = "crypto.key"
NIO_DEFAULT_PICKLE_KEY = "DEFAULT_KEY"  # matrix-nio's own constant, for stores made before the door had a key


@dataclass(frozen=True, slots=True)
class Session:
    """A login the homeserver gave us. ``repr`` hides the token."""

    homeserver: str
    user_id: str
    device_id: str
    access_token: str

    def __repr__(self) -> str:
        return f"Session(homeserver={self.homeserver!r}, user_id={self.user_id!r}, device_id={self.device_id!r})"


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed, durably, and make it ``0700``; return it."""
    make_dirs(path, 0o700)
    return path


def crypto_dir(state_dir: Path) -> Path:
    """Where nio keeps its E2EE store; created private before login, as nio needs it to exist."""
    return private_dir(private_dir(state_dir) / CRYPTO_DIR)


def crypto_key(state_dir: Path) -> str:
    """The key nio pickles the Olm account and sessions with: random, made once, 0600, beside the store (so a
    copy of the store alone reveals no keys).

    A store made before the door kept a key was pickled with nio's constant default; it keeps working with that
    key (a new key would make the door a new device that every phone must trust again), and a warning says how
    to move to a random key."""
    path = state_dir / CRYPTO_KEY_FILE
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        key = ""
    if key:
        return key
    store = state_dir / CRYPTO_DIR
    if store.is_dir() and any(store.glob("*.db")):
        log.warning("Matrix: the door's E2EE store (%s) is protected only by matrix-nio's constant default key. "
                    "To give it a random key: stop the door, remove %s and %s, and start it again (it logs in as "
                    "a new device, which your phones must trust again)", store, store, state_dir / SESSION_FILE)
        return NIO_DEFAULT_PICKLE_KEY
    key = secrets.token_urlsafe(32)
    private_dir(state_dir)
    write_atomic(path, key + "\n", 0o600)  # on the card before the store is pickled with it
    return key


def make_private(state_dir: Path) -> None:
    """Set every file below ``state_dir`` to ``0600`` (nio's SQLite store is created with the process umask)."""
    for root, _dirs, files in os.walk(state_dir):
        for name in files:
            file = Path(root) / name
            try:
                if stat.S_IMODE(file.stat().st_mode) != 0o600:
                    file.chmod(0o600)
            except FileNotFoundError:  # SQLite journal files come and go
                pass


def load_session(state_dir: Path) -> Session | None:
    """The saved session, or None when there is none (or it cannot be used: then we log in again)."""
    path = state_dir / SESSION_FILE
    try:
        data = json.loads(path.read_text())
        session = Session(**{k: data[k] for k in ("homeserver", "user_id", "device_id", "access_token")})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("Ignoring the saved Matrix session in %s: %s", path, exc)
        return None
    if not all(isinstance(v, str) and v for v in asdict(session).values()):
        log.warning("Ignoring the saved Matrix session in %s: a field is empty", path)
        return None
    return session


def save_session(state_dir: Path, session: Session) -> None:
    """Write the session atomically, readable by its owner only."""
    write_private_json(state_dir / SESSION_FILE, asdict(session))


def write_private_json(path: Path, data: object) -> None:
    """Write ``data`` as JSON to ``path`` in the private state directory: atomically and durably, mode 0600
    (see :mod:`intercom.durable`)."""
    private_dir(path.parent)
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n", 0o600)


def forget_session(state_dir: Path) -> None:
    """Remove the saved session (its token was refused); the crypto store of that device is kept."""
    remove_durably(state_dir / SESSION_FILE)
