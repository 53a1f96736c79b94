"""``intercom run``: build the adapters from the config, connect them through the orchestrator, run until stopped.

This is the composition root, the one module that imports every layer. ``simulate=True`` swaps the hardware for
what runs anywhere: gpiozero's MockFactory for the panel, ALSA ``file`` devices for the microphone and speaker,
and the synthetic camera; everything else (Matrix, aiortc, the core) is the real thing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import signal
import string
import time
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from intercom.core import (
    CallState,
    CallTimings,
    CommandSettings,
    CoreSettings,
    DoorCore,
    FaultChanged,
    HangupRequested,
    Ignored,
    TrustRequested,
    TrustUpdated,
    RtcAvailabilityChanged,
    TurnAvailabilityChanged,
)
from intercom.matrix import Credential, MatrixAdapter, MatrixSettings
from intercom.matrix import load_household_pins
from intercom.media import IceServer, MediaEngine, MediaSettings
from intercom.media.livekit import RtcMediaEngine
from intercom.orchestrator import Orchestrator, describe_call
from intercom.panel import FrontPanel, PanelPins, make_pin_factory
from intercom.service.config import Config, PanelConfig
from intercom.service.bootconfig import watch_rejected_card
from intercom.service.control import ControlServer
from intercom.service.process import process_figures
from intercom.service.systemd import Notifier
from intercom.service.watchdog import LoopWatchdog, limit_for
from intercom.rtccalls import RtcCalls
from intercom.snapshots import Snapshots, SnapshotStore

log = logging.getLogger("intercom")

#: While waiting for the homeserver at start, extend systemd's start timeout by this much, this often.
START_EXTEND_SECONDS = 60
#: How often the door asks again whether the homeserver names a MatrixRTC focus (s).
RTC_RECHECK = 600.0
START_EXTEND_EVERY = 20


def _from_config(settings: type, section: object) -> Any:
    """``settings`` (a core dataclass) with every field the config ``section`` has under the same name; the rest
    keep the core's defaults (those the config file does not expose)."""
    names = {f.name for f in dataclasses.fields(section)}
    return settings(**{f.name: getattr(section, f.name) for f in dataclasses.fields(settings) if f.name in names})


def core_settings(config: Config, party_id: str) -> CoreSettings:
    residents, buttons = config.household()
    return CoreSettings(
        user_id=config.matrix.user_id, party_id=party_id, residents=residents, buttons=buttons,
        require_encryption=config.matrix.require_encryption, timings=_from_config(CallTimings, config.calls),
        commands=_from_config(CommandSettings, config.panel))


def media_settings(config: Config, *, simulate: bool, sim_dir: Path | None = None) -> MediaSettings:
    audio, camera = config.audio, config.camera
    settings = MediaSettings(
        capture_device=audio.capture_device, playback_device=audio.playback_device,
        echo_cancellation=audio.echo_cancellation, camera=camera.source, width=camera.width, height=camera.height,
        framerate=camera.framerate, bitrate_kbps=camera.bitrate_kbps, keyframe_interval=camera.keyframe_interval,
        host_addresses=config.network.ice_addresses or None)
    if not simulate:
        return settings
    assert sim_dir is not None
    return dataclasses.replace(
        settings, camera="synthetic", pace_audio=True,
        capture_device=f'intercom_file_mic:IN="{sim_dir / "microphone.raw"}"',
        playback_device=f'intercom_file_speaker:OUT="{sim_dir / "speaker.raw"}"')


def panel_pins(p: PanelConfig, buttons: Sequence[int] = ()) -> PanelPins:
    """The front panel's wiring from the ``[panel]`` section (which holds its defaults and checks it) and the bell
    buttons' GPIOs in the order of the config's buttons (``Config.button_pins()``; default: ``panel.button_pin``)."""
    first, *more = buttons or (p.button_pin,)
    return PanelPins(button=first, extra_buttons=tuple(more), button_pull_up=p.button_pull_up,
                     debounce_ms=p.debounce_ms, call_led=p.call_led_pin, status_led=p.status_led_pin,
                     relay=p.relay_pin, relay_active_high=p.relay_active_high)


def prepare_simulated_audio(sim_dir: Path, seconds: float = 120.0) -> None:
    """The simulated microphone: a recording of a visitor (a speech-like warble), and ALSA pointed at the files."""
    import numpy as np

    from intercom.media.filedevices import use_alsa_file_devices

    sim_dir.mkdir(parents=True, exist_ok=True)
    mic = sim_dir / "microphone.raw"
    if not mic.exists():
        rate = 48000
        t = np.arange(int(seconds * rate)) / rate
        pitch = 220 + 80 * np.sin(2 * np.pi * 0.7 * t)  # a voice-like glide
        syllables = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
        wave = np.sin(2 * np.pi * np.cumsum(pitch) / rate) * syllables * 0.3
        mic.write_bytes((wave * 32767).astype("<i2").tobytes())
    use_alsa_file_devices()


def _random_party_id() -> str:
    return "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(8))


class Service:
    """One running door: the core, its adapters, the control socket and systemd."""

    def __init__(self, config: Config, *, simulate: bool = False, control_socket: str | os.PathLike,
                 notifier: Notifier | None = None) -> None:
        self.config = config
        self.simulate = simulate
        self.control_path = Path(control_socket)
        self.notifier = notifier or Notifier()
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()
        #: What ``run`` returns: 0 for a stop asked for, non-zero when the door ends itself to be restarted.
        self.exit_code = 0

    async def run(self) -> int:
        config = self.config
        state_dir = Path(config.matrix.state_dir)
        sim_dir = state_dir / "simulated"
        if self.simulate:
            prepare_simulated_audio(sim_dir)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)

        settings = core_settings(config, _random_party_id())
        self.core = DoorCore(settings, pins=load_household_pins(state_dir, [r.user_id for r in settings.residents]))
        orchestrator = self.orchestrator = Orchestrator(self.core)
        self.pin_factory = make_pin_factory("mock" if self.simulate else config.panel.pin_factory)
        # gpiozero's thread calls on_press; the panel has already lit the LED.
        self.panel = FrontPanel(panel_pins(config.panel, config.button_pins()), orchestrator.button_pressed_threadsafe,
                                pin_factory=self.pin_factory)
        self.media = MediaEngine(media_settings(config, simulate=self.simulate, sim_dir=sim_dir),
                                 on_state=orchestrator.media_state, on_candidates=orchestrator.local_candidates)
        kind, secret = config.matrix.read_secret()
        self.matrix = MatrixAdapter(MatrixSettings(
            homeserver=config.matrix.homeserver, user_id=config.matrix.user_id, residents=settings.residents,
            state_dir=state_dir, device_name=config.matrix.device_name, credential=Credential(kind, secret)),
            on_event=orchestrator.feed)

        stun = [IceServer(urls=(uri,)) for uri in config.network.stun_servers]
        #: Whether the homeserver offers TURN: "unknown" until the check at start, then "available" or "none",
        #: renewed at every call.
        self.turn_state = "unknown"
        self._turn_check: asyncio.Future | None = None
        self._rtc_check: asyncio.Future | None = None

        async def ice_servers() -> list[IceServer]:
            # The homeserver's TURN list, plus the STUN servers the owner configured (for homeservers without TURN).
            turn = [IceServer(urls=tuple(t.urls), username=t.username, credential=t.credential)
                    for t in await self.matrix.turn_servers()]
            self._set_turn(bool(turn))
            return turn + stun

        # MatrixRTC (Element Call) calls: LiveKit media beside the aiortc engine (one call at a time uses the devices).
        self.rtc_media = RtcMediaEngine(media_settings(config, simulate=self.simulate, sim_dir=sim_dir),
                                        on_state=orchestrator.media_state,
                                        on_peer=lambda *peer: self.rtc.peer_changed(*peer))
        self.rtc = RtcCalls(self.matrix.rtc, self.rtc_media, encrypted=self.matrix.room_is_encrypted,
                            keys=self.matrix)
        self.matrix.on_media_key = self.rtc.media_key
        #: Whether the homeserver names a MatrixRTC focus: "unknown" until checked after start.
        self.rtc_state = "unknown"

        self.snapshots = Snapshots(self.media, self.matrix,
                                   SnapshotStore(state_dir / "snapshots", config.camera.snapshots_kept,
                                                 config.camera.snapshots_max_mb * 1_000_000),
                                   owner=self.core.settings.owner, ring_pictures=config.camera.ring_picture)
        orchestrator.attach(signalling=self.matrix, media=self.media, panel=self.panel, ice_servers=ice_servers,
                            snapshots=self.snapshots, rtc=self.rtc)
        self.control = ControlServer(self.control_path, self._command)
        await self.control.start()
        log.info("intercom starting: door %s, residents %s%s", config.matrix.user_id, ", ".join(
            f"{r.user_id} ({r.room_id or 'room made by the door'})" for r in self.core.settings.residents),
            " (simulated hardware)" if self.simulate else "")
        self.loop_watchdog = LoopWatchdog(limit_for(self.notifier.watchdog_interval))
        self.loop_watchdog.start()
        tasks = [asyncio.ensure_future(self._start_and_sync()), asyncio.ensure_future(self._watchdog()),
                 asyncio.ensure_future(self.loop_watchdog.heartbeat()),
                 asyncio.ensure_future(watch_rejected_card(lambda fault: self._set_fault("boot-config", fault)))]
        try:
            await self._stop.wait()
        finally:
            await self._shutdown(tasks)
        return self.exit_code

    async def _start_and_sync(self) -> None:
        try:
            await self.matrix.start()  # retries until the homeserver answers
            self.notifier.ready(f"homeserver {self.config.matrix.homeserver} reached")
            self.ready.set()
            log.info("ready: homeserver reached")
            self._turn_check = asyncio.ensure_future(self._check_turn())
            self._rtc_check = asyncio.ensure_future(self._check_rtc())
            await self.matrix.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            # The adapter retries everything the homeserver can say, so this is a bug: end the process, and
            # systemd (Restart=always) starts a fresh one rather than leaving a door that rings nobody.
            log.exception("Matrix stopped unexpectedly; the door exits so that it is restarted")
            self.exit_code = 1
            self._stop.set()

    def _set_turn(self, available: bool) -> None:
        """What the homeserver's TURN endpoint said; the core words the notice of a call with no network path."""
        state = "available" if available else "none"
        if state != self.turn_state:
            self.turn_state = state
            self.orchestrator.feed(TurnAvailabilityChanged(available=available))

    async def _check_turn(self) -> None:
        """Ask once at start whether the homeserver offers TURN; say plainly, once, what its absence means."""
        self._set_turn(bool(await self.matrix.turn_servers()))
        if self.turn_state == "none":
            log.warning("the homeserver offers no TURN server: calls with a phone outside the home network will "
                        "often fail to connect. Ask the homeserver's admin to set up TURN (Synapse: turn_uris), "
                        "or list STUN servers under [network] stun_servers in %s", self.config.path)

    async def _check_rtc(self) -> None:
        """Ask at start, and again every RTC_RECHECK seconds, whether the homeserver names a MatrixRTC focus: with
        one, residents with ``calls = "auto"`` are rung by MatrixRTC (Element X can take only that)."""
        while True:
            available = await self.rtc.available()
            state = "available" if available else "none"
            if state != self.rtc_state:
                self.rtc_state = state
                log.info("MatrixRTC: the homeserver %s", "names a focus: Element Call rings are possible" if available
                         else "names no MatrixRTC focus: residents are rung by legacy calls")
                self.orchestrator.feed(RtcAvailabilityChanged(available=available))
            await asyncio.sleep(RTC_RECHECK)

    async def _watchdog(self) -> None:
        """Fed by the main loop: if the loop hangs, the pings stop and systemd restarts the service (and before
        that, :class:`~intercom.service.watchdog.LoopWatchdog` ends it, saying where the loop is stuck)."""
        interval = self.notifier.watchdog_interval
        last_extend = 0.0
        while True:
            if not self.ready.is_set() and time.monotonic() - last_extend >= START_EXTEND_EVERY:
                self.notifier.extend_timeout(START_EXTEND_SECONDS)
                last_extend = time.monotonic()
            if interval is not None:
                self.notifier.watchdog()
            self.notifier.status(self.status_line())
            await asyncio.sleep(min(interval or START_EXTEND_EVERY, START_EXTEND_EVERY))

    def _set_fault(self, source: str, fault: str | None) -> None:
        """Record (or clear) one source's fault; the core shows the error pattern while any is set."""
        self.orchestrator.feed(FaultChanged(fault=fault, source=source))

    def status_line(self) -> str:
        core = self.core
        online = "online" if core.online else "offline"
        return f"{core.state.value}, LEDs {core.led.value}, homeserver {online}"

    def status(self) -> dict[str, Any]:
        core, last = self.core, self.orchestrator.last_call
        return {
            "ok": True,
            "call_state": core.state.value,
            "call_id": core.call_id,
            "direction": core.direction.value if core.direction else None,
            "led": core.led.value,
            "homeserver": "online" if core.online else "offline",
            "room_problem": core.room_problem(),
            "fault": core.fault,
            "relay_active": self.panel.relay_active,
            "turn": self.turn_state,
            "matrixrtc": self.rtc_state,
            "network_warning": None if self.turn_state != "none" else (
                "the homeserver offers no TURN server: calls from outside the home network may fail"),
            "last_call": None if last is None else {
                "summary": describe_call(last), "call_id": last.call_id, "direction": last.direction.value,
                "outcome": last.outcome.value, "reason": last.reason, "duration": round(last.duration, 1)},
            "last_opening": self.orchestrator.last_opening,
            "trust": core.trust_status(),
            "household": core.household_status(),
            "ring": core.ring_status(),
            "process": process_figures(),
        }

    async def _command(self, command: str) -> dict[str, Any]:
        if command == "status":
            return self.status()
        words = command.split()
        if words and words[0] == "press":
            buttons = len(self.core.settings.buttons)
            if len(words) > 2 or (len(words) == 2 and not (words[1].isdigit() and 1 <= int(words[1]) <= buttons)):
                return {"ok": False, "error": f"press takes a button number from 1 to {buttons}"}
            await self.press(int(words[1]) - 1 if len(words) == 2 else 0)
            return {"ok": True, "pressed": True, "led": self.core.led.value, "ring": self.core.ring_status()}
        if words and words[0] == "trust":
            return self._trust(words[1:])
        return {"ok": False, "error": f"unknown command {command[:40]!r}; use press, status or trust"}

    def _trust(self, args: list[str]) -> dict[str, Any]:
        """``intercom trust [--resident USER]``: without more, what the door trusts of that resident (default: the
        first); ``DEVICE`` or ``--identity`` confirms (the resident found by the device when not named)."""
        user_id = ""
        if len(args) >= 2 and args[0] == "--resident":
            user_id, args = args[1], args[2:]
            if self.core.settings.resident(user_id) is None:
                return {"ok": False, "error": f"{user_id[:255]} is not a resident"}
        if not args:
            return {"ok": True, "trust": self.core.trust_status(user_id or None)}
        if len(args) != 1:
            return {"ok": False, "error": "give one device ID, or --identity"}
        event = (TrustRequested(identity=True, user_id=user_id) if args[0] == "--identity"
                 else TrustRequested(device_id=args[0], user_id=user_id))
        actions = self.orchestrator.feed(event)
        updated = next((a for a in actions if isinstance(a, TrustUpdated)), None)
        if updated is not None:
            return {"ok": True, "trust": self.core.trust_status(updated.user_id or None)}
        why = next((a.reason for a in actions if isinstance(a, Ignored)), "nothing changed")
        return {"ok": False, "error": why, "trust": self.core.trust_status(user_id or None)}

    async def press(self, button: int = 0) -> None:
        """Exactly what the physical button (0: the first) does: on simulated hardware, its pin is driven."""
        if self.simulate:
            pin = self.pin_factory.pin(panel_pins(self.config.panel, self.config.button_pins()).buttons[button])
            pressed, released = (pin.drive_low, pin.drive_high) if self.config.panel.button_pull_up else (
                pin.drive_high, pin.drive_low)
            pressed()
            await asyncio.sleep(0.15)
            released()
        else:
            self.panel.press(button)
        await asyncio.sleep(0)  # let the threadsafe feed run before the reply

    async def _shutdown(self, tasks: list[asyncio.Task]) -> None:
        log.info("stopping")
        self.loop_watchdog.stop()  # from here systemd's TimeoutStopSec bounds what is left
        self.notifier.stopping()
        if self.core.state is not CallState.IDLE:
            self.orchestrator.feed(HangupRequested())
        await self.orchestrator.flush(timeout=5)
        tasks = [*tasks, *(t for t in (self._turn_check, self._rtc_check) if t is not None)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.orchestrator.close()
        with contextlib.suppress(Exception):
            await self.media.close_all()
        with contextlib.suppress(Exception):
            await self.rtc_media.close_all()
        with contextlib.suppress(Exception):
            await self.matrix.close()
        self.panel.close()
        await self.control.close()
        self.notifier.close()
        log.info("stopped")

    def stop(self) -> None:
        self._stop.set()


def configure_logging(verbose: bool = False) -> None:
    """One line per event; journald adds the time, a terminal gets it from us."""
    import sys

    fmt = "%(levelname)s %(message)s" if not sys.stderr.isatty() else "%(asctime)s %(levelname)s %(message)s"
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=fmt)
    for noisy in ("aioice", "aiortc", "nio", "peewee", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # nio warns about every event that fails its schema: what a peer sends, so a flood would fill the journal.
    # The door logs what it ignores itself (at debug).
    logging.getLogger("nio.events").setLevel(logging.ERROR)
