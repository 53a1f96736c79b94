"""Software mouth-to-ear audio latency between two MediaEngines on loopback.

A chirp train goes into one side's microphone (an ALSA ``file`` device with an emulated sound-card clock) and is
recorded at the other side's speaker. Both ends are timed on the device clocks: the capture thread stamps each
period with the time its first sample entered the microphone, the playback thread with the time its first sample
reaches the speaker. Cross-correlating the two timelines gives the latency: capture period, Opus, SRTP over
127.0.0.1, decoding, playout buffer and ALSA buffer. The sound card's own converters and USB buffering are not
included (measure them on the Pi with a microphone in front of the speaker).

Baseline, same run: the same engine keeping aiortc's stock audio jitter buffer (prefetch of 4 packets).
Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from _common import median, report, setup

from intercom.media import MediaEngine
from intercom_dev import measure
from intercom_dev.media import RecordingTap, StateLog, connect, loopback_settings, timeline, write_raw

RATE = 48000
LEAD = 1.5
SECONDS = 3.0
RUNS = 3
TARGET_MS = 80.0


async def one_call(directory, **settings) -> tuple[float, float]:
    """Latency (ms) and the normalised correlation of the two timelines."""
    write_raw(directory / "a_in.raw", np.zeros(int((LEAD + SECONDS + 2) * RATE), dtype=np.int16))  # A is silent
    write_raw(directory / "b_in.raw", measure.pad(measure.chirp_train(SECONDS, seed=3), LEAD, 2))
    log_a, log_b, tap_a, tap_b = StateLog(), StateLog(), RecordingTap(), RecordingTap()
    a = MediaEngine(loopback_settings(directory / "a_in.raw", directory / "a_out.raw", **settings), log_a,
                    audio_tap=lambda call_id: tap_a)
    b = MediaEngine(loopback_settings(directory / "b_in.raw", directory / "b_out.raw", **settings), log_b,
                    audio_tap=lambda call_id: tap_b)
    try:
        await connect(a, log_a, b, log_b, "bench")
        await asyncio.sleep(LEAD + SECONDS + 0.5)
    finally:
        await a.close_all()
        await b.close_all()
    origin = tap_b.captured_periods[0][0]
    mic = timeline(tap_b.captured_periods, origin, LEAD + SECONDS + 1)
    speaker = timeline(tap_a.played_periods, origin, LEAD + SECONDS + 1)
    found = measure.align(mic[: int((LEAD + SECONDS) * RATE)], speaker)
    return 1000 * found.lag / RATE, found.correlation


def main() -> None:
    directory = setup()
    configs = {
        "own_playout": {},
        "own_playout_with_aec": {"echo_cancellation": True},
        "aiortc_stock_receive": {"own_audio_playout": False},
    }
    runs: dict[str, list] = {name: [] for name in configs}
    started = time.monotonic()
    for _ in range(RUNS):
        for name, settings in configs.items():
            latency, correlation = asyncio.run(one_call(directory, **settings))
            runs[name].append({"latency_ms": round(latency, 1), "xcorr": round(correlation, 4)})
    latency = median([r["latency_ms"] for r in runs["own_playout"]])
    baseline = median([r["latency_ms"] for r in runs["aiortc_stock_receive"]])
    report({
        "benchmark": "audio_latency",
        "metric": "software mouth-to-ear latency, ms (median of %d calls)" % RUNS,
        "value": latency,
        "target": TARGET_MS,
        "meets_target": latency <= TARGET_MS,
        "baseline": {"name": "aiortc stock receive path (JitterBuffer prefetch=4)", "value": baseline},
        "ratio_to_baseline": round(latency / baseline, 3),
        "with_echo_cancellation_ms": median([r["latency_ms"] for r in runs["own_playout_with_aec"]]),
        "runs": runs,
        "setup": "48 kHz mono, 20 ms periods, playout floor 30 ms / target 40 ms, Opus 96 kbit/s, loopback SRTP; "
                 "ALSA file devices with emulated device clocks; both peers in one process",
        "seconds": round(time.monotonic() - started, 1),
    })


if __name__ == "__main__":
    main()
