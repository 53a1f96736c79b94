"""The front panel adapter: the bell buttons, the call and status LEDs and the door relay, on gpiozero.

Every device takes ``pin_factory=`` (gpiozero style), so the same code runs on a Pi (lgpio) and in tests
(``MockFactory``). See :class:`FrontPanel`, the LED table in :mod:`.patterns`, and ``hardware/README.md`` for
the wiring.
"""

from .debounce import Debouncer
from .errors import PanelError
from .frontpanel import FrontPanel
from .patterns import PATTERNS, TICK, Indication, Pattern
from .pins import PIN_FACTORY_NAMES, PanelPins, make_pin_factory

__all__ = [
    "PATTERNS",
    "PIN_FACTORY_NAMES",
    "TICK",
    "Debouncer",
    "FrontPanel",
    "Indication",
    "PanelError",
    "PanelPins",
    "Pattern",
    "make_pin_factory",
]
