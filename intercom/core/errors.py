"""Errors of the call core.

Nothing a peer sends raises: bad input becomes an :class:`~intercom.core.actions.Ignored` action. The only
exception the core raises is :class:`LocalCallError`, which means our own code asked for the impossible.
"""

from __future__ import annotations

from ..errors import IntercomError


class LocalCallError(IntercomError, RuntimeError):
    """Our own code broke a rule of the call core (a bug, never the peer's doing)."""


class MalformedCallEvent(IntercomError, ValueError):
    """A received ``m.call.*`` content cannot be used; the message says why. Turned into ``Ignored``."""
