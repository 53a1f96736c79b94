"""Which of the owner's devices the door trusts: pure rules over keys the Matrix side has already checked.

The door has a camera on a front door and a relay on its lock, so "a message from the owner's account" is not
enough: whoever holds a new session of that account (a stolen password, the homeserver's admin) could otherwise
make the door answer or open. In an encrypted room an event counts as the owner's only when it was encrypted by a
device of the owner that the door trusts, and the room keys go only to those devices.

Trust on first use, pinned in the door's state directory (:class:`Pins`):

- **The owner has cross-signing** (a master key): the first master key seen is pinned. A device is trusted when
  the owner signed it (the Matrix side checked the chain master → self-signing → device) or the owner confirmed
  it on the door or from a trusted device. A new unsigned device is not trusted until the owner verifies it from
  another session (which signs it) or confirms it.
- **No cross-signing**: the owner's devices at first use are pinned by their Ed25519 keys; every later device
  needs the owner's confirmation. When the owner sets up cross-signing later, its master key is adopted when a
  pinned device signed it; otherwise the pinned devices keep working and the new identity waits for
  ``intercom trust --identity`` on the door.
- **A changed identity** (another master key, the master key gone, or a pinned device whose keys changed: device
  keys never change in Matrix, so that is a forgery or a reset) stops all trust until the owner confirms it on
  the door itself (``intercom trust --identity``): nothing a session of the account says can undo it, since such a
  session is exactly what may be hostile.

:func:`assess` is the whole rule; the Matrix adapter feeds it what it observed (:class:`ObservedKeys`) and the
core acts on the :class:`Verdict`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Device IDs the door accepts in ``!trust`` and ``intercom trust``: what servers hand out (letters, digits, a few
#: marks), bounded so a hostile name cannot flood a notice or the pins file.
DEVICE_ID = re.compile(r"[A-Za-z0-9._=+/-]{1,64}")
#: How many devices the pins keep (an account with more is hostile or broken; the oldest fall out).
MAX_PINNED = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceKeys:
    """One device of the owner, as the Matrix side read and checked it (its self-signature verified).

    ``signed``: the owner's cross-signing identity signed it (the chain to the master key verified).
    """

    device_id: str
    ed25519: str
    name: str = ""
    signed: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservedKeys:
    """The owner's keys as the homeserver gave them this time. ``master_key`` None: no cross-signing identity.
    ``master_signed_by``: IDs of devices whose signature on the master key verified."""

    master_key: str | None
    devices: tuple[DeviceKeys, ...] = ()
    master_signed_by: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True, kw_only=True)
class Pins:
    """What the door remembers, in its state directory, between restarts.

    ``master_key``: the pinned cross-signing identity (None: the owner had none when first seen).
    ``devices``: device ID → Ed25519 key of each device trusted by confirmation or first use (not by signature).
    ``announced``: untrusted devices the room was already told about (told once).
    ``identity_problem``: set when the identity changed; cleared only by :func:`accept_identity`.
    """

    master_key: str | None = None
    devices: Mapping[str, str] = field(default_factory=dict)
    announced: frozenset[str] = frozenset()
    identity_problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, "master_key": self.master_key, "devices": dict(self.devices),
                "announced": sorted(self.announced), "identity_problem": self.identity_problem}

    @classmethod
    def from_json(cls, data: object) -> Pins:
        """Pins read back from the file; raises ValueError for anything that is not what :meth:`to_json` wrote."""
        if not isinstance(data, dict) or data.get("version") != 1:
            raise ValueError("not a version 1 trust file")
        master, devices, announced, problem = (data.get("master_key"), data.get("devices"), data.get("announced"),
                                               data.get("identity_problem"))
        if master is not None and not isinstance(master, str):
            raise ValueError("master_key is not a string")
        if not isinstance(devices, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in devices.items()):
            raise ValueError("devices is not a map of device IDs to keys")
        if not isinstance(announced, list) or not all(isinstance(d, str) for d in announced):
            raise ValueError("announced is not a list of device IDs")
        if problem is not None and not isinstance(problem, str):
            raise ValueError("identity_problem is not a string")
        return cls(master_key=master, devices=dict(devices), announced=frozenset(announced),
                   identity_problem=problem)


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """What the door makes of the owner's keys now.

    ``trusted``: device IDs whose encrypted events count as the owner's and which get the room keys.
    ``untrusted``: the owner's other devices, ID → display name. ``new_untrusted``: those not announced before
    (the room is told about them now). ``identity_problem``: why nothing is trusted, or None.
    """

    pins: Pins | None  #: None: nothing to pin yet (the owner's account has no keys at all: first use is later)
    trusted: frozenset[str] = frozenset()
    untrusted: Mapping[str, str] = field(default_factory=dict)
    new_untrusted: tuple[str, ...] = ()
    identity_problem: str | None = None
    #: The owner set up cross-signing after the door pinned their devices, and no pinned device signed it.
    identity_pending: bool = False


def assess(pins: Pins | None, observed: ObservedKeys) -> Verdict:
    """Apply the trust rules (module docstring) to what was observed; ``pins`` None: the owner was never seen."""
    devices = {d.device_id: d for d in observed.devices}
    if pins is None and observed.master_key is None and not observed.devices:
        return Verdict(pins=None)  # the owner has not signed in anywhere yet: the first keys that appear are pinned
    if pins is None:  # first use: pin what is there
        if observed.master_key is not None:
            pins = Pins(master_key=observed.master_key)
        else:
            pins = Pins(devices={d.device_id: d.ed25519 for d in observed.devices[:MAX_PINNED]})
    problem = pins.identity_problem or _identity_change(pins, observed, devices)
    pending = False
    if problem is None and pins.master_key is None and observed.master_key is not None:
        if any(pins.devices.get(d) == devices[d].ed25519 for d in observed.master_signed_by if d in devices):
            pins = dataclasses.replace(pins, master_key=observed.master_key)  # a trusted device vouched for it
        else:
            pending = True
    if problem is not None:
        pins = dataclasses.replace(pins, identity_problem=problem)
        trusted: set[str] = set()
    else:
        trusted = {d.device_id for d in observed.devices if _trusted(pins, d, observed.master_key)}
    untrusted = {d.device_id: d.name[:80] for d in observed.devices if d.device_id not in trusted}
    new = tuple(sorted(set(untrusted) - pins.announced))
    # Remember who was announced (forget devices that are gone, so a device that comes back is announced again).
    pins = dataclasses.replace(pins, announced=frozenset(untrusted) & (pins.announced | set(new)))
    return Verdict(pins=pins, trusted=frozenset(trusted), untrusted=untrusted, new_untrusted=new,
                   identity_problem=problem, identity_pending=pending)


def _identity_change(pins: Pins, observed: ObservedKeys, devices: Mapping[str, DeviceKeys]) -> str | None:
    if pins.master_key is not None and observed.master_key != pins.master_key:
        if observed.master_key is None:
            return "the owner's cross-signing identity has disappeared"
        return "the owner's cross-signing identity (master key) has changed"
    for device_id, key in pins.devices.items():
        seen = devices.get(device_id)
        if seen is not None and seen.ed25519 != key:
            return f"the keys of the owner's device {device_id} have changed"
    return None


def _trusted(pins: Pins, device: DeviceKeys, master_key: str | None) -> bool:
    if pins.devices.get(device.device_id) == device.ed25519:
        return True
    return device.signed and master_key is not None and master_key == pins.master_key


def confirm_device(pins: Pins, device: DeviceKeys) -> Pins:
    """The owner confirmed this device (on the door, or from a trusted device): pin its key."""
    devices = dict(pins.devices)
    devices[device.device_id] = device.ed25519
    while len(devices) > MAX_PINNED:
        devices.pop(next(iter(devices)))
    return dataclasses.replace(pins, devices=devices, announced=pins.announced - {device.device_id})


def accept_identity(pins: Pins | None, observed: ObservedKeys) -> Pins:
    """The owner confirmed, on the door, the identity their account shows now (a new master key, cross-signing set
    up or gone, a device whose keys changed): pin it as at first use. Pinned devices whose keys did not change stay
    trusted; no earlier problem is carried over."""
    devices = {d.device_id: d for d in observed.devices}
    kept = {} if pins is None else {i: k for i, k in pins.devices.items() if i in devices and devices[i].ed25519 == k}
    fresh = assess(None, observed).pins or Pins()
    if fresh.master_key is None:  # no cross-signing: every device there now is pinned (the owner confirmed them)
        kept.update(fresh.devices)
    return Pins(master_key=fresh.master_key, devices=kept, announced=pins.announced if pins else frozenset())
