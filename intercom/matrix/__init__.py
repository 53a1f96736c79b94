"""The Matrix edge of the door: matrix-nio in, core events out; core send actions in, room events out.

- :mod:`~intercom.matrix.client`: :class:`MatrixAdapter` (login, sync loop, sending, reconnecting, TURN).
- :mod:`~intercom.matrix.routing`: nio events to core events (pure).
- :mod:`~intercom.matrix.turn`: TURN credentials from the homeserver (fetching, parsing, cache).
- :mod:`~intercom.matrix.retry`: the one retry policy for login, sync and send.
- :mod:`~intercom.matrix.settings`: who the door is on Matrix (built from the config).
- :mod:`~intercom.matrix.session`: the saved login and the E2EE store directory.
- :mod:`~intercom.matrix.rooms`: the residents' rooms the config does not name (remembered, made by the door).
- :mod:`~intercom.matrix.trust`: the residents' keys, the pins kept of them, room keys only to trusted devices.
"""

from .client import MatrixAdapter
from .errors import MatrixError
from .settings import Credential, MatrixSettings, ResidentRoom
from .trust import load_household_pins
from .turn import TurnServer

__all__ = ["Credential", "MatrixAdapter", "MatrixError", "MatrixSettings", "ResidentRoom", "TurnServer",
           "load_household_pins"]
