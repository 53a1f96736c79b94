"""Every error the door raises is an IntercomError (what the command line and the service catch) and also the
builtin it is a kind of."""

import pytest

from intercom.core.errors import LocalCallError, MalformedCallEvent
from intercom.errors import IntercomError
from intercom.matrix.errors import MatrixError
from intercom.media.alsa import AlsaError
from intercom.media.errors import MediaError
from intercom.panel.errors import PanelError
from intercom.service.config import ConfigError
from intercom.service.control import ControlError


@pytest.mark.parametrize("error, builtin", [
    (ConfigError, ValueError), (ControlError, ConnectionError), (AlsaError, OSError), (MediaError, RuntimeError),
    (MatrixError, RuntimeError), (PanelError, RuntimeError),
    (LocalCallError, RuntimeError), (MalformedCallEvent, ValueError),
])
def test_each_error_is_an_intercom_error_and_its_builtin(error, builtin):
    assert issubclass(error, IntercomError) and issubclass(error, builtin)


def test_no_other_exception_class_in_the_runtime_package():
    import importlib
    import inspect
    import pkgutil

    import intercom

    found = set()
    for module in pkgutil.walk_packages(intercom.__path__, "intercom."):
        if module.name.endswith(("picamera", "app", "cli")):
            continue  # picamera needs libcamera; app and cli only compose
        for _, obj in inspect.getmembers(importlib.import_module(module.name), inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith("intercom"):
                found.add(obj)
    strays = sorted(f"{c.__module__}.{c.__name__}" for c in found if not issubclass(c, IntercomError))
    assert strays == []
