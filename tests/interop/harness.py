"""The Python side of the interop harness: Chromium with matrix-js-sdk pages, driven by playwright's Python API.

:class:`Browser` starts Debian's Chromium with a fresh profile through playwright; each
:class:`JsClient` is one page, one matrix-js-sdk client logged in as a user (a new device), calling through
js-sdk's legacy ``MatrixCall`` exactly as Element Web/Desktop does, or through MatrixRTC as Element Call does
(js-sdk's MatrixRTC session plus livekit-client: the ``rtc_*`` methods, page side ``js/src/rtc.js``). Every
method is a coroutine, so the door can run in the same event loop (see ``door.py``). The page-side API is
``js/src/harness.js`` (``window.H``).

The pages' console output and errors go to ``<workdir>/browser.log``, which :meth:`Browser.log_tail` returns for
failure messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
import wave as wave_module
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
JS_DIR = HERE / "js"
DIST_DIR = JS_DIR / "dist"

#: How long one request to the page may take (login + first sync + crypto init is the slowest, about a second).
REQUEST_TIMEOUT = 60.0


def write_voice_wav(path: Path, seconds: float = 10.0, rate: int = 48000) -> None:
    """What Chromium's fake microphone plays (looped): a voice-like warble, 150-350 Hz gliding, in syllables.

    Chromium's own fake microphone only beeps briefly twice a second, and the audio processing js-sdk asks for
    (noise suppression, echo cancellation, as Element does) leaves little of that; a voice-like signal passes.
    """
    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    pitch = 250 + 100 * np.sin(2 * np.pi * 0.9 * t)
    syllables = 0.4 + 0.6 * np.sin(2 * np.pi * 2.5 * t) ** 2
    wave = (np.sin(2 * np.pi * np.cumsum(pitch) / rate) + 0.3 * np.sin(4 * np.pi * np.cumsum(pitch) / rate))
    samples = (wave * syllables * 0.4 * 32767).astype("<i2")
    with wave_module.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())


class HarnessError(AssertionError):
    """The browser side failed or did not answer; the message carries the end of the browser log."""


@dataclass(frozen=True)
class Installation:
    """What ``tests/interop/setup`` made ready: the browser and the page served on 127.0.0.1."""

    chromium: str
    page_url: str  # http://127.0.0.1:<port>/index.html
    #: More Chromium flags (the network tests: an http page on a test host's address counted as a secure origin).
    extra_args: tuple[str, ...] = ()
    #: Accept any TLS certificate (the network tests' homeserver has one from a test CA).
    ignore_https_errors: bool = False


#: Flags that keep Chromium off the network (no background requests, no component or field-trial downloads, no
#: sync, no QUIC) with fake camera and microphone that need no permission prompt. Loopback candidates are allowed for
#: WebRTC: the tests keep media on 127.0.0.1. No --disable-features here: Chromium takes only the last one, and
#: playwright passes its own (which also switches off network time queries and preconnects).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-breakpad",
    "--no-pings",
    "--metrics-recording-only",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
)


class Browser:
    """One Chromium (a fresh profile in ``workdir``) driven by playwright's Python API.

    playwright (pinned in ``pyproject.toml``'s test extras) brings its own Node.js inside its wheel for its driver,
    so the machine's Node.js only builds the page (``setup``) and its version does not matter here.
    """

    def __init__(self, installation: Installation, workdir: Path) -> None:
        self.installation = installation
        self.workdir = workdir
        self.log_path = workdir / "browser.log"
        self._playwright: Any = None
        self._context: Any = None
        self._pages: dict[str, Any] = {}
        self._clients: list[JsClient] = []
        self.version: str | None = None

    def _log(self, text: str) -> None:
        try:
            with self.log_path.open("a", errors="replace") as log:
                log.write(f"{time.strftime('%H:%M:%S')} {text}\n")
        except OSError:
            pass  # the log is a help, never a reason to fail

    async def start(self) -> Browser:
        from playwright.async_api import async_playwright

        self.workdir.mkdir(parents=True, exist_ok=True)
        profile = self.workdir / "chromium-profile"
        shutil.rmtree(profile, ignore_errors=True)
        profile.mkdir()
        microphone = self.workdir / "microphone.wav"
        write_voice_wav(microphone)
        self._playwright = await async_playwright().start()
        try:
            self._context = await self._playwright.chromium.launch_persistent_context(
                str(profile), executable_path=self.installation.chromium, headless=True,
                args=[*CHROMIUM_FLAGS, *self.installation.extra_args,
                      f"--use-file-for-fake-audio-capture={microphone}"],
                ignore_https_errors=self.installation.ignore_https_errors,
                # playwright's own defaults are kept (they add more of the same kind); this one is ours alone
                ignore_default_args=["--mute-audio"],
                permissions=["camera", "microphone"], timeout=60000)
        except Exception as exc:
            await self._stop_playwright()
            raise HarnessError(f"Chromium did not start: {exc}\n{self.log_tail()}") from exc
        browser = self._context.browser
        self.version = browser.version if browser is not None else None
        return self

    async def client(self, name: str) -> JsClient:
        """A new page: one matrix-js-sdk client (not started yet)."""
        if self._context is None:
            raise HarnessError("the browser is not running")
        if name in self._pages:
            raise HarnessError(f"page {name} is already open")
        page = await self._context.new_page()
        self._pages[name] = page
        page.on("console", lambda msg: self._log(f"[{name}] {msg.type}: {msg.text}"))
        page.on("pageerror", lambda err: self._log(f"[{name}] pageerror: {getattr(err, 'stack', None) or err}"))
        page.on("crash", lambda _page: self._log(f"[{name}] page crashed"))
        try:
            await page.goto(self.installation.page_url)
            await page.wait_for_function("() => window.harnessReady === true", timeout=30000)
        except Exception as exc:
            raise HarnessError(f"[{name}] the page did not load: {exc}\n{self.log_tail()}") from exc
        client = JsClient(self, name)
        self._clients.append(client)
        return client

    async def evaluate(self, name: str, method: str, args: list[Any], timeout: float = REQUEST_TIMEOUT) -> Any:
        """``window.H[method](...args)`` in page ``name``, awaited; fails with the end of the browser log."""
        page = self._pages.get(name)
        if page is None:
            raise HarnessError(f"no page {name}")
        script = ("([m, a]) => { if (typeof window.H[m] !== 'function') "
                  "throw new Error(`the harness has no method ${m}`); return window.H[m](...a); }")
        try:
            return await asyncio.wait_for(page.evaluate(script, [method, args]), timeout)
        except asyncio.TimeoutError:
            raise HarnessError(f"the browser did not answer {method} within {timeout:.0f} s\n{self.log_tail()}") \
                from None
        except Exception as exc:
            self._log(f"[driver] {method} failed: {exc}")
            raise HarnessError(f"{method} failed in the browser: {exc}\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 60, grep: str | None = None) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no browser log)"
        if grep is not None:
            text = [line for line in text if grep in line]
        return "--- browser log (end) ---\n" + "\n".join(text[-lines:])

    async def _stop_playwright(self) -> None:
        playwright, self._playwright = self._playwright, None
        if playwright is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(playwright.stop(), 15)

    async def close(self) -> None:
        """Stop the clients' calls, close Chromium and playwright's driver."""
        for client in self._clients:
            with contextlib.suppress(Exception):
                await client.call("stop", timeout=5)
        context, self._context = self._context, None
        self._pages.clear()
        if context is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(context.close(), 15)
        await self._stop_playwright()


@contextlib.asynccontextmanager
async def open_browser(installation: Installation, workdir: Path):
    browser = Browser(installation, workdir)
    try:
        await browser.start()
        yield browser
    finally:
        await browser.close()


class JsClient:
    """One matrix-js-sdk client in a page. Method names follow ``window.H`` in ``js/src/harness.js``."""

    def __init__(self, browser: Browser, name: str) -> None:
        self.browser = browser
        self.name = name
        self.user_id: str | None = None
        self.device_id: str | None = None

    async def call(self, method: str, *args: Any, timeout: float = REQUEST_TIMEOUT) -> Any:
        return await self.browser.evaluate(self.name, method, list(args), timeout=timeout)

    async def start(self, homeserver_url: str, user, *, encryption: bool = False, trickle_only: bool = False,
                    loopback: bool = True) -> dict:
        """Log in as ``user`` (a new device). ``trickle_only``: js-sdk's SDP carries no candidates; they all go in
        ``m.call.candidates`` (as with Element when gathering is slow). ``loopback=False`` signals every candidate
        (host, server-reflexive, relay) instead of 127.0.0.1 only: for a page on a test host in a network
        namespace."""
        info = await self.call("start", {"baseUrl": homeserver_url, "userId": user.user_id,
                                         "password": user.password, "encryption": encryption,
                                         "trickleOnly": trickle_only, "loopback": loopback})
        self.user_id, self.device_id = info["userId"], info["deviceId"]
        if not info.get("supportsCalls"):
            raise HarnessError(f"js-sdk says this browser cannot make calls: {info}")
        return info

    async def place(self, room_id: str, *, video: bool = True, invitee: str | None = None) -> str:
        return await self.call("place", room_id, {"video": video, "invitee": invitee})

    async def answer(self, call_id: str, *, video: bool | None = None) -> dict:
        """``video=False`` answers a video call without a camera (audio only from this side)."""
        return await self.call("answer", call_id, {"video": video})

    async def reject(self, call_id: str) -> None:
        await self.call("reject", call_id)

    async def hangup(self, call_id: str, reason: str = "user_hangup") -> None:
        await self.call("hangup", call_id, reason)

    async def calls(self) -> list[dict]:
        return await self.call("calls")

    async def state(self, call_id: str) -> dict:
        return await self.call("call", call_id)

    async def stats(self, call_id: str) -> dict:
        return await self.call("stats", call_id)

    async def events(self, type_: str | None = None, **match: Any) -> list[dict]:
        """m.call.* events seen in the timeline (decrypted), optionally of one type and with content fields equal."""
        events = await self.call("events")
        return [e for e in events if (type_ is None or e["type"] == type_)
                and all(e["content"].get(k) == v for k, v in match.items())]

    # -- waiting ----------------------------------------------------------------------------------------------------

    async def wait_for(self, probe: Callable[[], Awaitable[Any]], what: str, timeout: float = 20.0,
                       interval: float = 0.1) -> Any:
        """Poll ``probe`` until it returns something truthy; fail with the browser log otherwise."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = await probe()
            if last:
                return last
            await asyncio.sleep(interval)
        raise HarnessError(f"[{self.name}] timed out after {timeout:.0f} s waiting for {what}; last: {last!r}\n"
                           f"calls: {json.dumps(await self.calls(), indent=1)[:4000]}\n{self.browser.log_tail()}")

    async def wait_incoming(self, *, sender_room: str | None = None, timeout: float = 20.0) -> dict:
        async def probe():
            return next((c for c in await self.calls() if c["direction"] == "inbound"
                         and (sender_room is None or c["roomId"] == sender_room)), None)
        return await self.wait_for(probe, "an incoming call", timeout)

    async def wait_state(self, call_id: str, *states: str, timeout: float = 20.0) -> dict:
        async def probe():
            call = await self.state(call_id)
            return call if call["state"] in states else None
        return await self.wait_for(probe, f"call {call_id} to be {' or '.join(states)}", timeout)

    async def wait_event(self, type_: str, timeout: float = 20.0, **match: Any) -> dict:
        async def probe():
            found = await self.events(type_, **match)
            return found[0] if found else None
        return await self.wait_for(probe, f"{type_} {match}", timeout)

    async def wait_media(self, call_id: str, *, video: bool = True, timeout: float = 20.0, raw: bool = False,
                         min_frames: int = 10) -> dict:
        """Until the remote video decodes (``min_frames`` frames of non-zero size) and remote audio carries energy."""
        method = "rawStats" if raw else "stats"

        async def probe():
            stats = await self.call(method, call_id)
            audio = stats.get("audio") or {}
            element = stats.get("element") or {}
            audio_ok = audio.get("totalAudioEnergy", 0) > 0 and element.get("peakRms", 0) > 0.01
            if not video:
                return stats if audio_ok else None
            v = stats.get("video") or {}
            video_ok = v.get("framesDecoded", 0) >= min_frames and v.get("frameWidth", 0) > 0
            return stats if audio_ok and video_ok else None
        return await self.wait_for(probe, f"media on call {call_id}", timeout)

    async def live_media(self, call_id: str, *, video: bool = True, raw: bool = False, seconds: float = 1.0) -> dict:
        """Media that keeps arriving: waits for it (:meth:`wait_media`), then checks that in ``seconds`` more video
        frames were decoded and more audio energy arrived. Returns the later stats with ``fps`` added."""
        method = "rawStats" if raw else "stats"
        first = await self.wait_media(call_id, video=video, raw=raw)
        await asyncio.sleep(seconds)
        later = await self.call(method, call_id)
        assert later["audio"]["totalAudioEnergy"] > first["audio"]["totalAudioEnergy"], (first, later)
        assert later["audio"]["packets"] > first["audio"]["packets"], (first, later)
        if video:
            frames = later["video"]["framesDecoded"] - first["video"]["framesDecoded"]
            assert frames > 0, (first, later)
            later["fps"] = round(frames / seconds, 1)
        return later

    # -- MatrixRTC (Element Call's calls: js-sdk's MatrixRTC session + livekit-client; page side js/src/rtc.js) ------

    async def rtc_join(self, room_id: str, ring: str | bool | None = None, *, intent: str = "video",
                       discovery: str = "auto", focus_selection: str = "multi_sfu", encrypt: bool | None = None,
                       open_slot: bool = False, video_height: int = 720, timeout: float = REQUEST_TIMEOUT) -> dict:
        """Join the room's MatrixRTC call as Element Call does and publish camera and microphone.

        ``ring`` (a user id, or True) makes js-sdk send its ring notification once the membership is in (it
        mentions the room, not the user: that is js-sdk 43's shape). ``discovery``: ``"auto"`` (the MSC4143
        transports endpoint, then ``.well-known``), ``"transports"`` or ``"well-known"`` only. ``focus_selection``:
        ``"multi_sfu"`` (Element Call's default mode) or ``"oldest_membership"`` (its legacy mode). ``encrypt``:
        media E2EE, by default as the room is encrypted (as Element Call). ``open_slot``: open the room's
        ``org.matrix.msc4143.rtc.slot`` first (as Element Web does with its slots labs flag).
        Returns the call (:meth:`rtc_call`) once LiveKit is connected and the tracks are published."""
        return await self.call("rtcJoin", room_id, {
            "ring": ring, "intent": intent, "discovery": discovery, "focusSelection": focus_selection,
            "encrypt": encrypt, "openSlot": open_slot, "videoHeight": video_height}, timeout=timeout)

    async def rtc_leave(self, *, timeout: float = 5.0) -> dict:
        """Leave the session (js-sdk fires the delayed leave, or sends an empty member event) and LiveKit.
        Returns ``{t, wall, membershipLeaveSent}``."""
        return await self.call("rtcLeave", {"timeout": int(timeout * 1000)}, timeout=timeout + 10)

    async def rtc_decline(self, room_id: str, notification_event_id: str) -> str:
        """Decline a ring as js-sdk does (``org.matrix.msc4310.rtc.decline``); returns the decline's event id."""
        return await self.call("rtcDecline", room_id, notification_event_id)

    async def rtc_send_notification(self, room_id: str, content: dict) -> str:
        """Send an ``org.matrix.msc4075.rtc.notification`` of any content by hand; returns its event id."""
        return await self.call("rtcSendNotification", room_id, content)

    async def rtc_rings(self, room_id: str | None = None) -> list[dict]:
        """Every ring notification seen (own ones too, ``own``), decrypted: ``eventId``, ``sender``, ``content``,
        ``originServerTs``, ``t``/``wall`` (page clock / Date.now when seen), ``encrypted``, ``mentionsMe``,
        ``mentionsRoom``, and js-sdk 43's verdict for this receiver: ``valid`` / ``invalidReason``."""
        rings = await self.call("rtcRings")
        return [r for r in rings if room_id is None or r["roomId"] == room_id]

    async def rtc_declines(self) -> list[dict]:
        return await self.call("rtcDeclines")

    async def rtc_events(self, type_: str | None = None) -> list[dict]:
        """Raw MatrixRTC events seen (member state, slot, notification, decline), decrypted."""
        events = await self.call("rtcEvents")
        return [e for e in events if type_ is None or e["type"] == type_]

    async def rtc_to_device(self) -> list[dict]:
        """``io.element.call.encryption_keys`` to-device messages received (decrypted content, sender)."""
        return await self.call("rtcToDevice")

    async def rtc_keys(self) -> list[dict]:
        """Media keys handed to LiveKit's key provider: ``identity``, ``index``, ``key`` (base64), ``own``."""
        return await self.call("rtcKeys")

    async def rtc_members(self, room_id: str) -> dict:
        """js-sdk's memberships of the room's session now (``members``: user, device, memberId,
        rtcBackendIdentity, transport...), their ``history``, the raw member ``stateEvents`` and the ``slot``."""
        return await self.call("rtcMembers", room_id)

    async def rtc_call(self) -> dict | None:
        """The current (or last) call: transport and its source, token claims, LiveKit state, participants and
        their tracks (``encrypted`` as LiveKit announced them), E2EE errors, ``times`` (page clock and wall)."""
        return await self.call("rtcCall")

    async def rtc_stats(self) -> dict | None:
        """:meth:`rtc_call` plus getStats of each remote participant's ``video`` and ``audio`` and the
        ``outbound`` tracks."""
        return await self.call("rtcStats")

    async def _rtc_wait(self, probe: Callable[[], Awaitable[Any]], what: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            found = await probe()
            if found:
                return found
            if time.monotonic() >= deadline:
                call = await self.call("rtcCall")
                raise HarnessError(f"[{self.name}] timed out after {timeout:.0f} s waiting for {what}\n"
                                   f"call: {json.dumps(call, indent=1, default=str)[:6000]}\n"
                                   f"{self.browser.log_tail()}")
            await asyncio.sleep(0.1)

    async def wait_rtc_ring(self, room_id: str | None = None, *, sender: str | None = None,
                            timeout: float = 20.0) -> dict:
        """Until a ring notification from someone else (``sender`` if given) arrives; returns it."""
        async def probe():
            return next((r for r in await self.rtc_rings(room_id) if not r["own"]
                         and (sender is None or r["sender"] == sender)), None)
        return await self._rtc_wait(probe, f"a ring notification{f' from {sender}' if sender else ''}", timeout)

    async def wait_rtc_members(self, room_id: str, predicate: Callable[[list[dict]], bool], what: str, *,
                               timeout: float = 20.0) -> dict:
        """Until js-sdk's memberships of the room satisfy ``predicate(members)``; returns :meth:`rtc_members`."""
        async def probe():
            members = await self.rtc_members(room_id)
            return members if predicate(members["members"]) else None
        return await self._rtc_wait(probe, what, timeout)

    async def wait_rtc_frames(self, n: int = 10, *, identity: str | None = None, timeout: float = 30.0) -> dict:
        """Until a remote participant's (``identity`` if given) video decoded ``n`` frames of non-zero size, as both
        getStats and the <video> element count them. Returns :meth:`rtc_stats` with ``participant`` set to it."""
        async def probe():
            stats = await self.rtc_stats()
            for p in (stats or {}).get("participants", []):
                if identity is not None and p["identity"] != identity:
                    continue
                video, element = p.get("video") or {}, p.get("element") or {}
                if video.get("framesDecoded", 0) >= n and video.get("frameWidth", 0) > 0 \
                        and element.get("videoFrames", 0) >= n:
                    return {**stats, "participant": p}
            return None
        return await self._rtc_wait(probe, f"{n} decoded video frames from {identity or 'a remote participant'}",
                                    timeout)

    async def wait_rtc_audio(self, *, identity: str | None = None, min_rms: float = 0.01,
                             timeout: float = 30.0) -> dict:
        """Until a remote participant's audio carries energy (getStats ``totalAudioEnergy``) and the analyser on the
        played <audio> heard more than ``min_rms``. Returns :meth:`rtc_stats` with ``participant`` set."""
        async def probe():
            stats = await self.rtc_stats()
            for p in (stats or {}).get("participants", []):
                if identity is not None and p["identity"] != identity:
                    continue
                audio, element = p.get("audio") or {}, p.get("element") or {}
                if audio.get("totalAudioEnergy", 0) > 0 and element.get("peakRms", 0) > min_rms:
                    return {**stats, "participant": p}
            return None
        return await self._rtc_wait(probe, f"audio from {identity or 'a remote participant'}", timeout)
