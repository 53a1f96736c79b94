"""Element Call's media keys (``io.element.call.encryption_keys``) over Olm-encrypted to-device messages.

In an encrypted room every participant of a MatrixRTC call encrypts its media with a key of its own and sends it
to each other participant's device, Olm-encrypted (js-sdk 43's ``ToDeviceKeyTransport``): content
``{keys: {index, key (base64)}, member: {id: "@user:server:DEVICE", claimed_device_id}, room_id, session:
{application, call_id, scope}, sent_ts}``.

matrix-nio decrypts Olm to-device messages but drops those of types it does not know, so :func:`install` wraps the
nio Olm machine's handler of decrypted Olm payloads (one private method, on the instance) to take these out first.
A key counts only when it comes from a device whose keys the door read and checked (:meth:`HouseholdTrust
.olm_sender_device`: the Olm session's curve25519 key *and* the payload's ed25519 key) and names that very device
as its member; everything else is logged and dropped. The door's own key goes only to the devices the trust rules
give keys to (:meth:`HouseholdTrust.key_holders`).
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nio import KeysClaimResponse, ToDeviceMessage, ToDeviceResponse

from intercom.core import rtc

log = logging.getLogger(__name__)

_HOOKED = "_intercom_rtc_keys"


@dataclass(frozen=True, slots=True)
class MediaKey:
    """A participant's media key, from a device the door authenticated."""

    room_id: str
    user_id: str
    device_id: str
    identity: str  #: the LiveKit participant identity the key is for: ``@user:server:DEVICE``
    key: bytes
    index: int


def parse(sender: str, device_id: str, content: Any) -> MediaKey | str:
    """The key in a decrypted ``io.element.call.encryption_keys`` content from ``sender``'s device ``device_id``
    (authenticated), or why it is none."""
    if not isinstance(content, Mapping):
        return "content is not an object"
    keys, member, room_id = content.get("keys"), content.get("member"), content.get("room_id")
    if not isinstance(room_id, str) or not isinstance(keys, Mapping) or not isinstance(member, Mapping):
        return "no room_id, keys or member"
    identity = f"{sender}:{device_id}"
    if member.get("claimed_device_id") != device_id or member.get("id", identity) != identity:
        return f"the key claims another device ({str(member.get('claimed_device_id'))[:40]}) than the one that sent it"
    index = keys.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 256:
        return "key index is not 0..255"
    try:
        key = base64.b64decode(str(keys.get("key", "")), validate=True)
    except (binascii.Error, ValueError):
        return "key is not base64"
    if not 16 <= len(key) <= 64:
        return f"a key of {len(key)} bytes"
    return MediaKey(room_id=room_id, user_id=sender, device_id=device_id, identity=identity, key=key, index=index)


def install(client: Any, authenticate: Callable[[str, str, Any], str | None], on_key: Callable[[MediaKey], None]) -> None:
    """Take Element Call's media keys out of ``client``'s decrypted Olm messages (idempotent per Olm machine).
    ``authenticate(sender, sender_key, ed25519)`` gives the sending device, or None."""
    olm = getattr(client, "olm", None)
    if olm is None or getattr(olm, _HOOKED, False):
        return
    handle = olm._handle_olm_event  # noqa: SLF001 - nio has no hook for Olm payloads of other types

    def handler(sender: str, sender_key: str, payload: dict[Any, Any]) -> Any:
        if payload.get("type") != rtc.ENCRYPTION_KEYS:
            return handle(sender, sender_key, payload)
        claimed = payload.get("keys")
        device_id = authenticate(sender, sender_key, claimed.get("ed25519") if isinstance(claimed, Mapping) else None)
        if device_id is None:
            log.warning("MatrixRTC: a media key from %s came from a device the door has not checked: dropped",
                        str(sender)[:80])
            return None
        found = parse(sender, device_id, payload.get("content"))
        if isinstance(found, str):
            log.warning("MatrixRTC: a media key from %s %s dropped: %s", str(sender)[:80], device_id, found)
            return None
        try:
            on_key(found)
        except Exception:
            log.exception("MatrixRTC: handling a media key failed")
        return None

    olm._handle_olm_event = handler  # noqa: SLF001
    setattr(olm, _HOOKED, True)


def key_content(room_id: str, identity: str, device_id: str, key: bytes, index: int) -> dict[str, Any]:
    """The door's media key as js-sdk 43 sends one."""
    return {"keys": {"index": index, "key": base64.b64encode(key).decode()},
            "member": {"id": identity, "claimed_device_id": device_id}, "room_id": room_id,
            "session": {"application": rtc.APPLICATION, "call_id": "", "scope": "m.room"},
            "sent_ts": int(time.time() * 1000)}


async def send(client: Any, user_id: str, device_ids: Iterable[str], content: Mapping[str, Any]) -> list[str]:
    """Send ``content`` as an Olm-encrypted ``io.element.call.encryption_keys`` to each of ``user_id``'s
    ``device_ids`` (claiming one-time keys for an Olm session where there is none). Returns the devices reached."""
    olm = client.olm
    wanted = set(device_ids)
    devices = [d for d in olm.device_store.active_user_devices(user_id) if d.id in wanted]
    missing = [d.id for d in devices if not olm.session_store.get(d.curve25519)]
    if missing:
        claimed = await client.keys_claim({user_id: missing})
        if not isinstance(claimed, KeysClaimResponse):
            log.warning("MatrixRTC: no Olm session with %s %s: %s", user_id, ", ".join(missing), claimed)
    reached = []
    for device in devices:
        session = olm.session_store.get(device.curve25519)
        if session is None:
            log.warning("MatrixRTC: no Olm session with %s %s: its media key is not sent", user_id, device.id)
            continue
        payload = olm._olm_encrypt(session, device, rtc.ENCRYPTION_KEYS, dict(content))  # noqa: SLF001
        answer = await client.to_device(ToDeviceMessage("m.room.encrypted", user_id, device.id, payload))
        if isinstance(answer, ToDeviceResponse):
            reached.append(device.id)
        else:
            log.warning("MatrixRTC: sending the media key to %s %s failed: %s", user_id, device.id, answer)
    return reached
