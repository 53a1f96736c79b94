"""Glass-to-glass video latency at 640x480@30, door (own process) to viewer, over loopback.

From the moment the synthetic camera "exposes" a frame (its counter drawn in) to the moment the viewer has decoded
it and read the counter. Camera exposure/readout and the display are not included. The viewer is aiortc, whose
video jitter buffer completes a frame only when the next frame's first packet arrives: about one frame interval
(33 ms) that a browser, which uses the RTP marker bit, does not add; reported separately as an estimate.

Figure: the door's production path off the Pi (live libx264 in the camera's thread, packets passed to aiortc).
Baseline, same run: raw frames encoded by aiortc itself (H.264, its default x264 settings).
Prints one JSON object.
"""

from __future__ import annotations

import time

from _common import report
from _video import run_call

WIDTH, HEIGHT, FPS = 640, 480, 30
TARGET_MS = 60.0


def main() -> None:
    started = time.monotonic()
    ours = run_call("camera_h264", WIDTH, HEIGHT, FPS, window=8.0)
    preencoded = run_call("preencoded", WIDTH, HEIGHT, FPS, window=8.0)
    baseline = run_call("aiortc_h264", WIDTH, HEIGHT, FPS, window=8.0)
    value = ours["latency_ms_median"]
    frame_interval = 1000 / FPS
    report({
        "benchmark": "video_latency",
        "metric": "glass-to-glass latency at 640x480@30, ms (median over the call)",
        "value": value,
        "target": TARGET_MS,
        "meets_target": value <= TARGET_MS,
        "baseline": {"name": "raw frames encoded by aiortc (H.264)", "value": baseline["latency_ms_median"]},
        "ratio_to_baseline": round(value / baseline["latency_ms_median"], 3),
        "without_aiortc_receiver_frame_hold_ms": round(value - frame_interval, 1),
        "runs": {"camera_h264 (live libx264, packets)": ours, "preencoded (hardware encoder analogue)": preencoded,
                 "aiortc_h264 (baseline)": baseline},
        "seconds": round(time.monotonic() - started, 1),
    })


if __name__ == "__main__":
    main()
