"""Glare: both sides call at once. The spec's rule, in one place.

If an invite arrives while we are still *preparing* ours (nothing sent yet), we drop ours and take theirs. If it
arrives after ours was *sent*, the call with the lesser ``call_id`` (plain string comparison, the same on every
client) wins; the other is hung up with reason ``replaced``.

The door's own call IDs start with ``z`` (see :func:`new_call_id`): every other client's IDs start with a digit
(matrix-js-sdk, matrix-dart-sdk) or ``c`` (Nheko), so the door's call always compares greater and the door always
yields to the owner's call. That keeps both sides agreeing with peers that follow the rule, and still ends in one
call with Element Web, which never resolves glare itself (it ignores the door's invite while its own call rings).
"""

from __future__ import annotations

import secrets
import string

_ALPHANUMERIC = string.ascii_letters + string.digits

#: Every door call ID starts with this, so it sorts after other clients' IDs.
CALL_ID_PREFIX = "z"


def incoming_wins(ours: str, theirs: str) -> bool:
    """True when the incoming call ``theirs`` beats our sent call ``ours`` (the lesser call ID wins)."""
    return theirs < ours


def random_token(length: int = 20) -> str:
    """Random characters from the spec's opaque-ID grammar."""
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(length))


def new_call_id(token: str) -> str:
    """A door call ID: the ``z`` prefix, then ``token`` (which should be unique: random, or time plus random)."""
    return CALL_ID_PREFIX + token
