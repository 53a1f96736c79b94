"""The echo canceller removes a simulated speaker-to-microphone echo and keeps the visitor's voice."""

import numpy as np
import pytest

from intercom_dev import measure
from intercom.media.aec import create_echo_canceller

RATE = 48000
PERIOD = 960
SECONDS = 8.0


def _room_echo(far: np.ndarray) -> np.ndarray:
    """The speaker heard by the microphone: 30 ms acoustic delay, a direct path and a 150 ms reverberant tail."""
    rng = np.random.default_rng(7)
    response = np.zeros(int(0.18 * RATE))
    delay = int(0.03 * RATE)
    tail = len(response) - delay
    response[delay:] = 0.08 * rng.standard_normal(tail) * np.exp(-np.arange(tail) / (0.03 * RATE))
    response[delay] = 0.5
    return np.convolve(far.astype(np.float64), response)[: len(far)]


def _run(timing_error: float = 0.0, residual_suppression_db=20):
    """Far end speaks throughout; the visitor talks over it from 5.5 s to 6.5 s (double talk)."""
    far = measure.speech_like(SECONDS, seed=1)
    near = np.zeros(len(far))
    near[int(5.5 * RATE) : int(6.5 * RATE)] = measure.speech_like(1.0, seed=9, amplitude=0.2)
    noise = np.random.default_rng(3).normal(0, 30, len(far))
    mic = _room_echo(far) + near + noise
    canceller = create_echo_canceller(PERIOD, RATE, tail_ms=200, residual_suppression_db=residual_suppression_db)
    assert canceller is not None, "libspeexdsp is missing"
    start = 1000.0  # device-clock time of sample 0
    out = []
    for i in range(0, len(far), PERIOD):
        # As the ALSA threads do: the playback thread reports what it wrote with the time it is heard, the capture
        # thread passes each microphone period with the time it was captured.
        canceller.far_end(far[i : i + PERIOD].tobytes(), start + i / RATE + timing_error)
        period = np.clip(np.round(mic[i : i + PERIOD]), -32768, 32767).astype(np.int16)
        out.append(np.frombuffer(canceller.process(period.tobytes(), start + i / RATE), dtype=np.int16))
    return mic, near, np.concatenate(out).astype(np.float64)


MODES = {"linear filter only": (None, 12), "with residual suppression": (20, 22)}
"residual_suppression_db, minimum ERLE in dB (measured: about 16 and 28)."


@pytest.fixture(scope="module", params=list(MODES))
def run(request):
    suppression, min_erle = MODES[request.param]
    return (*_run(residual_suppression_db=suppression), min_erle, request.param)


def test_erle_after_convergence(run):
    mic, _, out, min_erle, mode = run
    window = slice(3 * RATE, int(5.5 * RATE))
    erle = measure.erle(mic[window], out[window])
    print(f"{mode}: ERLE {erle:.1f} dB")
    assert erle >= min_erle


def test_near_end_speech_survives_double_talk(run):
    mic, near, out, _, mode = run
    window = slice(int(5.6 * RATE), int(6.5 * RATE))
    # The resampling filters (about 1 ms) and the suppressor (one 10 ms frame) delay the signal; find the lag.
    margin = 1000
    found = measure.align(near[window], out[window.start - margin : window.stop + margin], max_lag=2 * margin)
    delay_ms = (found.lag - margin) / RATE * 1000
    kept = np.std(out[window.start - margin + found.lag :][: window.stop - window.start]) / np.std(near[window])
    before = np.corrcoef(mic[window], near[window])[0, 1]
    print(f"{mode}: double talk: near-end correlation {found.correlation:.2f} (microphone {before:.2f}), "
          f"level {kept:.2f}, delay {delay_ms:.1f} ms")
    assert found.correlation >= 0.65
    assert found.correlation > before + 0.3  # far better than not cancelling at all
    assert kept >= 0.65  # not suppressed along with the echo
    assert delay_ms < 15


def test_a_few_milliseconds_of_timing_error_are_tolerated():
    mic, _, out = _run(timing_error=0.005)
    window = slice(3 * RATE, int(5.5 * RATE))
    assert measure.erle(mic[window], out[window]) >= 10
