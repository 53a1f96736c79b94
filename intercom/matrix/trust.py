"""The Matrix side of trust: reading and checking the residents' keys, naming the device behind an encrypted
event, withholding room keys from every device the door does not trust, and keeping the pins.

The rules (what to trust) are the core's (:mod:`intercom.core.trust`); this module only checks signatures and
carries out :class:`~intercom.core.TrustUpdated`, for each resident of the household separately.

- **Keys.** matrix-nio ignores cross-signing, so the door asks ``/keys/query`` itself (one request for all the
  residents whose keys may have changed) and checks every signature with vodozemac: each device's self-signature,
  the self-signing key's signature by the master key, each device's signature by the self-signing key (then the
  device is *signed*), and device signatures on the master key. A device whose self-signature fails is left out
  (a server cannot add a device in someone else's name).
- **Who sent an encrypted event.** An event's content names a device, but anyone can write that. The Megolm
  session that decrypted it was received over Olm from a Curve25519 key and claims an Ed25519 key; the door takes
  the device of the sending resident whose verified keys are exactly those two, and no device when the session
  was forwarded (keys passed on by someone else prove nothing about who wrote the event).
- **Keys only to trusted devices.** nio's ``ignore_unverified_devices=True`` still shares room keys with every
  device. The door marks the residents' trusted devices verified and blacklists every other device of every
  resident and of everyone in a resident's room, sends with ``ignore_unverified_devices=False`` (a device nio has
  not seen yet makes the send fail, it is blacklisted and the send retried), and starts a new Megolm session in a
  resident's room whenever the set of that resident's trusted devices changes.
- **Pins** (:func:`load_household_pins`, :func:`save_pins`): ``trust.json`` keeps the first resident's, as it
  kept the owner's before households; every other resident's are in ``trust-<16 hex of the SHA-256 of their user
  ID>.json``. Each file names whose pins it holds (``user_id``), so a change in the order of the residents never
  gives one resident another's pins; a ``trust.json`` without ``user_id`` (written before households) is the first
  resident's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import vodozemac

from intercom.core import ObservedKeys, Pins, TrustUpdated
from intercom.core.trust import DeviceKeys
from intercom.durable import rename_durably

from .retry import TRANSIENT_EXCEPTIONS, Failure, request_json
from .session import write_private_json

log = logging.getLogger(__name__)

TRUST_FILE = "trust.json"
#: The identity problem of a damaged pins file.
DAMAGED = "the door's record of the resident's keys was damaged"
#: Longest device display name kept (it is shown in notices).
NAME_LIMIT = 80


def canonical_json(obj: Any) -> bytes:
    """The spec's canonical JSON: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def signed_by(obj: Mapping[str, Any], user_id: str, key_id: str, public_key: str) -> bool:
    """Whether ``obj`` carries a valid signature of ``user_id``'s Ed25519 key ``key_id`` (``ed25519:ID``)."""
    try:
        signature = obj["signatures"][user_id][key_id]
        unsigned = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
        vodozemac.Ed25519PublicKey.from_base64(public_key).verify_signature(
            canonical_json(unsigned), vodozemac.Ed25519Signature.from_base64(signature))
        return True
    except Exception:  # a missing field, bad base64, a bad signature: vodozemac raises its own types for each
        return False


def _single_key(entry: Any, user_id: str, usage: str) -> str | None:
    """The one Ed25519 key of a cross-signing key entry of ``user_id`` for ``usage``, or None."""
    if not isinstance(entry, Mapping) or entry.get("user_id") != user_id:
        return None
    if not isinstance(entry.get("usage"), list) or usage not in entry["usage"]:
        return None
    keys = entry.get("keys")
    if not isinstance(keys, Mapping) or len(keys) != 1:
        return None
    (key_id, key), = keys.items()
    if not isinstance(key, str) or key_id != f"ed25519:{key}":
        return None
    return key


def read_keys(body: Any, user_id: str) -> tuple[ObservedKeys, dict[str, tuple[str, str]]]:
    """What a ``/keys/query`` answer says about ``user_id``, every signature checked: the observed keys for the
    core, and device ID → (Ed25519, Curve25519) of each device whose self-signature holds."""
    body = body if isinstance(body, Mapping) else {}

    def section(name: str) -> Any:
        part = body.get(name)
        return part.get(user_id) if isinstance(part, Mapping) else None

    master_entry = section("master_keys")
    master = _single_key(master_entry, user_id, "master")
    ssk_entry = section("self_signing_keys")
    ssk = _single_key(ssk_entry, user_id, "self_signing")
    if ssk is not None and (master is None or not signed_by(ssk_entry, user_id, f"ed25519:{master}", master)):
        log.warning("Matrix: %s's self-signing key is not signed by their master key; ignoring it", user_id)
        ssk = None
    devices: list[DeviceKeys] = []
    verified: dict[str, tuple[str, str]] = {}
    master_signed_by: set[str] = set()
    entries = section("device_keys")
    for device_id, entry in sorted(entries.items()) if isinstance(entries, Mapping) else ():
        if not isinstance(entry, Mapping) or entry.get("user_id") != user_id or entry.get("device_id") != device_id:
            continue
        keys = entry.get("keys") if isinstance(entry.get("keys"), Mapping) else {}
        ed, curve = keys.get(f"ed25519:{device_id}"), keys.get(f"curve25519:{device_id}")
        if not isinstance(ed, str) or not isinstance(curve, str):
            continue
        if not signed_by(entry, user_id, f"ed25519:{device_id}", ed):
            log.warning("Matrix: ignoring device %s of %s: its keys are not signed by itself", device_id, user_id)
            continue
        unsigned = entry.get("unsigned") if isinstance(entry.get("unsigned"), Mapping) else {}
        name = unsigned.get("device_display_name")
        signed = ssk is not None and signed_by(entry, user_id, f"ed25519:{ssk}", ssk)
        devices.append(DeviceKeys(device_id=device_id, ed25519=ed, signed=signed,
                                  name=name[:NAME_LIMIT] if isinstance(name, str) else ""))
        verified[device_id] = (ed, curve)
        if master is not None and signed_by(master_entry, user_id, f"ed25519:{device_id}", ed):
            master_signed_by.add(device_id)
    return ObservedKeys(master_key=master, devices=tuple(devices),
                        master_signed_by=frozenset(master_signed_by)), verified


def pins_file(state_dir: Path, user_id: str) -> Path:
    """Where the pins of a resident are kept when they are not in ``trust.json``: ``trust-<16 hex>.json``, the
    start of the SHA-256 of the user ID (a user ID may hold characters a file name must not)."""
    return Path(state_dir) / f"trust-{hashlib.sha256(user_id.encode()).hexdigest()[:16]}.json"


def _damaged(path: Path, exc: BaseException) -> Pins:
    aside = path.with_name(path.name + ".damaged")
    log.error("Matrix: the trust file %s cannot be read (%s); kept as %s", path, exc, aside.name)
    try:
        rename_durably(path, aside)
    except OSError:
        pass
    return Pins(identity_problem=DAMAGED)


def _read_pins(path: Path) -> tuple[str | None, Pins]:
    """The owner named in a pins file (None: a file written before households, which named nobody) and its pins.
    Raises FileNotFoundError, or OSError/ValueError for a damaged file."""
    data = json.loads(path.read_text())
    pins = Pins.from_json(data)
    user_id = data.get("user_id")
    if user_id is not None and (not isinstance(user_id, str) or not user_id):
        raise ValueError("user_id is not a user ID")
    return user_id, pins


def load_pins(state_dir: Path) -> Pins | None:
    """The pins in ``trust.json`` (whoever they belong to), or None at first use. A damaged file is kept aside
    (never silently replaced by a fresh first use that could pin someone else's device) and its problem reported
    as an identity problem, which only ``intercom trust --identity`` on the door clears."""
    path = Path(state_dir) / TRUST_FILE
    try:
        return _read_pins(path)[1]
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return _damaged(path, exc)


def load_household_pins(state_dir: Path, residents: Sequence[str]) -> dict[str, Pins | None]:
    """What the door pinned of each resident's keys: user ID → pins, or None for a resident never seen (first use).

    A resident's pins are in their own file (:func:`pins_file`) or in ``trust.json``: that file is the pins of the
    user it names, and a ``trust.json`` that names nobody (written before households) is the first resident's (a
    household of one was the only configuration then). A damaged file is kept aside (``.damaged``) and is an
    identity problem for the resident it would be: a resident's own file for that resident; ``trust.json``, which
    may have been anyone's, for the first resident who has no file of their own (the one whose pins it held unless
    the order of the residents changed since). A resident's own file that names someone else counts as damaged.
    """
    state_dir = Path(state_dir)
    result: dict[str, Pins | None] = {}
    legacy_path = state_dir / TRUST_FILE
    legacy: tuple[str | None, Pins] | None = None
    legacy_damaged: Pins | None = None
    try:
        legacy = _read_pins(legacy_path)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        legacy_damaged = _damaged(legacy_path, exc)
    for index, user_id in enumerate(residents):
        own = pins_file(state_dir, user_id)
        try:
            named, pins = _read_pins(own)
            if named != user_id:
                raise ValueError(f"it holds the pins of {str(named)[:255]}")
            result[user_id] = pins
            continue
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            result[user_id] = _damaged(own, exc)
            continue
        if legacy is not None and (legacy[0] == user_id or (legacy[0] is None and index == 0)):
            result[user_id] = legacy[1]
        elif legacy_damaged is not None:
            result[user_id], legacy_damaged = legacy_damaged, None
        else:
            result[user_id] = None
    return result


def save_pins(state_dir: Path, pins: Pins, user_id: str = "", *, first: bool = True) -> Path:
    """Write a resident's pins atomically and durably, readable by the door's user only, naming their owner.

    They go where they are kept already: the resident's own file if there is one, else ``trust.json`` when it
    holds their pins, names nobody and they are the first resident (``first``), or is free while they are; else
    their own file. So no one's pins are ever overwritten by another's. Returns the file written."""
    state_dir = Path(state_dir)
    data = pins.to_json()
    if user_id:
        data["user_id"] = user_id
    path = state_dir / TRUST_FILE
    if user_id:
        own = pins_file(state_dir, user_id)
        try:
            named: str | None = _read_pins(path)[0]
            free = False
        except FileNotFoundError:
            named, free = None, True
        except (OSError, ValueError):
            named, free = None, False  # damaged: kept for load_household_pins to set aside
        if own.exists() or not (named == user_id or (first and (free or named is None))):
            path = own
    write_private_json(path, data)
    return path


class HouseholdTrust:
    """The residents' keys as last read, and the nio device flags that follow the core's verdicts.

    ``residents`` in the config's order (the first is the one an update without ``user_id`` is about)."""

    def __init__(self, state_dir: Path, residents: Sequence[str], *, timeout: float) -> None:
        if not residents:
            raise ValueError("trust needs at least one resident")
        self._state_dir = Path(state_dir)
        self.residents = tuple(residents)
        self._timeout = timeout
        #: Each resident's devices whose keys were checked: device ID → (Ed25519, Curve25519).
        self._devices: dict[str, dict[str, tuple[str, str]]] = {user: {} for user in self.residents}
        self._key_holders: dict[str, frozenset[str]] = {user: frozenset() for user in self.residents}
        self._applied: set[str] = set()
        #: Residents whose keys must be read again (device list changed, an unknown sender key, first start).
        self._stale: set[str] = set(self.residents)

    @property
    def owner(self) -> str:
        """The first resident."""
        return self.residents[0]

    @property
    def stale(self) -> bool:
        return bool(self._stale)

    def mark_stale(self, *user_ids: str) -> None:
        """Read these residents' keys again after this sync (residents only; anyone else is ignored)."""
        self._stale.update(u for u in user_ids if u in self._devices)

    def load(self) -> dict[str, Pins | None]:
        """The pins of every resident (:func:`load_household_pins`)."""
        return load_household_pins(self._state_dir, self.residents)

    async def read(self, client: Any) -> dict[str, ObservedKeys]:
        """Ask the homeserver for the keys of every resident whose keys may have changed (one request), check
        them, and return them by user ID; {} (logged, and asked again after the next sync) when it could not be
        asked."""
        users = sorted(self._stale)
        if not users:
            return {}
        for attempt in (1, 2):  # a second time at once: a pooled connection the server closed fails the first
            try:
                status, body = await request_json(client, "POST", "/_matrix/client/v3/keys/query",
                                                  body={"device_keys": {user: [] for user in users},
                                                        "timeout": 10_000}, timeout=self._timeout)
                break
            except TRANSIENT_EXCEPTIONS as exc:
                if attempt == 2:
                    log.warning("Matrix: could not read the residents' keys (will retry after the next sync): %s",
                                Failure.of(exc))
                    return {}
        if status != 200 or not isinstance(body, Mapping):
            log.warning("Matrix: could not read the residents' keys (HTTP %s; will retry)", status)
            return {}
        failures = body.get("failures")
        observed: dict[str, ObservedKeys] = {}
        for user in [u for u in self.residents if u in users]:  # in the household's order
            observed[user], self._devices[user] = read_keys(body, user)
        self._stale.clear()
        if isinstance(failures, Mapping) and failures:
            log.warning("Matrix: the homeserver could not ask %s for keys: %s", ", ".join(sorted(map(str, failures))),
                        str(dict(failures))[:300])
        return observed

    def key_holders(self, user_id: str) -> frozenset[str]:
        """The resident's devices that get the door's keys (room keys, MatrixRTC media keys)."""
        return self._key_holders.get(user_id, frozenset())

    def olm_sender_device(self, sender: str, sender_key: str, ed25519: Any) -> str | None:
        """The resident's device behind an Olm message from ``sender_key`` that claims ``ed25519``, among the
        devices whose keys the door read and checked; None when none matches both keys."""
        for device_id, (ed, curve) in (self._devices.get(sender) or {}).items():
            if curve == sender_key and ed == ed25519:
                return device_id
        return None

    def sender_device(self, client: Any, room_id: str, event: Any) -> str | None:
        """The resident's device that encrypted ``event`` (a decrypted nio event), or None when the sender is not a
        resident or no checked device of theirs matches the keys of the Megolm session behind it."""
        sender = getattr(event, "sender", None)
        sender_key, session_id = getattr(event, "sender_key", None), getattr(event, "session_id", None)
        devices = self._devices.get(sender) if isinstance(sender, str) else None
        if devices is None or not sender_key or not session_id:
            return None
        olm = getattr(client, "olm", None)
        session = olm.inbound_group_store.get(room_id, sender_key, session_id) if olm is not None else None
        if session is None or session.forwarding_chain:
            return None
        for device_id, (ed, curve) in devices.items():
            if curve == sender_key and ed == session.ed25519:
                return device_id
        self._stale.add(sender)  # perhaps a device we have not read yet: read their keys again after this sync
        return None

    def apply(self, client: Any, update: TrustUpdated, rooms: Mapping[str, str | None]) -> None:
        """Keep the pins of the resident the update is about (``update.user_id``, empty: the first), and make nio
        share room keys with the key holders of every resident only. ``rooms``: each resident's room (None: none
        yet); the room of this resident gets a new Megolm session when their key holders changed."""
        user = update.user_id or self.owner
        if user not in self._devices:
            log.warning("Matrix: ignoring a trust update about %s, who is not a resident", user[:255])
            return
        try:
            save_pins(self._state_dir, update.pins, user, first=user == self.owner)
        except OSError as exc:  # the door still acts on the verdict; the pins are written again next time
            log.error("Matrix: could not save the trust pins of %s: %s", user, exc)
        changed = update.key_holders != self._key_holders[user] or user not in self._applied
        self._key_holders[user] = update.key_holders
        self._applied.add(user)
        self.classify(client, [room for room in rooms.values() if room])
        room_id = rooms.get(user)
        if changed:
            if room_id:
                with contextlib.suppress(Exception):  # no session yet
                    client.invalidate_outbound_session(room_id)
            log.info("Matrix: room keys go to %s's sessions %s (%s)", user,
                     ", ".join(sorted(update.key_holders)) or "none", update.reason)

    def classify(self, client: Any, rooms: Iterable[str]) -> None:
        """Mark every device nio knows so that ``room_send`` shares the door's room keys with the residents' key
        holders only: those (with the keys we checked) verified; every other device of a resident, or of anyone in
        a resident's room (a resident's other sessions, the door's own, a third member's), blacklisted.

        nio's marks are per device, not per room, so a resident's key holder would also get the keys of another
        resident's room if they were in it (then a third member there, and the core refuses calls in it). Devices
        of people who are in no resident's room are marked ignored: they get keys only for the rooms they share
        with the door, where the door sends nothing but refusals (a stranger's phone must be able to read the
        ``m.call.reject`` that stops it ringing). Whoever joins a resident's room is blacklisted by the next call,
        which runs after every sync, before anything is sent."""
        store = getattr(client, "device_store", None)
        if store is None:
            return
        known = getattr(client, "rooms", {})
        in_rooms: set[str] = set(self._devices)
        for room_id in rooms:
            room = known.get(room_id)
            if room is not None:
                in_rooms.update(room.users)
        for user_id in list(store.users):
            devices = self._devices.get(user_id, {})
            holders = self._key_holders.get(user_id, frozenset())
            for device in list(store.active_user_devices(user_id)):
                holder = device.id in holders and devices.get(device.id) == (device.ed25519, device.curve25519)
                mark = "verified" if holder else ("blacklisted" if user_id in in_rooms else "ignored")
                with contextlib.suppress(Exception):  # nio raises for a device it dropped meanwhile
                    _mark(client, device, mark)


def _mark(client: Any, device: Any, mark: str) -> None:
    """Give ``device`` exactly one of nio's marks (verified, blacklisted, ignored), clearing the others."""
    olm = client.olm
    if mark != "verified" and olm.is_device_verified(device):
        client.unverify_device(device)
    if mark != "blacklisted" and olm.is_device_blacklisted(device):
        client.unblacklist_device(device)
    if mark != "ignored" and olm.is_device_ignored(device):
        client.unignore_device(device)
    if mark == "verified" and not olm.is_device_verified(device):
        client.verify_device(device)
    elif mark == "blacklisted" and not olm.is_device_blacklisted(device):
        client.blacklist_device(device)
    elif mark == "ignored" and not olm.is_device_ignored(device):
        client.ignore_device(device)
