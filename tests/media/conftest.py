"""Media tests: real ALSA (file PCMs from intercom/data/asound-files.conf), real aiortc peers on 127.0.0.1."""


from intercom.media.testing import use_alsa_test_config

# libasound reads its configuration when the first device opens; set the path before any test can open one.
use_alsa_test_config()
