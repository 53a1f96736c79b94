"""The Matrix side of trust: reading and checking the owner's keys, naming the device behind an encrypted event,
withholding room keys from every device the door does not trust, and keeping the pins.

The rules (what to trust) are the core's (:mod:`intercom.core.trust`); this module only checks signatures and
carries out :class:`~intercom.core.TrustUpdated`.

- **Keys.** matrix-nio ignores cross-signing, so the door asks ``/keys/query`` itself and checks every signature
  with vodozemac: each device's self-signature, the self-signing key's signature by the master key, each device's
  signature by the self-signing key (then the device is *signed*), and device signatures on the master key. A
  device whose self-signature fails is left out (a server cannot add a device in someone else's name).
- **Who sent an encrypted event.** An event's content names a device, but anyone can write that. The Megolm
  session that decrypted it was received over Olm from a Curve25519 key and claims an Ed25519 key; the door takes
  the device of the owner whose verified keys are exactly those two, and no device when the session was forwarded
  (keys passed on by someone else prove nothing about who wrote the event).
- **Keys only to trusted devices.** nio's ``ignore_unverified_devices=True`` still shares room keys with every
  device. The door marks the owner's trusted devices verified and blacklists every other device of every member,
  sends with ``ignore_unverified_devices=False`` (a device nio has not seen yet makes the send fail, it is
  blacklisted and the send retried), and starts a new Megolm session whenever the set of devices changes.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Mapping
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


def load_pins(state_dir: Path) -> Pins | None:
    """The pins kept in the state directory, or None at first use. A damaged file is kept aside (never silently
    replaced by a fresh first use that could pin someone else's device) and its problem reported as an identity
    problem, which only ``intercom trust --identity`` on the door clears."""
    path = state_dir / TRUST_FILE
    try:
        return Pins.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        aside = path.with_name(path.name + ".damaged")
        log.error("Matrix: the trust file %s cannot be read (%s); kept as %s", path, exc, aside.name)
        try:
            rename_durably(path, aside)
        except OSError:
            pass
        return Pins(identity_problem="the door's record of the owner's keys was damaged")


def save_pins(state_dir: Path, pins: Pins) -> None:
    """Write the pins atomically and durably, readable by the door's user only."""
    write_private_json(state_dir / TRUST_FILE, pins.to_json())


class OwnerTrust:
    """The owner's keys as last read, and the nio device flags that follow the core's verdict."""

    def __init__(self, state_dir: Path, owner: str, *, timeout: float) -> None:
        self._state_dir = state_dir
        self.owner = owner
        self._timeout = timeout
        #: The owner's devices whose keys were checked: device ID → (Ed25519, Curve25519).
        self._devices: dict[str, tuple[str, str]] = {}
        self._key_holders: frozenset[str] = frozenset()
        self._applied = False
        #: Set when the owner's keys must be read again (device list changed, an unknown sender key).
        self.stale = True

    def load(self) -> Pins | None:
        return load_pins(self._state_dir)

    async def read(self, client: Any) -> ObservedKeys | None:
        """Ask the homeserver for the owner's keys and check them; None (logged) when it could not be asked."""
        try:
            status, body = await request_json(client, "POST", "/_matrix/client/v3/keys/query",
                                              body={"device_keys": {self.owner: []}, "timeout": 10_000},
                                              timeout=self._timeout)
        except TRANSIENT_EXCEPTIONS as exc:
            log.warning("Matrix: could not read the owner's keys (will retry): %s", Failure.of(exc))
            return None
        if status != 200 or not isinstance(body, Mapping):
            log.warning("Matrix: could not read the owner's keys (HTTP %s; will retry)", status)
            return None
        observed, self._devices = read_keys(body, self.owner)
        self.stale = False
        return observed

    def sender_device(self, client: Any, room_id: str, event: Any) -> str | None:
        """The owner's device that encrypted ``event`` (a decrypted nio event), or None when no checked device
        of the owner matches the keys of the Megolm session behind it."""
        sender_key, session_id = getattr(event, "sender_key", None), getattr(event, "session_id", None)
        if getattr(event, "sender", None) != self.owner or not sender_key or not session_id:
            return None
        olm = getattr(client, "olm", None)
        session = olm.inbound_group_store.get(room_id, sender_key, session_id) if olm is not None else None
        if session is None or session.forwarding_chain:
            return None
        for device_id, (ed, curve) in self._devices.items():
            if curve == sender_key and ed == session.ed25519:
                return device_id
        self.stale = True  # perhaps a device we have not read yet: read the keys again after this sync
        return None

    def apply(self, client: Any, room_id: str, update: TrustUpdated) -> None:
        """Keep the pins and make nio share room keys with the key holders only."""
        try:
            save_pins(self._state_dir, update.pins)
        except OSError as exc:  # the door still acts on the verdict; the pins are written again next time
            log.error("Matrix: could not save the trust pins: %s", exc)
        changed = update.key_holders != self._key_holders or not self._applied
        self._key_holders, self._applied = update.key_holders, True
        self.classify(client, room_id)
        if changed:
            with contextlib.suppress(Exception):  # no session yet
                client.invalidate_outbound_session(room_id)
            log.info("Matrix: room keys go to the owner's sessions %s (%s)",
                     ", ".join(sorted(update.key_holders)) or "none", update.reason)

    def classify(self, client: Any, room_id: str) -> None:
        """Mark every device nio knows so that ``room_send`` shares the door's room keys with the owner's key
        holders only: those (with the keys we checked) verified; every other device of anyone in the door's room
        (the owner's other sessions, the door's own, a third member's) blacklisted.

        nio's marks are per device, not per room. Devices of people who are not in the door's room are marked
        ignored: they get keys only for the rooms they share with the door, where the door sends nothing but
        refusals (a stranger's phone must be able to read the ``m.call.reject`` that stops it ringing). Whoever
        joins the door's room is blacklisted by the next call, which runs after every sync, before anything is
        sent."""
        store = getattr(client, "device_store", None)
        if store is None:
            return
        room = getattr(client, "rooms", {}).get(room_id)
        in_room = set(room.users) if room is not None else set()
        for user_id in list(store.users):
            for device in list(store.active_user_devices(user_id)):
                holder = (user_id == self.owner and device.id in self._key_holders
                          and self._devices.get(device.id) == (device.ed25519, device.curve25519))
                mark = "verified" if holder else ("blacklisted" if user_id in in_room or user_id == self.owner
                                                  else "ignored")
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
