"""Errors of the Matrix side that a person has to act on (wrong password, revoked token, unusable settings).

Network trouble is never raised: the adapter reports it as ``HomeserverConnectionChanged(online=False)`` and keeps
trying. These are for problems that retrying cannot fix.
"""

from __future__ import annotations

from intercom.errors import IntercomError


class MatrixError(IntercomError, RuntimeError):
    """The Matrix adapter cannot go on without a change to its settings or credentials."""


class MatrixLoginError(MatrixError):
    """The homeserver refused the door's password or access token."""
