"""The Python side of the interop harness: Chromium with matrix-js-sdk pages, driven through ``js/driver.mjs``.

:class:`Browser` starts the Node driver (playwright-core) with Debian's Chromium and a fresh profile; each
:class:`JsClient` is one page, one matrix-js-sdk client logged in as a user (a new device), calling through
js-sdk's legacy ``MatrixCall`` exactly as Element Web/Desktop does. Every method is a coroutine, so the door can run
in the same event loop (see ``door.py``). The page-side API is ``js/src/harness.js`` (``window.H``).

Requests and answers are JSON lines on the driver's stdin/stdout. The driver's and the browser's console output go
to ``<workdir>/browser.log``, which :meth:`Browser.log_tail` returns for failure messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
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
DRIVER = JS_DIR / "driver.mjs"

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
    """What ``tests/interop/setup`` made ready: the browser, Node, and the page served on 127.0.0.1."""

    chromium: str
    node: str
    page_url: str  # http://127.0.0.1:<port>/index.html


class Browser:
    """One Node driver process with one Chromium (a fresh profile in ``workdir``)."""

    def __init__(self, installation: Installation, workdir: Path) -> None:
        self.installation = installation
        self.workdir = workdir
        self.log_path = workdir / "browser.log"
        self._proc: asyncio.subprocess.Process | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None
        self._clients: list[JsClient] = []
        self.version: str | None = None

    async def start(self) -> Browser:
        self.workdir.mkdir(parents=True, exist_ok=True)
        profile = self.workdir / "chromium-profile"
        shutil.rmtree(profile, ignore_errors=True)
        profile.mkdir()
        microphone = self.workdir / "microphone.wav"
        write_voice_wav(microphone)
        stderr = (self.workdir / "driver.stderr").open("ab")
        try:
            self._proc = await asyncio.create_subprocess_exec(
                self.installation.node, str(DRIVER), cwd=str(JS_DIR),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr,
                env=dict(os.environ, NODE_NO_WARNINGS="1"), start_new_session=True, limit=16 * 1024 * 1024)
        finally:
            stderr.close()
        self._reader = asyncio.ensure_future(self._read())
        result = await self.request("launch", executable=self.installation.chromium, profile=str(profile),
                                    log=str(self.log_path), microphone=str(microphone))
        self.version = result.get("version")
        return self

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while True:
            line = await self._proc.stdout.readline()
            if not line:
                break
            try:
                message = json.loads(line)
            except ValueError:
                continue
            future = self._pending.pop(message.get("id"), None)
            if future is not None and not future.done():
                future.set_result(message)
        error = HarnessError(f"the browser driver exited ({self._proc.returncode})\n{self.log_tail()}")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()

    async def request(self, op: str, *, timeout: float = REQUEST_TIMEOUT, **fields: Any) -> Any:
        if self._proc is None or self._proc.stdin is None or self._proc.returncode is not None:
            raise HarnessError(f"the browser driver is not running\n{self.log_tail()}")
        request_id = next(self._ids)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self._proc.stdin.write((json.dumps({"id": request_id, "op": op, **fields}) + "\n").encode())
        await self._proc.stdin.drain()
        try:
            message = await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            self._pending.pop(request_id, None)
            what = f"{op} {fields.get('method', '')}".strip()
            raise HarnessError(f"the browser did not answer {what} within {timeout:.0f} s\n{self.log_tail()}") from None
        if not message.get("ok"):
            what = f"{op} {fields.get('method', '')}".strip()
            raise HarnessError(f"{what} failed in the browser: {message.get('error')}\n{self.log_tail()}")
        return message.get("result")

    async def client(self, name: str) -> JsClient:
        """A new page: one matrix-js-sdk client (not started yet)."""
        await self.request("open", page=name, url=self.installation.page_url)
        client = JsClient(self, name)
        self._clients.append(client)
        return client

    def log_tail(self, lines: int = 60, grep: str | None = None) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no browser log)"
        if grep is not None:
            text = [line for line in text if grep in line]
        return "--- browser log (end) ---\n" + "\n".join(text[-lines:])

    async def close(self) -> None:
        """Stop the clients' calls, close Chromium and the driver; kill them if they do not go."""
        proc = self._proc
        if proc is None:
            return
        for client in self._clients:
            with contextlib.suppress(Exception):
                await client.call("stop", timeout=5)
        if proc.returncode is None:
            with contextlib.suppress(Exception):
                await self.request("close", timeout=15)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                await proc.wait()
        # Chromium runs in the driver's process group (start_new_session): make sure nothing of it is left.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        self._proc = None


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
        return await self.browser.request("call", page=self.name, method=method, args=list(args), timeout=timeout)

    async def start(self, homeserver_url: str, user, *, encryption: bool = False, trickle_only: bool = False) -> dict:
        """Log in as ``user`` (a new device). ``trickle_only``: js-sdk's SDP carries no candidates; they all go in
        ``m.call.candidates`` (as with Element when gathering is slow)."""
        info = await self.call("start", {"baseUrl": homeserver_url, "userId": user.user_id,
                                         "password": user.password, "encryption": encryption,
                                         "trickleOnly": trickle_only})
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
