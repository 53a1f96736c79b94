"""Sound devices backed by files, for ``intercom run --simulate`` (and the development tools).

The configuration shipped with the package (:data:`ALSA_FILE_CONFIG`) defines two ALSA PCMs taking a file name as
argument: ``intercom_file_mic:IN="in.raw"`` reads a raw s16le recording as the microphone and
``intercom_file_speaker:OUT="out.raw"`` writes what the speaker plays. :func:`use_alsa_file_devices` must run
before the process opens its first ALSA device.
"""

from __future__ import annotations

import os
from pathlib import Path

STOCK_ALSA_CONFIG = "/usr/share/alsa/alsa.conf"
#: The one definition of the file-backed ALSA devices.
ALSA_FILE_CONFIG = Path(__file__).resolve().parent.parent / "data" / "asound-files.conf"


def use_alsa_file_devices(config: Path = ALSA_FILE_CONFIG) -> None:
    """Make libasound load ``config`` after its stock configuration (ALSA_CONFIG_PATH is a colon list)."""
    os.environ["ALSA_CONFIG_PATH"] = f"{STOCK_ALSA_CONFIG}:{config}"


def mic_device(path: Path) -> str:
    return f'intercom_file_mic:IN="{path}"'


def speaker_device(path: Path) -> str:
    return f'intercom_file_speaker:OUT="{path}"'
