"""Shared by the benchmark scripts: the repository's ALSA test devices, a temporary directory, JSON output."""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from intercom_dev.media import ALSA_FILE_CONFIG as ALSA_TEST_CONFIG  # noqa: E402
from intercom_dev.media import use_alsa_file_devices  # noqa: E402


def setup() -> Path:
    """Use the file-backed ALSA devices; returns a fresh directory for recordings."""
    use_alsa_file_devices(ALSA_TEST_CONFIG)
    return Path(tempfile.mkdtemp(prefix="intercom-bench-"))


def median(values):
    return round(statistics.median(values), 2) if values else None


def report(result: dict) -> None:
    """The one JSON object a benchmark prints."""
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
