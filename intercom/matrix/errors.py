"""Errors of the Matrix side: using the adapter wrongly (before start, after close) or an upload that failed.

Nothing the homeserver says is raised out of the sync loop: network trouble is reported as
``HomeserverConnectionChanged(online=False)`` and a refusal (wrong password, revoked token) as a ``FaultChanged``,
and the adapter keeps trying.
"""

from __future__ import annotations

from intercom.errors import IntercomError


class MatrixError(IntercomError, RuntimeError):
    """The Matrix adapter was used before its start or after its close, or a request it cannot retry failed."""

