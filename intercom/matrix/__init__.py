"""The Matrix edge of the door: matrix-nio in, core events out; core send actions in, room events out.

- :mod:`~intercom.matrix.client`: :class:`MatrixAdapter` (login, sync loop, sending, reconnecting, TURN).
- :mod:`~intercom.matrix.routing`: nio events to core events (pure).
- :mod:`~intercom.matrix.turn`: TURN credentials from the homeserver (pure parsing and cache).
- :mod:`~intercom.matrix.session`: the saved login and the E2EE store directory.
"""

from .client import MatrixAdapter, MatrixSettings
from .errors import MatrixError, MatrixLoginError
from .turn import TurnServer

__all__ = ["MatrixAdapter", "MatrixError", "MatrixLoginError", "MatrixSettings", "TurnServer"]
