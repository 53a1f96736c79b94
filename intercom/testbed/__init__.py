"""Real components that the project starts for itself, for integration tests and for ``intercom demo``.

Nothing here is used by the door in production. It lives in the package (not under ``tests/``) because the demo
command needs the same local homeserver as the tests do.

- :mod:`intercom.testbed.synapse`: a throwaway Synapse homeserver on 127.0.0.1, installed on first use.

The names below are imported lazily (PEP 562), so that ``python -m intercom.testbed.synapse`` does not find its
own module already imported by the package (runpy warns about that).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Homeserver",
    "HomeserverError",
    "MatrixAPIError",
    "RegisteredUser",
    "SynapseInstallError",
    "cache_dir",
    "ensure_synapse",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("intercom.testbed.synapse"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
