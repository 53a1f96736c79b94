"""Exceptions shared by every layer of the intercom.

Each layer raises a subclass of :class:`IntercomError` for problems it can explain to the person installing the
door, so the command line and the service can catch one type, print the message and exit, instead of showing a
traceback to someone who only needs to fix a setting or a cable.
"""

from __future__ import annotations


class IntercomError(Exception):
    """Base class for errors whose message is meant for the person running the intercom.

    Every error the project raises derives from it and also from the builtin it is a kind of (as gpiozero's
    errors do), so callers may catch either: ``ConfigError`` is a ``ValueError``, ``ControlError`` a
    ``ConnectionError``, ``AlsaError`` an ``OSError``, ``MediaError``, ``MatrixError``, ``PanelError`` and the
    core's ``LocalCallError`` are ``RuntimeError``s, and ``MalformedCallEvent`` is a ``ValueError``.
    """
