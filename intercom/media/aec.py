"""Acoustic echo cancellation in the send path.

The door's speaker and microphone sit a few centimetres apart, so without cancellation the owner hears themselves
back. The canceller needs the *far-end reference*, the exact samples that went to the speaker, aligned in time with
the microphone signal. :class:`EchoCanceller` gets both from the ALSA threads: the playback thread reports every
period it wrote with the time its first sample reaches the speaker, and the capture thread passes every period with
the time its first sample entered the microphone. Matching the two by time (not by arrival order) is what keeps
the reference aligned when network audio is late or the two threads are scheduled unevenly.

The adaptive filter is pluggable (:class:`EchoBackend`). The shipped one is libspeexdsp's MDF canceller, chosen after
measuring (shared notes, media.md §5): it keeps near-end speech during double talk (the WebRTC APM builds measured
there suppress it, and they take minutes to compile) and costs about 1 % of a core. Measured here
(tests/media/test_aec.py, 200 ms tail, simulated room): about 16 dB of echo return loss enhancement from the linear
filter alone, about 28 dB with speex's residual echo suppressor at 20 dB, with the near-end talker kept in double talk
(correlation about 0.75, level about 0.8). The suppressor costs one frame (10 ms) of latency. It runs at 16 kHz: at
48 kHz the same filter converged to 5-11 dB on white noise instead of 28 dB, and speech above 8 kHz matters little on
an intercom.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from typing import Protocol

import numpy as np

logger = logging.getLogger(__name__)

AEC_RATE = 16000
"Rate the adaptive filter runs at."


class EchoBackend(Protocol):
    """An adaptive echo canceller working on 16 kHz mono s16le frames of ``frame_samples`` samples."""

    frame_samples: int

    def process(self, near: bytes, far: bytes) -> bytes:
        """Return ``near`` with the echo of ``far`` (same length, time-aligned) removed."""
        ...


class SpeexBackend:
    """libspeexdsp's multi-delay block frequency-domain (MDF) canceller, through ctypes.

    The library is Debian's ``libspeexdsp1`` (also on Raspberry Pi OS). It is called directly rather than through
    the ``speexdsp`` PyPI package, whose pre-generated SWIG 2 wrapper imports the ``imp`` module that Python 3.12
    removed. ``residual_suppression_db`` additionally runs speex's preprocessor as a residual echo suppressor (it
    attenuates what the linear filter left, by up to that many dB while the far end talks; ``None`` = off).
    """

    _ECHO_SET_SAMPLING_RATE = 24
    _PREPROCESS_SET_DENOISE = 0
    _PREPROCESS_SET_NOISE_SUPPRESS = 18
    _PREPROCESS_SET_ECHO_SUPPRESS = 20
    _PREPROCESS_SET_ECHO_SUPPRESS_ACTIVE = 22
    _PREPROCESS_SET_ECHO_STATE = 24

    def __init__(self, frame_samples: int, tail_samples: int, residual_suppression_db: int | None = None) -> None:
        lib = _load_speexdsp()
        self.frame_samples = frame_samples
        self._lib = lib
        self._echo = lib.speex_echo_state_init(frame_samples, tail_samples)
        if not self._echo:
            raise RuntimeError("speex_echo_state_init failed")
        rate = ctypes.c_int(AEC_RATE)
        lib.speex_echo_ctl(self._echo, self._ECHO_SET_SAMPLING_RATE, ctypes.byref(rate))
        self._preprocess = None
        if residual_suppression_db is not None:
            self._preprocess = lib.speex_preprocess_state_init(frame_samples, AEC_RATE)
            for request, value in (
                (self._PREPROCESS_SET_DENOISE, 1),
                (self._PREPROCESS_SET_NOISE_SUPPRESS, -6),
                (self._PREPROCESS_SET_ECHO_SUPPRESS, -abs(residual_suppression_db)),
                (self._PREPROCESS_SET_ECHO_SUPPRESS_ACTIVE, -abs(residual_suppression_db) // 2),
            ):
                option = ctypes.c_int(value)
                lib.speex_preprocess_ctl(self._preprocess, request, ctypes.byref(option))
            lib.speex_preprocess_ctl(self._preprocess, self._PREPROCESS_SET_ECHO_STATE, self._echo)
        self._out = ctypes.create_string_buffer(frame_samples * 2)

    def process(self, near: bytes, far: bytes) -> bytes:
        self._lib.speex_echo_cancellation(self._echo, near, far, self._out)
        if self._preprocess is not None:
            self._lib.speex_preprocess_run(self._preprocess, self._out)
        return self._out.raw

    def close(self) -> None:
        if self._preprocess:
            self._lib.speex_preprocess_state_destroy(self._preprocess)
            self._preprocess = None
        if self._echo:
            self._lib.speex_echo_state_destroy(self._echo)
            self._echo = None

    def __del__(self) -> None:
        self.close()


def _load_speexdsp() -> ctypes.CDLL:
    """libspeexdsp with the prototypes used here; raises OSError if it is not installed."""
    name = ctypes.util.find_library("speexdsp") or "libspeexdsp.so.1"
    lib = ctypes.CDLL(name)
    pointer = ctypes.c_void_p
    lib.speex_echo_state_init.restype = pointer
    lib.speex_echo_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.speex_echo_state_destroy.argtypes = [pointer]
    lib.speex_echo_ctl.argtypes = [pointer, ctypes.c_int, pointer]
    lib.speex_echo_cancellation.argtypes = [pointer, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p]
    lib.speex_preprocess_state_init.restype = pointer
    lib.speex_preprocess_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.speex_preprocess_state_destroy.argtypes = [pointer]
    lib.speex_preprocess_ctl.argtypes = [pointer, ctypes.c_int, pointer]
    lib.speex_preprocess_run.argtypes = [pointer, ctypes.c_char_p]
    return lib


class _Resampler:
    """48 kHz ↔ 16 kHz by a factor of 3 with a windowed-sinc low-pass, keeping state across periods.

    A fixed ratio keeps every period exactly 960 ↔ 320 samples (a general resampler buffers and varies its output
    size), and the near and far signals pass the same filter, so their relative alignment is untouched.
    """

    FACTOR = 3
    TAPS = 63

    def __init__(self) -> None:
        n = np.arange(self.TAPS) - (self.TAPS - 1) / 2
        cutoff = 7200 / 48000
        taps = 2 * cutoff * np.sinc(2 * cutoff * n) * np.blackman(self.TAPS)
        self._taps = taps / taps.sum()
        self._down_history = np.zeros(self.TAPS - 1)
        self._up_history = np.zeros(self.TAPS - 1)

    def down(self, samples: np.ndarray) -> np.ndarray:
        padded = np.concatenate((self._down_history, samples))
        self._down_history = padded[-(self.TAPS - 1) :]
        return np.convolve(padded, self._taps, mode="valid")[:: self.FACTOR]

    def up(self, samples: np.ndarray) -> np.ndarray:
        stuffed = np.zeros(len(samples) * self.FACTOR)
        stuffed[:: self.FACTOR] = samples
        padded = np.concatenate((self._up_history, stuffed))
        self._up_history = padded[-(self.TAPS - 1) :]
        return np.convolve(padded, self._taps * self.FACTOR, mode="valid")


class _FarEndTimeline:
    """The last seconds of speaker output at 16 kHz, addressable by the time they were heard.

    Each period is placed at the sample index its heard time implies. Periods that follow on within 2 ms are treated
    as contiguous (the playback thread writes back to back; the small differences are timing noise). A larger jump,
    an underrun on a real device for instance, re-anchors the timeline and leaves silence in the gap.
    """

    def __init__(self, seconds: float = 2.0) -> None:
        self._ring = np.zeros(int(seconds * AEC_RATE), dtype=np.int16)
        self._base: float | None = None
        self._next = 0
        self._lock = threading.Lock()

    def add(self, samples: np.ndarray, heard_time: float) -> None:
        with self._lock:
            if self._base is None:
                self._base = heard_time
            index = round((heard_time - self._base) * AEC_RATE)
            if abs(index - self._next) > AEC_RATE // 500:
                if index > self._next:
                    self._write(np.zeros(min(index - self._next, len(self._ring)), dtype=np.int16))
                else:
                    self._base = heard_time - self._next / AEC_RATE
            self._write(samples)

    def _write(self, samples: np.ndarray) -> None:
        positions = (self._next + np.arange(len(samples))) % len(self._ring)
        self._ring[positions] = samples
        self._next += len(samples)

    def get(self, start_time: float, count: int) -> np.ndarray:
        """``count`` samples heard from ``start_time`` on; silence where nothing (known) was played."""
        with self._lock:
            out = np.zeros(count, dtype=np.int16)
            if self._base is None:
                return out
            start = round((start_time - self._base) * AEC_RATE)
            indices = start + np.arange(count)
            valid = (indices < self._next) & (indices >= max(0, self._next - len(self._ring)))
            out[valid] = self._ring[indices[valid] % len(self._ring)]
            return out


class EchoCanceller:
    """Removes the speaker's echo from 48 kHz microphone periods, thread-safe between the two ALSA threads.

    ``lead`` takes the reference slightly earlier than the microphone period: the adaptive filter can model any
    delay from 0 to its tail, but not a reference that arrives after its echo, which a few milliseconds of error in
    either time estimate would otherwise cause.
    """

    def __init__(self, backend: EchoBackend, rate: int = 48000, lead: float = 0.010) -> None:
        if rate != AEC_RATE * _Resampler.FACTOR:
            raise ValueError(f"the echo canceller takes {AEC_RATE * _Resampler.FACTOR} Hz audio, not {rate} Hz")
        self._backend = backend
        self._lead = lead
        self._far = _FarEndTimeline()
        self._far_resampler = _Resampler()
        self._near_resampler = _Resampler()
        self._pending = np.zeros(0)
        self._pending_time = 0.0

    def far_end(self, data: bytes, heard_time: float) -> None:
        """Record a period written to the speaker (playback thread)."""
        samples = np.frombuffer(data, dtype=np.int16).astype(np.float64)
        self._far.add(_to_int16(self._far_resampler.down(samples)), heard_time)

    def process(self, data: bytes, mic_time: float) -> bytes:
        """Cancel the echo in one microphone period (capture thread); returns a period of the same length."""
        near = self._near_resampler.down(np.frombuffer(data, dtype=np.int16).astype(np.float64))
        frame = self._backend.frame_samples
        out = []
        for offset in range(0, len(near) - frame + 1, frame):
            far = self._far.get(mic_time - self._lead + offset / AEC_RATE, frame)
            cleaned = self._backend.process(_to_int16(near[offset : offset + frame]).tobytes(), far.tobytes())
            out.append(np.frombuffer(cleaned, dtype=np.int16))
        cleaned_near = np.concatenate(out).astype(np.float64) if out else np.zeros(0)
        return _to_int16(self._near_resampler.up(cleaned_near)).tobytes()


def _to_int16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.round(samples), -32768, 32767).astype(np.int16)


def create_echo_canceller(
    period_frames: int, rate: int, tail_ms: int, residual_suppression_db: int | None = None
) -> EchoCanceller | None:
    """The configured canceller, or None (logged) when libspeexdsp is missing or the period does not fit it."""
    # 10 ms frames, the size speex is tuned for; the residual suppressor delays the signal by one frame.
    frame = AEC_RATE // 100
    if rate != AEC_RATE * _Resampler.FACTOR or period_frames % (frame * _Resampler.FACTOR):
        logger.error("echo cancellation needs 48 kHz audio in periods of 10 ms multiples; it is off")
        return None
    try:
        backend = SpeexBackend(frame, tail_ms * AEC_RATE // 1000, residual_suppression_db)
    except (OSError, AttributeError) as exc:
        logger.error("echo cancellation is configured but libspeexdsp cannot be loaded (%s); it is off", exc)
        return None
    return EchoCanceller(backend, rate)
