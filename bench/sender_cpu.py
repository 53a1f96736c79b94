"""Sender CPU per call with pre-encoded H.264 at 1280x720@30, measured in the door's own process.

CPU = (user + system time of the door process) / wall time over a 10 s window after 3 s of warm-up, in cores (1.0 =
one full core of this machine). It covers everything the door process does for the call: video packetization and
SRTP, and the call's audio (ALSA threads, Opus both ways).

Figure: pre-encoded H.264 (encoded before the call and replayed: what a hardware encoder, picamera2 on a Pi 4, leaves
to the intercom process). Baseline, same run: aiortc encoding the same frames itself (H.264, its default libx264
settings). Also reported: the synthetic camera's live libx264 ultrafast (a Pi 5, which has no hardware encoder) and
aiortc's VP8 (the fallback for peers without H.264).
Prints one JSON object.
"""

from __future__ import annotations

import time

from _common import report
from _video import run_call

WIDTH, HEIGHT, FPS = 1280, 720, 30
TARGET_CORES = 0.1


def main() -> None:
    started = time.monotonic()
    runs = {
        "preencoded": run_call("preencoded", WIDTH, HEIGHT, FPS),
        "aiortc_h264": run_call("aiortc_h264", WIDTH, HEIGHT, FPS),
        "camera_h264_live_x264_ultrafast": run_call("camera_h264", WIDTH, HEIGHT, FPS),
        "aiortc_vp8": run_call("aiortc_vp8", WIDTH, HEIGHT, FPS),
    }
    value = runs["preencoded"]["cpu_cores"]
    baseline = runs["aiortc_h264"]["cpu_cores"]
    report({
        "benchmark": "sender_cpu",
        "metric": "door process CPU per call, cores, pre-encoded H.264 1280x720@30 (with the call's audio)",
        "value": value,
        "target": TARGET_CORES,
        "meets_target": value <= TARGET_CORES,
        "baseline": {"name": "aiortc encoding the same frames itself (H.264)", "value": baseline},
        "ratio_to_baseline": round(value / baseline, 3),
        "runs": runs,
        "seconds": round(time.monotonic() - started, 1),
    })


if __name__ == "__main__":
    main()
