"""Exceptions shared by every layer of the intercom.

Each layer raises a subclass of :class:`IntercomError` for problems it can explain to the person installing the
door, so the command line and the service can catch one type, print the message and exit, instead of showing a
traceback to someone who only needs to fix a setting or a cable.
"""

from __future__ import annotations


class IntercomError(Exception):
    """Base class for errors whose message is meant for the person running the intercom."""
