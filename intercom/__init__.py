"""A Raspberry Pi doorbell intercom that speaks Matrix.

Layers, innermost first (imports only ever point inwards):

- ``intercom.core``: the sans-I/O call logic. Events in, actions out; no asyncio, network or hardware.
- ``intercom.service``: configuration and systemd integration.
- ``intercom.matrix``, ``intercom.media``, ``intercom.panel``: adapters to matrix-nio, aiortc/ALSA/camera, gpiozero.
- ``intercom.orchestrator``: feeds adapter events into the core and carries out its actions.
- ``intercom.cli``: the ``intercom`` command.
"""

__version__ = "0.1.0"
