"""The one exception type the front panel lets out."""

from __future__ import annotations

from ..errors import IntercomError


class PanelError(IntercomError, RuntimeError):
    """Error raised when the button, LEDs or relay cannot be used; the message names the pin or package and the fix.

    Raised while setting the panel up (a pin library that is missing or cannot start, a pin that is busy or does
    not exist) and when the door relay is asked to pulse after :meth:`FrontPanel.close`. The original exception is
    chained as ``__cause__``.
    """
