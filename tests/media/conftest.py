"""Media tests: real ALSA (file PCMs from intercom/data/asound-files.conf), real aiortc peers on 127.0.0.1."""


from intercom_dev.media import use_alsa_file_devices

# libasound reads its configuration when the first device opens; set the path before any test can open one.
use_alsa_file_devices()
