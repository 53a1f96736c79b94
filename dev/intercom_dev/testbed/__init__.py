"""Real components that the project starts for itself, for integration tests, benchmarks and the demo.

Nothing here runs on a door: it is part of the development package (``dev/``), not of ``intercom``. It is a
package rather than test code because the demo needs the same local homeserver as the tests do.

- :mod:`intercom_dev.testbed.synapse`: a throwaway Synapse homeserver on 127.0.0.1, installed on first use.

The names below are imported lazily (PEP 562), so that ``python -m intercom_dev.testbed.synapse`` does not find its
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
        return getattr(importlib.import_module("intercom_dev.testbed.synapse"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
