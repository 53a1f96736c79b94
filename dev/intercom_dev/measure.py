"""Test signals and the measurements made on them (tests, benchmarks, and checks on the Pi).

Everything works on mono int16/float arrays at one sample rate. Kept in the package (not under tests/) because the
same code measures a recording made on real hardware: play :func:`speech_like` from the phone, record the door's
speaker with a microphone, and :func:`align` gives the delay.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def tone(frequency: float, seconds: float, rate: int = 48000, amplitude: float = 0.5) -> np.ndarray:
    """A sine at ``amplitude`` of full scale, as int16."""
    t = np.arange(int(seconds * rate)) / rate
    return np.round(amplitude * 32767 * np.sin(2 * np.pi * frequency * t)).astype(np.int16)


def speech_like(seconds: float, rate: int = 48000, seed: int = 1, amplitude: float = 0.5) -> np.ndarray:
    """A voiced, syllable-paced signal: a gliding 100-160 Hz harmonic series plus noise, with irregular pauses.

    Not periodic (unlike a repeated chirp), so cross-correlation has one clear peak and measures delay unambiguously.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0 = 130 + 30 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 25))
    noise = np.convolve(rng.standard_normal(n), np.ones(4) / 4, mode="same")
    # Syllables of random length (80-300 ms) separated by random pauses (30-200 ms).
    envelope = np.zeros(n)
    position = 0
    while position < n:
        length = int(rng.uniform(0.08, 0.3) * rate)
        envelope[position : position + length] = np.hanning(min(length, n - position) + 2)[1:-1][: min(length, n - position)]
        position += length + int(rng.uniform(0.03, 0.2) * rate)
    signal = (voiced + 0.4 * noise) * envelope
    return np.round(amplitude * 32767 * signal / np.abs(signal).max()).astype(np.int16)


def chirp_train(seconds: float, rate: int = 48000, seed: int = 1, amplitude: float = 0.5) -> np.ndarray:
    """Chirps of random length (0.1-0.4 s) sweeping between random frequencies in 300-3400 Hz, with random gaps.

    The telephone band, as media.md measured it, but not periodic, so cross-correlation has one clear peak. Opus
    keeps the waveform of such sweeps (normalised correlation about 0.999 through encoder and decoder), whereas a
    buzzy voiced signal like :func:`speech_like` comes out at about 0.85 even at 96 kbit/s: Opus preserves how speech
    sounds, not its waveform, so that signal measures the codec rather than the transport.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    out = np.zeros(n)
    position = 0
    while position < n:
        length = int(rng.uniform(0.1, 0.4) * rate)
        f0, f1 = rng.uniform(300, 3400, 2)
        t = np.arange(length) / rate
        phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * t[-1]))
        count = min(length, n - position)
        out[position : position + count] = (np.sin(phase) * np.hanning(length))[:count]
        position += length + int(rng.uniform(0.02, 0.15) * rate)
    return np.round(amplitude * 32767 * out).astype(np.int16)


def peak_frequency(samples: np.ndarray, rate: int = 48000) -> float:
    """The frequency of the strongest spectral line (parabolic interpolation between FFT bins)."""
    x = samples.astype(np.float64) * np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(x))
    k = int(np.argmax(spectrum[1:-1])) + 1
    a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-12)
    offset = 0.5 * (a - c) / (a - 2 * b + c)
    return (k + offset) * rate / len(samples)


def tone_snr(samples: np.ndarray, frequency: float, rate: int = 48000, band: tuple[float, float] = (100.0, 8000.0)) -> float:
    """In-band SNR of a tone in dB: power within ±25 Hz of ``frequency`` against all other power in ``band``.

    The band is the speech band Opus carries in a call; harmonics and codec noise inside it count as noise.
    """
    x = samples.astype(np.float64) * np.blackman(len(samples))
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    in_band = (freqs >= band[0]) & (freqs <= band[1])
    at_tone = np.abs(freqs - frequency) <= 25
    signal = power[at_tone].sum()
    noise = power[in_band & ~at_tone].sum()
    return float(10 * np.log10(signal / max(noise, 1e-20)))


@dataclass(frozen=True)
class Alignment:
    """Where a reference signal is found in a recording."""

    lag: int
    "Samples by which the recording lags the reference."
    correlation: float
    "Normalised cross-correlation at that lag (1.0 = identical up to gain)."


def align(reference: np.ndarray, recording: np.ndarray, max_lag: int | None = None) -> Alignment:
    """Find ``reference`` in ``recording`` (lag >= 0) by FFT cross-correlation, normalised over the overlap."""
    ref = reference.astype(np.float64)
    rec = recording.astype(np.float64)
    n = len(ref) + len(rec)
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(rec, size) * np.conj(np.fft.rfft(ref, size)), size)
    limit = len(rec) - 1 if max_lag is None else min(max_lag, len(rec) - 1)
    lag = int(np.argmax(corr[: limit + 1]))
    overlap = min(len(ref), len(rec) - lag)
    a = ref[:overlap]
    b = rec[lag : lag + overlap]
    denominator = np.sqrt(np.dot(a, a) * np.dot(b, b))
    return Alignment(lag=lag, correlation=float(np.dot(a, b) / denominator) if denominator else 0.0)


def erle(microphone: np.ndarray, cancelled: np.ndarray) -> float:
    """Echo return loss enhancement in dB: microphone power over the power left after cancellation."""
    mic = microphone.astype(np.float64)
    out = cancelled.astype(np.float64)
    return float(10 * np.log10(np.mean(mic**2) / max(np.mean(out**2), 1e-20)))


def pad(samples: np.ndarray, before: float, after: float, rate: int = 48000) -> np.ndarray:
    """Silence around a signal (the ALSA file plugin returns stale data after the end of its input file)."""
    return np.concatenate(
        (np.zeros(int(before * rate), np.int16), samples.astype(np.int16), np.zeros(int(after * rate), np.int16))
    )
