"""Cross-signing for test accounts, as Element does it: a master key, a self-signing key signed by it, devices
signed by the self-signing key, uploaded to a real homeserver (``/keys/device_signing/upload`` with the account's
password, ``/keys/signatures/upload``). matrix-nio has none of this; the door reads it with its own checks
(:mod:`intercom.matrix.trust`), and these helpers build what those checks must accept or refuse.

The keys are vodozemac accounts used as plain Ed25519 signing keys.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import vodozemac

from intercom.matrix.trust import canonical_json


class Signer:
    """An Ed25519 key that signs JSON objects the Matrix way."""

    def __init__(self) -> None:
        self._account = vodozemac.Account()

    @property
    def public(self) -> str:
        return self._account.ed25519_key.to_base64()

    def sign(self, obj: dict[str, Any], user_id: str, key_id: str | None = None) -> dict[str, Any]:
        """A copy of ``obj`` with this key's signature added under ``user_id`` / ``key_id`` (default: by key)."""
        signed = copy.deepcopy(obj)
        unsigned = {k: v for k, v in signed.items() if k not in ("signatures", "unsigned")}
        signature = self._account.sign(canonical_json(unsigned)).to_base64()
        signed.setdefault("signatures", {}).setdefault(user_id, {})[key_id or f"ed25519:{self.public}"] = signature
        return signed


def cross_signing_key(user_id: str, key: Signer, usage: str) -> dict[str, Any]:
    return {"user_id": user_id, "usage": [usage], "keys": {f"ed25519:{key.public}": key.public}}


class Identity:
    """One account's cross-signing identity: master and self-signing keys (the self-signing key signed)."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.master, self.self_signing = Signer(), Signer()
        self.master_key = cross_signing_key(user_id, self.master, "master")
        self.self_signing_key = self.master.sign(cross_signing_key(user_id, self.self_signing, "self_signing"),
                                                 user_id)

    def sign_device(self, device_keys: dict[str, Any]) -> dict[str, Any]:
        """The device's keys with the self-signing key's signature (what "verify this session" makes)."""
        return self.self_signing.sign(device_keys, self.user_id)


def device_keys(user_id: str, device_id: str, key: Signer, curve25519: str, name: str = "") -> dict[str, Any]:
    """A device's ``/keys/query`` entry, self-signed."""
    entry = {"user_id": user_id, "device_id": device_id,
             "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
             "keys": {f"ed25519:{device_id}": key.public, f"curve25519:{device_id}": curve25519}}
    signed = key.sign(entry, user_id, f"ed25519:{device_id}")
    if name:
        signed["unsigned"] = {"device_display_name": name}
    return signed


async def _post(client: Any, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    response = await client.send("POST", path, data=json.dumps(body),
                                 headers={"Authorization": f"Bearer {client.access_token}",
                                          "Content-Type": "application/json"})
    try:
        return response.status, await response.json(content_type=None)
    finally:
        response.release()


async def upload_identity(client: Any, identity: Identity, password: str) -> None:
    """Upload the identity's keys for the logged-in nio ``client`` (user-interactive auth with the password)."""
    body: dict[str, Any] = {"master_key": identity.master_key, "self_signing_key": identity.self_signing_key}
    status, answer = await _post(client, "/_matrix/client/v3/keys/device_signing/upload", body)
    if status == 401:
        body["auth"] = {"type": "m.login.password", "password": password, "session": answer.get("session"),
                        "identifier": {"type": "m.id.user", "user": client.user_id}}
        status, answer = await _post(client, "/_matrix/client/v3/keys/device_signing/upload", body)
    if status != 200:
        raise RuntimeError(f"uploading cross-signing keys failed: {status} {answer}")


async def query_device(client: Any, user_id: str, device_id: str) -> dict[str, Any]:
    """A device's keys as the homeserver has them."""
    status, answer = await _post(client, "/_matrix/client/v3/keys/query", {"device_keys": {user_id: [device_id]}})
    if status != 200:
        raise RuntimeError(f"keys/query failed: {status} {answer}")
    return answer["device_keys"][user_id][device_id]


async def sign_and_upload_device(client: Any, identity: Identity, device_id: str) -> None:
    """Sign one of the account's devices with its self-signing key, as verifying that session in Element does."""
    entry = await query_device(client, identity.user_id, device_id)
    entry.pop("unsigned", None)
    signed = identity.sign_device(entry)
    status, answer = await _post(client, "/_matrix/client/v3/keys/signatures/upload",
                                 {identity.user_id: {device_id: signed}})
    if status != 200 or answer.get("failures"):
        raise RuntimeError(f"uploading the device signature failed: {status} {answer}")
