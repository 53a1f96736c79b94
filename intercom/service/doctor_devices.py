"""``intercom doctor``'s hardware checks, through the media and panel adapters: the microphone (a second recorded,
its level), the speaker (a short beep), the camera (one frame: size and brightness) and the panel's pins (claimed
with the configured pin factory, the button's level). Never the door relay: doctor does not open the door.

Each runs its blocking part in a daemon thread (:func:`~intercom.service.doctor.in_thread`), so a device that hangs
in its driver costs its check a timeout and nothing else.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from intercom.service.config import Config

from .doctor import HARDWARE, TIMEOUTS, Result, bounded, describe_exception, fail, in_thread, ok, warn

#: Microphone levels (dBFS, RMS of one second): below SILENT is a warning; at or above CLIPPING too.
SILENT_DBFS = -60.0
CLIPPING_DBFS = -1.0
#: The speaker's test tone.
TONE_HZ, TONE_DBFS, TONE_SECONDS = 440.0, -12.0, 0.6
#: A frame whose mean brightness (0-255) is below this is "black".
DARK_MEAN = 10.0


def level_dbfs(pcm: bytes) -> float:
    """The RMS level of signed 16-bit little-endian samples in dBFS (-inf for digital silence or no samples)."""
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64)
    if samples.size == 0:
        return -math.inf
    rms = math.sqrt(float(np.mean(samples * samples)))
    return 20 * math.log10(rms / 32768) if rms > 0 else -math.inf


def judge_microphone(dbfs: float, device: str, seconds: float) -> Result:
    shown = "digital silence" if dbfs == -math.inf else f"{dbfs:.1f} dBFS"
    data = {"level_dbfs": None if dbfs == -math.inf else round(dbfs, 1), "device": device}
    if dbfs < SILENT_DBFS:
        return warn("microphone", f"recorded {seconds:g} s on {device}: silent ({shown})",
                    "check that the microphone is plugged in and not muted, and raise its capture volume "
                    "(alsamixer, F4); then speak near it while intercom doctor runs", **data)
    if dbfs >= CLIPPING_DBFS:
        return warn("microphone", f"recorded {seconds:g} s on {device}: {shown}, the signal is clipping",
                    "lower the microphone's capture volume (alsamixer, F4)", **data)
    return ok("microphone", f"recorded {seconds:g} s on {device}: level {shown}", **data)


def judge_frame(width: int, height: int, mean: float, wanted: tuple[int, int]) -> Result:
    data = {"width": width, "height": height, "mean_brightness": round(mean, 1)}
    found = f"one frame, {width}x{height}, mean brightness {mean:.0f} of 255"
    if mean < DARK_MEAN:
        return warn("camera", f"{found}: the picture is black",
                    "check the lens cover, the light at the door, and the camera's ribbon cable", **data)
    if (width, height) != wanted:
        return warn("camera", f"{found}, not the configured {wanted[0]}x{wanted[1]}",
                    "set camera.width and camera.height to a size the camera offers", **data)
    return ok("camera", found, **data)



# --- the hardware, through the adapters ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hardware:
    """What the hardware checks use: the media settings (as ``intercom run`` builds them) and the pin factory name."""

    media: Any  #: intercom.media.MediaSettings
    pin_factory: str
    panel: Any  #: intercom.panel.PanelPins


def hardware_for(config: Config, simulate: bool) -> Hardware:
    """The devices ``intercom run`` would use; with ``simulate`` its simulated ones (file-backed ALSA devices, the
    synthetic camera, gpiozero's mock pins), set up by the same functions."""
    from intercom.app import media_settings, panel_pins, prepare_simulated_audio

    sim_dir = Path(config.matrix.state_dir) / "simulated"
    if simulate:
        prepare_simulated_audio(sim_dir)
    return Hardware(media=media_settings(config, simulate=simulate, sim_dir=sim_dir),
                    pin_factory="mock" if simulate else config.panel.pin_factory, panel=panel_pins(config.panel, config.button_pins()))


def _pcm(hw: Hardware, capture: bool) -> Any:
    """The PCM settings the media engine opens the microphone (``capture``) or the speaker with."""
    from intercom.media.alsa import PcmConfig

    s = hw.media
    return PcmConfig(device=s.capture_device if capture else s.playback_device, rate=s.sample_rate,
                     period_frames=s.sample_rate * s.period_ms // 1000,
                     periods=s.capture_periods if capture else s.playback_periods, pace=s.pace_audio)


def record(hw: Hardware, seconds: float = 1.0) -> bytes:
    """``seconds`` of the microphone through the media layer's capture thread (blocking)."""
    from intercom.media.alsa import AlsaCapture

    config = _pcm(hw, capture=True)
    wanted = int(seconds * config.rate) * config.channels * 2
    periods: list[bytes] = []
    enough = threading.Event()

    def on_period(data: bytes, _mic_time: float) -> None:
        periods.append(data)
        if sum(map(len, periods)) >= wanted:
            enough.set()

    capture = AlsaCapture(config, on_period)
    capture.start()
    try:
        got = enough.wait(seconds + 3)
    finally:
        capture.stop()
    if capture.error is not None:
        raise capture.error
    if not got:
        raise TimeoutError(f"the microphone delivered {sum(map(len, periods)) // 2} of {wanted // 2} samples")
    return b"".join(periods)[:wanted]


def tone(rate: int, seconds: float = TONE_SECONDS, hz: float = TONE_HZ, dbfs: float = TONE_DBFS) -> bytes:
    """A sine tone (peak ``dbfs``) with 10 ms fades, as s16le."""
    t = np.arange(int(seconds * rate)) / rate
    wave = np.sin(2 * np.pi * hz * t) * 10 ** (dbfs / 20)
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)
    return (wave * fade * 32767).astype("<i2").tobytes()


def play_tone(hw: Hardware) -> int:
    """Play :func:`tone` through the media layer's playback thread (blocking); return the periods written."""
    from intercom.media.alsa import AlsaPlayback

    config = _pcm(hw, capture=False)
    sound = tone(config.rate)
    pending = [sound[i:i + config.period_bytes] for i in range(0, len(sound), config.period_bytes)]
    total = len(pending)
    drained = threading.Event()

    def source(_timeout: float) -> bytes | None:
        if pending:
            return pending.pop(0)
        drained.set()
        return None

    playback = AlsaPlayback(config, source)
    playback.start()
    try:
        drained.wait(TONE_SECONDS + 3)
        time.sleep(config.period_seconds * config.periods + 0.1)  # let the card play what it holds
    finally:
        playback.stop()
    if playback.error is not None:
        raise playback.error
    if pending:
        raise TimeoutError(f"the speaker took {total - len(pending)} of {total} periods")
    return total


def grab(hw: Hardware) -> tuple[int, int, float]:
    """One camera frame: its size and mean brightness (blocking)."""
    from intercom.media.camera import CameraConfig, create_camera
    from intercom.media.still import grab_frame

    s = hw.media
    camera = create_camera(s.camera, CameraConfig(width=s.width, height=s.height, framerate=s.framerate,
                                                  bitrate_kbps=s.bitrate_kbps, keyframe_interval=s.keyframe_interval))
    if camera is None:
        raise RuntimeError("no camera is configured")
    frame = grab_frame(camera, timeout=TIMEOUTS["camera"] - 5)
    return frame.width, frame.height, float(frame.to_ndarray(format="gray").mean())


def claim_pins(hw: Hardware) -> tuple[list[int], str]:
    """Claim every panel pin through the front panel adapter (relay off throughout), read each bell button's level,
    and release them. Returns (the GPIOs of the buttons that read pressed, the pin factory's name)."""
    import gpiozero

    from intercom.panel import FrontPanel, make_pin_factory

    factory = make_pin_factory(hw.pin_factory)
    panel = FrontPanel(hw.panel, lambda button: None, pin_factory=factory)
    try:
        used = factory if factory is not None else gpiozero.Device.pin_factory
        pressed = [gpio for gpio in hw.panel.buttons if bool(used.pin(gpio).state) != hw.panel.button_pull_up]
        return pressed, type(used).__name__
    finally:
        panel.close()


async def check_microphone(hw: Hardware) -> Result:
    from intercom.media.alsa import AlsaError

    device = hw.media.capture_device
    try:
        pcm = await in_thread(record, hw)
    except AlsaError as exc:
        return fail("microphone", str(exc), _alsa_fix("capture", exc), device=device)
    except TimeoutError as exc:
        return fail("microphone", f"{device}: {exc}", "check the microphone's connection; arecord -l lists the "
                    "capture devices", device=device)
    return judge_microphone(level_dbfs(pcm), device, len(pcm) / 2 / hw.media.sample_rate)


async def check_speaker(hw: Hardware) -> Result:
    from intercom.media.alsa import AlsaError

    device = hw.media.playback_device
    try:
        await in_thread(play_tone, hw)
    except AlsaError as exc:
        return fail("speaker", str(exc), _alsa_fix("playback", exc), device=device)
    except TimeoutError as exc:
        return fail("speaker", f"{device}: {exc}", "check the speaker's connection; aplay -l lists the playback "
                    "devices", device=device)
    return ok("speaker", f"played a {TONE_SECONDS:g} s {TONE_HZ:g} Hz beep on {device}: you should have heard it "
              "(if not: check the wiring and the volume in alsamixer)", device=device)


def _alsa_fix(kind: str, exc: BaseException) -> str:
    setting = "audio.capture_device" if kind == "capture" else "audio.playback_device"
    lister = "arecord -L" if kind == "capture" else "aplay -L"
    if "busy" in str(exc).lower():
        return "another program uses the device (is the service running? sudo systemctl stop intercom)"
    return f"set {setting} to a device {lister} lists, by name (like plughw:CARD=Device,DEV=0)"


async def check_camera(hw: Hardware) -> Result:
    try:
        width, height, mean = await in_thread(grab, hw)
    except Exception as exc:
        fix = ("on a Raspberry Pi: sudo apt install python3-picamera2, and check the ribbon cable and rpicam-hello"
               if hw.media.camera == "picamera2" else "check camera.source in the config")
        return fail("camera", f"no picture from the {hw.media.camera} camera: {describe_exception(exc)}", fix)
    return judge_frame(width, height, mean, (hw.media.width, hw.media.height))


async def check_gpio(hw: Hardware) -> Result:
    p = hw.panel
    try:
        pressed, factory = await in_thread(claim_pins, hw)
    except Exception as exc:
        return fail("gpio", describe_exception(exc),
                    "check panel.pin_factory and the pin numbers in the config; is this user allowed to use the "
                    "pins (a member of the gpio group)?")
    buttons = ", ".join(f"GPIO{b}" for b in p.buttons)
    pins = (f"{'button' if len(p.buttons) == 1 else 'buttons'} {buttons}, call LED GPIO{p.call_led}, status LED "
            f"GPIO{p.status_led}, relay GPIO{p.relay} claimed with {factory}")
    pressed_level = "low" if p.button_pull_up else "high"
    released_level = "high" if p.button_pull_up else "low"
    if pressed:
        which = ", ".join(f"GPIO{b}" for b in pressed)
        return warn("gpio", f"{pins}; {'the button reads' if len(p.buttons) == 1 else 'buttons read'} pressed "
                            f"({which} {pressed_level})",
                    "release the button; if nobody presses it, check its wiring for a short, and "
                    "panel.button_pull_up (true: the button connects the pin to ground)", button_pressed=True)
    return ok("gpio", f"{pins}; {'the button reads' if len(p.buttons) == 1 else 'the buttons read'} released "
                      f"({buttons} {released_level})", button_pressed=False)



async def device_checks(config: Config, simulate: bool) -> dict[str, Result]:
    try:
        hw = await in_thread(hardware_for, config, simulate)
    except Exception as exc:
        return {name: fail(name, f"cannot set up the devices: {describe_exception(exc)}",
                           "check the [audio], [camera] and [panel] sections") for name in HARDWARE}
    # The microphone first, then the speaker: a beep during the recording would hide a dead microphone.
    async def audio() -> list[Result]:
        return [await bounded("microphone", lambda: check_microphone(hw)),
                await bounded("speaker", lambda: check_speaker(hw))]

    sound, camera, gpio = await asyncio.gather(audio(), bounded("camera", lambda: check_camera(hw)),
                                               bounded("gpio", lambda: check_gpio(hw)))
    return {r.name: r for r in [*sound, camera, gpio]}
