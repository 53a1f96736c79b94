"""``intercom doctor``: one command that checks everything a door needs, and says how to fix what is wrong.

An installer runs it over ssh on the door. Each check is small, independent and bounded by its own timeout, and
ends in one line: ``OK``, ``WARN`` or ``FAIL`` with what was found, and for WARN and FAIL the fix in plain words.
``SKIP`` marks a check that could not run because one it depends on failed (no room check without a login).
The exit status is 1 when any check failed, else 0.

The checks, in the order they are printed:

- **config**: the config checker (:func:`~intercom.service.config.load_config`), all problems at once.
- **service**: whether ``intercom run`` is running (its control socket answers ``status``), and what it reports.
- **homeserver**, **login**, **sync**, **room**, **turn**: the homeserver answers; the door's credential is
  accepted; a sync works; the door is joined to its room, the room holds exactly the door and the owner, and it is
  encrypted (unencrypted is a warning, or a failure with ``matrix.require_encryption``); the homeserver hands out
  TURN credentials and a real allocation succeeds on one of its TURN servers (aioice's TURN client).
- **microphone**, **speaker**, **camera**, **gpio**: a second recorded through the configured ALSA device and its
  level; a short tone played; one camera frame's size and brightness; the panel's pins claimed with the configured
  pin factory and the button's level. Never the door relay: doctor does not open the door.
- **disk**: free space in the state directory; **clock**: whether the clock has been synchronised since boot.

Two choices keep doctor from disturbing a working door:

- *The door's own Matrix session is never used for syncing and its E2EE store is never opened.* With a password,
  doctor logs in as a separate, temporary device (named :data:`DEVICE_NAME`), syncs only its room, and logs that
  device out at the end. With an access token (no password to log in with), doctor uses the token read-only:
  ``whoami`` and one initial sync without a ``since`` token, which acknowledges nothing (the homeserver deletes
  the device's to-device messages only when a later sync names an earlier batch), and it never logs that token out.
- *A running service owns the microphone, speaker, camera and pins.* When its control socket answers, doctor
  reports its status instead and marks those four checks WARN with how to test them (stop the service first);
  it does not fight the service for the devices.
"""

from __future__ import annotations

import asyncio
import enum
import json
import math
import shutil
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO, TypeVar

import numpy as np

from intercom.matrix.client import CLOCK_SYNCHRONISED
from intercom.service.config import Config, ConfigError, load_config
from intercom.service.control import ControlError, default_socket_path, send_command

T = TypeVar("T")

#: The name of the temporary device doctor logs in as (with a password), so that a leftover one is recognisable.
DEVICE_NAME = "intercom doctor (temporary)"

#: How long each check may take (seconds); one hanging check ends as FAIL and the others go on.
TIMEOUTS: dict[str, float] = {
    "config": 10, "service": 6, "homeserver": 10, "login": 20, "sync": 30, "room": 5, "turn": 25,
    "microphone": 8, "speaker": 8, "camera": 20, "gpio": 10, "disk": 5, "clock": 5, "logout": 10,
}
#: How long one TURN allocation may take (they run side by side within the turn check's time).
ALLOCATION_TIMEOUT = 10.0

#: The order of the report.
CHECKS = ("config", "service", "homeserver", "login", "sync", "room", "turn", "microphone", "speaker", "camera",
          "gpio", "disk", "clock")
HARDWARE = ("microphone", "speaker", "camera", "gpio")

#: Microphone levels (dBFS, RMS of one second): below SILENT is a warning; at or above CLIPPING too.
SILENT_DBFS = -60.0
CLIPPING_DBFS = -1.0
#: The speaker's test tone.
TONE_HZ, TONE_DBFS, TONE_SECONDS = 440.0, -12.0, 0.6
#: A frame whose mean brightness (0-255) is below this is "black".
DARK_MEAN = 10.0
#: Free space in the state directory (bytes): below FAIL_FREE the door cannot keep its session and store safely;
#: below WARN_FREE pictures and logs will soon fill it.
FAIL_FREE = 20 * 1024 * 1024
WARN_FREE = 200 * 1024 * 1024

STOP_SERVICE = "to test it: sudo systemctl stop intercom, then intercom doctor (and sudo systemctl start intercom after)"


class Status(enum.Enum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass(frozen=True, slots=True)
class Result:
    """One check's outcome: what was found (``detail``) and, for WARN and FAIL, what to do (``fix``)."""

    name: str
    status: Status
    detail: str
    fix: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)  #: measured values, for --json

    def scrubbed(self, secrets: Iterable[str]) -> Result:
        """This result with every secret replaced by ``***`` (a homeserver or library could echo one)."""
        def clean(text: str | None) -> str | None:
            if text is None:
                return None
            for secret in secrets:
                if secret:
                    text = text.replace(secret, "***")
            return text

        data = json.loads(clean(json.dumps(self.data)) or "{}")
        return replace(self, detail=clean(self.detail) or "", fix=clean(self.fix), data=data)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "status": self.status.value, "detail": self.detail,
                               "fix": self.fix}
        if self.data:
            out["data"] = dict(self.data)
        return out


def ok(name: str, detail: str, **data: Any) -> Result:
    return Result(name, Status.OK, detail, None, data)


def warn(name: str, detail: str, fix: str, **data: Any) -> Result:
    return Result(name, Status.WARN, detail, fix, data)


def fail(name: str, detail: str, fix: str, **data: Any) -> Result:
    return Result(name, Status.FAIL, detail, fix, data)


def skip(name: str, why: str) -> Result:
    return Result(name, Status.SKIP, f"not checked: {why}")


# --- running checks: each bounded, none can hang doctor ----------------------------------------------------------


async def bounded(name: str, check: Callable[[], Awaitable[Result]], *, timeout: float | None = None,
                  hung: str = "try again; if it keeps hanging, run intercom doctor with sudo, and see journalctl -e"
                  ) -> Result:
    """Run one check within its timeout; a hang or an unexpected error becomes its FAIL line."""
    seconds = TIMEOUTS.get(name, 10) if timeout is None else timeout
    try:
        async with asyncio.timeout(seconds):
            return await check()
    except TimeoutError:
        return fail(name, f"did not finish within {seconds:g} s", hung)
    except Exception as exc:  # a check's own bug or a library's surprise must not end the others
        return fail(name, f"failed: {_describe_exception(exc)}",
                    "run intercom doctor again; if it fails the same way, report it with intercom doctor --json")


async def in_thread(work: Callable[..., T], *args: Any) -> T:
    """Run blocking ``work`` in a daemon thread: a device that hangs in a driver call keeps its thread, but neither
    the check's timeout nor doctor's exit waits for it (asyncio's executor would join it at exit)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(setter: Callable[[Any], None], value: Any) -> None:
        if not future.done():
            setter(value)

    def run() -> None:
        try:
            result = work(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting check
            outcome: tuple[Callable[[Any], None], Any] = (future.set_exception, exc)
        else:
            outcome = (future.set_result, result)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop is gone: doctor has finished without this check
            pass

    threading.Thread(target=run, name=f"doctor-{getattr(work, '__name__', 'check')}", daemon=True).start()
    return await future


def _describe_exception(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --- pure judgements (unit-tested) --------------------------------------------------------------------------------


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


def judge_disk(path: Path, free: int) -> Result:
    mib = free // (1024 * 1024)
    found = f"{mib} MiB free for {path}"
    if free < FAIL_FREE:
        return fail("disk", found, "free some space (sudo apt clean; sudo journalctl --vacuum-size=50M) or use a "
                    "bigger SD card", free_bytes=free)
    if free < WARN_FREE:
        return warn("disk", f"{found}: little room left", "free some space (sudo apt clean; sudo journalctl "
                    "--vacuum-size=50M), or keep fewer pictures (camera.snapshots_kept)", free_bytes=free)
    return ok("disk", found, free_bytes=free)


def judge_clock(synchronised: bool, flag: Path) -> Result:
    if synchronised:
        return ok("clock", "synchronised since boot")
    return warn("clock", f"not synchronised since boot ({flag} is missing): the door cannot tell the age of "
                "events without unsigned.age, and TLS and TURN credentials may look wrong",
                "give the door network access to a time server and check sudo timedatectl status "
                "(systemd-timesyncd must be enabled)")


def judge_room(facts: Any | None, *, config: Config, invited: bool) -> Result:
    """The room check from what a sync said about the configured room (``facts``: the core's room facts, or None
    when the door is not in it)."""
    from intercom.core.door import UNENCRYPTED_WARNING
    from intercom.core.policy import RoomFacts, room_problem

    m = config.matrix
    if facts is None or m.user_id not in facts.joined:
        if invited:
            return warn("room", f"the door is invited to {m.room_id} but has not joined yet",
                        "start the service (sudo systemctl start intercom): it accepts the invite by itself")
        return fail("room", f"the door {m.user_id} is not in the room {m.room_id}",
                    f"from the owner's account, invite {m.user_id} to the room (Element: Room info > People > "
                    f"Invite), or correct matrix.room_id in {config.path}")
    room = RoomFacts(joined=frozenset(facts.joined), join_rule=facts.join_rule, encrypted=bool(facts.encrypted))
    members = sorted(room.joined)
    data = {"members": members, "encrypted": room.encrypted, "join_rule": room.join_rule}
    problem = room_problem(room, user_id=m.user_id, owner=m.owner, require_encryption=m.require_encryption)
    if problem is not None:
        if room.join_rule == "public":
            fix = "make the room private (Element: Room settings > Security & Privacy > Private)"
        elif m.require_encryption and not room.encrypted:
            fix = "turn on encryption in the room's settings (Security & Privacy > Encrypted)"
        elif m.owner not in room.joined:
            fix = f"invite the owner {m.owner} to the room (or correct matrix.owner in {config.path})"
        else:
            fix = "remove everyone but the door and the owner from the room, or make a new room for the two"
        return fail("room", f"{m.room_id}: {problem}", fix, **data)
    if not room.encrypted:
        detail, _, fix = UNENCRYPTED_WARNING.partition(". ")
        return warn("room", f"{m.room_id} has the door and the owner, but {detail}", fix, **data)
    return ok("room", f"{m.room_id}: the door and the owner, encrypted", **data)


@dataclass(frozen=True, slots=True)
class TurnTarget:
    """Where one TURN URI points: host, port, transport (``udp`` or ``tcp``), and TLS for ``turns:``."""

    uri: str
    host: str
    port: int
    transport: str
    tls: bool


def turn_target(uri: str) -> TurnTarget | None:
    """The TURN server a ``turn:``/``turns:`` URI names (STUN URIs and unusable ones: None)."""
    from intercom.matrix.turn import uri_rank

    if uri_rank(uri) not in (0, 1, 2):
        return None
    scheme, _, rest = uri.partition(":")
    address, _, query = rest.partition("?")
    host, _, port = address.partition(":")
    tls = scheme == "turns"
    transport = dict(urllib.parse.parse_qsl(query)).get("transport") or ("tcp" if tls else "udp")
    return TurnTarget(uri, host, int(port) if port else (5349 if tls else 3478), transport, tls)


def explain_turn_failure(target: TurnTarget, exc: BaseException) -> tuple[str, str]:
    """Why an allocation on ``target`` failed, and the fix, in plain words."""
    from aioice import stun

    where = f"{target.host}:{target.port} over {'TLS' if target.tls else target.transport.upper()}"
    admin = "tell the homeserver's admin"
    if isinstance(exc, stun.TransactionFailed):
        code, reason = exc.response.attributes.get("ERROR-CODE", (0, ""))
        reason = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        said = f"{code} {reason}".strip()
        if code == 401:
            return (f"{where} refused the credentials the homeserver issued ({said})",
                    "the TURN server's shared secret differs from the homeserver's (Synapse: turn_shared_secret, "
                    f"coturn: static-auth-secret), or the two servers' clocks differ; {admin}")
        if code == 403:
            return f"{where} forbids the allocation ({said})", f"the TURN server's policy refuses it; {admin}"
        if code in (486, 508):
            return f"{where} is out of allocations ({said})", f"the TURN server is full; {admin}"
        return f"{where} refused the allocation ({said})", admin
    if isinstance(exc, (stun.TransactionTimeout, TimeoutError)):
        return (f"no answer from {where}",
                f"the TURN server is down, or a firewall between the door and it blocks {target.transport.upper()} "
                f"port {target.port}; {admin}, and check the door's firewall")
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {target.host} ({exc.strerror or exc})", f"check the door's DNS, or {admin}"
    if isinstance(exc, ConnectionRefusedError):
        return f"nothing listens on {where} (connection refused)", f"the TURN server is down; {admin}"
    if isinstance(exc, ssl.SSLError):
        return (f"TLS to {where} failed ({exc.reason or exc})",
                f"the TURN server's certificate is not trusted (or the door's clock is wrong); {admin}")
    return f"{where}: {_describe_exception(exc)}", admin


# --- the homeserver: a temporary device, never the door's own session -----------------------------------------------


class HomeserverProbe:
    """The homeserver checks, in order (each needs the one before): reachable, login, sync, room, TURN.

    With a password it logs in as a temporary device and :meth:`close` logs that device out; with an access token
    it uses the token read-only and never logs it out (that would end the door's session)."""

    def __init__(self, config: Config, kind: str, secret: str) -> None:
        from nio import AsyncClient, AsyncClientConfig

        from intercom.matrix.client import REQUEST_TIMEOUT

        self.config, self.kind = config, kind
        self._secret = secret
        self.homeserver = config.matrix.homeserver.rstrip("/")
        # No store and no encryption: this client never sees, opens or creates the door's E2EE store.
        self.client = AsyncClient(self.homeserver, config.matrix.user_id, config=AsyncClientConfig(
            encryption_enabled=False, store_sync_tokens=False, max_timeouts=0, max_limit_exceeded=0,
            request_timeout=REQUEST_TIMEOUT))
        self.temporary_device: str | None = None
        self.turn_password: str | None = None
        self._invited = False

    async def reachable(self) -> Result:
        name, url = "homeserver", self.homeserver
        try:
            response = await self.client.send("GET", "/_matrix/client/versions")
            try:
                status, body = response.status, await response.json(content_type=None)
            except ValueError:
                status, body = response.status, None
            finally:
                response.release()
        except Exception as exc:
            return fail(name, f"cannot reach {url}: {_connection_problem(exc)}", _reach_fix(exc, self.config))
        versions = body.get("versions") if isinstance(body, dict) else None
        if status != 200 or not isinstance(versions, list):
            return fail(name, f"{url} answered, but not as a Matrix homeserver (HTTP {status})",
                        f"matrix.homeserver must be the homeserver's client address, like https://matrix.example.org "
                        f"(Element: Settings > Help & About); correct it in {self.config.path}")
        latest = versions[-1] if versions and isinstance(versions[-1], str) else "?"
        return ok(name, f"{url} answers (Matrix {latest})")

    async def login(self) -> Result:
        from nio import LoginResponse, WhoamiResponse

        from intercom.matrix.retry import Failure

        m, name = self.config.matrix, "login"
        if self.kind == "password":
            response = await self.client.login(password=self._secret, device_name=DEVICE_NAME)
            if not isinstance(response, LoginResponse):
                failure = Failure.of(response)
                if failure.transient:
                    return fail(name, f"the homeserver could not log the door in: {failure}",
                                "the homeserver has trouble; try again in a minute")
                return fail(name, f"the homeserver refused the door's password for {m.user_id} ({failure})",
                            f"{_secret_fix(self.config)}, and check matrix.user_id")
            self.temporary_device = response.device_id
            return ok(name, f"{m.user_id} logged in with its password as the temporary device {response.device_id} "
                      "(logged out at the end)", device_id=response.device_id)
        self.client.access_token = self._secret
        who = await self.client.whoami()
        if not isinstance(who, WhoamiResponse):
            failure = Failure.of(who)
            if failure.transient:
                return fail(name, f"the homeserver could not check the door's access token: {failure}",
                            "the homeserver has trouble; try again in a minute")
            return fail(name, f"the homeserver refused the door's access token ({failure})",
                        f"log in as the door to get a new token, then {_secret_fix(self.config)}")
        if who.user_id != m.user_id:
            return fail(name, f"the access token belongs to {who.user_id}, not to {m.user_id}",
                        f"use a token of {m.user_id}, or correct matrix.user_id in {self.config.path}")
        self.client.user_id, self.client.device_id = who.user_id, who.device_id or ""
        return ok(name, f"the access token is {m.user_id}'s (device {who.device_id}); used read-only",
                  device_id=who.device_id)

    async def sync(self) -> Result:
        from nio import SyncResponse

        from intercom.matrix.retry import Failure

        room_id = self.config.matrix.room_id
        only_the_room = {
            "room": {"rooms": [room_id], "timeline": {"limit": 1}, "state": {"lazy_load_members": False},
                     "ephemeral": {"not_types": ["*"]}, "account_data": {"not_types": ["*"]}},
            "presence": {"not_types": ["*"]}, "account_data": {"not_types": ["*"]},
        }
        response = await self.client.sync(timeout=0, sync_filter=only_the_room, full_state=True)
        if not isinstance(response, SyncResponse):
            return fail("sync", f"the homeserver's sync failed: {Failure.of(response)}",
                        "the homeserver has trouble; try again in a minute, or tell its admin")
        self._invited = room_id in response.rooms.invite
        return ok("sync", "a sync of the door's room worked")

    def room(self) -> Result:
        from intercom.matrix.routing import room_facts

        room_id = self.config.matrix.room_id
        room = self.client.rooms.get(room_id)
        facts = room_facts(room_id, room) if room is not None else None
        return judge_room(facts, config=self.config, invited=self._invited)

    async def turn(self) -> Result:
        from intercom.matrix.retry import TRANSIENT_EXCEPTIONS, request_json
        from intercom.matrix.turn import TurnStatus, parse_turn_response

        try:
            status, body = await request_json(self.client, "GET", "/_matrix/client/v3/voip/turnServer")
        except TRANSIENT_EXCEPTIONS as exc:
            return fail("turn", f"could not ask the homeserver for TURN credentials: {_connection_problem(exc)}",
                        "try again in a minute; if it stays, tell the homeserver's admin")
        answer = parse_turn_response(status, body)
        if answer.status is TurnStatus.ERROR:
            return fail("turn", f"the homeserver did not hand out TURN credentials ({answer.detail})",
                        "try again in a minute; if it stays, tell the homeserver's admin")
        if answer.status is not TurnStatus.OK:
            return warn("turn", f"no TURN: {answer.detail}; calls with a phone outside the home network will "
                        "often fail to connect",
                        "ask the homeserver's admin to set up TURN (Synapse: turn_uris, turn_shared_secret), or "
                        "list STUN servers under [network] stun_servers")
        server = answer.servers[0]
        self.turn_password = server.credential
        targets = [t for t in map(turn_target, server.urls) if t is not None]
        if not targets:
            return warn("turn", "the homeserver lists only STUN servers, no TURN server",
                        "ask the homeserver's admin to add turn: URIs (Synapse: turn_uris)")
        outcomes = await asyncio.gather(*(allocate(t, server.username, server.credential) for t in targets),
                                        return_exceptions=True)
        return judge_allocations(list(zip(targets, outcomes)))

    async def close(self) -> Result | None:
        """Log the temporary device out (never the door's own session); a failure is a WARN line."""
        try:
            if self.temporary_device is None:
                return None
            from nio import LogoutResponse

            response = await self.client.logout()
            if not isinstance(response, LogoutResponse):
                return warn("logout", f"could not log out the temporary device {self.temporary_device} "
                            f"({response})", f"remove the session {self.temporary_device} ({DEVICE_NAME}) from the "
                            "door's account, e.g. by logging in as the door in Element: Settings > Sessions")
            return None
        finally:
            await self.client.close()


def judge_allocations(outcomes: Sequence[tuple[TurnTarget, Any]]) -> Result:
    """OK when one TURN server gave a relay (the door takes one from each; any one is enough for a call), else
    FAIL with the most preferred server's reason and its fix."""
    worked = [(t, relay) for t, relay in outcomes if not isinstance(relay, BaseException)]
    failed = [(t, explain_turn_failure(t, exc)) for t, exc in outcomes if isinstance(exc, BaseException)]
    data = {"allocated": [t.uri for t, _ in worked], "failed": {t.uri: why for t, (why, _) in failed}}
    if not worked:
        (_, (why, fix)), others = failed[0], failed[1:]
        more = "; ".join(reason for _, (reason, _) in others)
        return fail("turn", f"no TURN allocation: {why}" + (f" (also: {more})" if more else ""), fix, **data)
    first, relay = worked[0]
    detail = f"relay {relay[0]}:{relay[1]} allocated on {first.uri}"
    if worked[1:]:
        detail += f"; also on {', '.join(t.uri for t, _ in worked[1:])}"
    if failed:
        detail += f"; failed: {'; '.join(reason for _, (reason, _) in failed)}"
    return ok("turn", detail, **data)


async def allocate(target: TurnTarget, username: str, password: str) -> tuple[str, int]:
    """Allocate a relay on one TURN server, release it, and return the relayed address."""
    from aioice.turn import create_turn_endpoint

    closed = asyncio.Event()

    class Sink(asyncio.DatagramProtocol):
        def connection_lost(self, exc: Exception | None) -> None:
            closed.set()

    async with asyncio.timeout(ALLOCATION_TIMEOUT):
        transport, _ = await create_turn_endpoint(
            Sink, (target.host, target.port), username, password, lifetime=60,
            ssl=ssl.create_default_context() if target.tls else None, transport=target.transport)
    relayed = transport.get_extra_info("sockname")
    transport.close()  # deletes the allocation
    try:
        async with asyncio.timeout(3):
            await closed.wait()
    except TimeoutError:
        pass  # the server frees it when its lifetime ends
    return relayed


def _connection_problem(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer"
    cause = getattr(exc, "os_error", None) or exc
    return _describe_exception(cause)


def _reach_fix(exc: BaseException, config: Config) -> str:
    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return ("the homeserver's certificate is not accepted: check the door's clock (sudo timedatectl) and that "
                f"matrix.homeserver in {config.path} is the name on the certificate")
    return (f"check matrix.homeserver in {config.path}, the door's network (ping the homeserver's name) and that the "
            "homeserver is up")


def _secret_fix(config: Config) -> str:
    m = config.matrix
    if m.password_file is not None:
        return f"write the door account's password into {m.password_file} (one line, nothing else)"
    if m.access_token_file is not None:
        return f"write the door's access token into {m.access_token_file}"
    return f"correct the credential in {config.path} (better: use matrix.password_file)"


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
                    pin_factory="mock" if simulate else config.panel.pin_factory, panel=panel_pins(config.panel))


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


def claim_pins(hw: Hardware) -> tuple[bool, str]:
    """Claim every panel pin through the front panel adapter (relay off throughout), read the button's level, and
    release them. Returns (the button is pressed, the pin factory's name)."""
    import gpiozero

    from intercom.panel import FrontPanel, make_pin_factory

    factory = make_pin_factory(hw.pin_factory)
    panel = FrontPanel(hw.panel, lambda: None, pin_factory=factory)
    try:
        used = factory if factory is not None else gpiozero.Device.pin_factory
        high = bool(used.pin(hw.panel.button).state)
        return high != hw.panel.button_pull_up, type(used).__name__
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
        return fail("camera", f"no picture from the {hw.media.camera} camera: {_describe_exception(exc)}", fix)
    return judge_frame(width, height, mean, (hw.media.width, hw.media.height))


async def check_gpio(hw: Hardware) -> Result:
    p = hw.panel
    try:
        pressed, factory = await in_thread(claim_pins, hw)
    except Exception as exc:
        return fail("gpio", _describe_exception(exc),
                    "check panel.pin_factory and the pin numbers in the config; is this user allowed to use the "
                    "pins (a member of the gpio group)?")
    pins = (f"button GPIO{p.button}, call LED GPIO{p.call_led}, status LED GPIO{p.status_led}, "
            f"relay GPIO{p.relay} claimed with {factory}")
    level = "low" if pressed == p.button_pull_up else "high"
    if pressed:
        return warn("gpio", f"{pins}; the button reads pressed (GPIO{p.button} {level})",
                    "release the button; if nobody presses it, check its wiring for a short, and "
                    "panel.button_pull_up (true: the button connects the pin to ground)", button_pressed=True)
    return ok("gpio", f"{pins}; the button reads released (GPIO{p.button} {level})", button_pressed=False)


# --- the service, the disk and the clock --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceState:
    running: bool  #: the control socket answered, or may well belong to a running service
    result: Result


def ask_service(path: str | Path) -> ServiceState:
    """Whether ``intercom run`` answers on its control socket, and what its status says (blocking)."""
    path = Path(path)
    if not path.exists():
        return ServiceState(False, ok("service", f"not running (no {path}), so the hardware is tested directly; "
                                      "start it afterwards: sudo systemctl start intercom"))
    try:
        reply = send_command("status", path, timeout=TIMEOUTS["service"] - 1)
    except ControlError as exc:
        if isinstance(exc.__context__, ConnectionRefusedError):
            return ServiceState(False, ok("service", "not running (its control socket is left over from an earlier "
                                          "run), so the hardware is tested directly"))
        return ServiceState(True, warn("service", f"cannot ask the running service: {exc}",
                                       "run intercom doctor with sudo"))
    return ServiceState(True, judge_service(reply))


def judge_service(reply: Mapping[str, Any]) -> Result:
    """The running service's status reply as one line."""
    if not reply.get("ok"):
        return warn("service", f"running, but its status failed: {reply.get('error')}", "see journalctl -u intercom -e")
    found = (f"running: call {reply.get('call_state')}, LEDs {reply.get('led')}, homeserver "
             f"{reply.get('homeserver')}")
    trust = reply.get("trust") or {}
    problems = [str(p) for p in (reply.get("fault"), reply.get("room_problem"), trust.get("identity_problem")) if p]
    if reply.get("homeserver") != "online":
        problems.append("the service cannot reach the homeserver")
    data = {"status": dict(reply)}
    if problems:
        return warn("service", f"{found}; {'; '.join(problems)}",
                    "fix what the lines below say, then: sudo systemctl restart intercom (details: journalctl -u "
                    "intercom -e)", **data)
    return ok("service", found, **data)


def check_disk(state_dir: str) -> Result:
    path = Path(state_dir)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return judge_disk(path, shutil.disk_usage(probe).free)


# --- doctor -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    config_path: str
    simulate: bool = False
    socket: str | Path = field(default_factory=default_socket_path)
    clock_flag: Path = CLOCK_SYNCHRONISED


@dataclass(slots=True)
class Report:
    config_path: str
    simulate: bool
    results: list[Result]

    @property
    def failed(self) -> bool:
        return any(r.status is Status.FAIL for r in self.results)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def count(self, status: Status) -> int:
        return sum(r.status is status for r in self.results)

    def to_json(self) -> dict[str, Any]:
        return {"ok": not self.failed, "config": self.config_path, "simulate": self.simulate,
                "counts": {s.value: self.count(s) for s in Status},
                "checks": [r.to_json() for r in self.results]}

    def render(self) -> str:
        lines = [f"intercom doctor: {self.config_path}" + (" (simulated hardware)" if self.simulate else "")]
        for r in self.results:
            lines.append(f"{r.status.value:<5} {r.name:<11} {r.detail}")
            if r.fix:
                lines.append(f"{'':<5} {'':<11} fix: {r.fix}")
        failed, warned = self.count(Status.FAIL), self.count(Status.WARN)
        if failed:
            lines.append(f"{failed} failed, {warned} warning{'s' if warned != 1 else ''}: fix the FAIL lines (top "
                         "first), then run intercom doctor again")
        elif warned:
            lines.append(f"no failures, {warned} warning{'s' if warned != 1 else ''}: read the WARN lines")
        else:
            lines.append("all checks passed")
        return "\n".join(lines)


async def run_doctor(options: Options) -> Report:
    """Every check, as bounded and independent as their dependencies allow; the report in :data:`CHECKS` order."""
    results: dict[str, Result] = {}
    config_result, config = await _check_config(options.config_path)
    results["config"] = config_result
    secrets: list[str] = []
    if config is None:
        for name in CHECKS[1:]:
            results[name] = skip(name, "the config has problems")
        results["clock"] = await bounded("clock", _clock(options.clock_flag))
        return _report(options, results, secrets)

    service_task = asyncio.ensure_future(bounded("service", _service(options.socket)))
    homeserver_task = asyncio.ensure_future(_homeserver(config, secrets))
    others = {
        "disk": asyncio.ensure_future(bounded("disk", _blocking(check_disk, config.matrix.state_dir))),
        "clock": asyncio.ensure_future(bounded("clock", _clock(options.clock_flag))),
    }
    service = await service_task
    results["service"] = service
    # A status request that hung or failed: a socket that is there may well belong to a service holding the devices.
    if service.data.get("running", Path(options.socket).exists()):
        for name in HARDWARE:
            results[name] = warn(name, "in use by the running service", STOP_SERVICE)
    else:
        results.update(await _hardware(config, options.simulate))
    for result in await homeserver_task:
        results[result.name] = result
    for name, task in others.items():
        results[name] = await task
    return _report(options, results, secrets)


def _report(options: Options, results: dict[str, Result], secrets: list[str]) -> Report:
    ordered = [results[name] for name in CHECKS if name in results]
    ordered += [r for name, r in results.items() if name not in CHECKS]
    return Report(options.config_path, options.simulate, [r.scrubbed(secrets) for r in ordered])


async def _check_config(path: str) -> tuple[Result, Config | None]:
    try:
        config = await in_thread(load_config, path)
    except ConfigError as err:
        problems = [str(p) for p in err.problems]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return fail("config", f"{len(problems)} problem{'s' if len(problems) != 1 else ''}: {problems[0]}{more}",
                    f"run intercom check-config {path}: it explains each problem and its fix",
                    problems=problems), None
    m = config.matrix
    return ok("config", f"door {m.user_id} in {m.room_id}, owner {m.owner}, homeserver {m.homeserver} "
              f"({m.credential_source})"), config


def _service(socket_path: str | Path) -> Callable[[], Awaitable[Result]]:
    async def check() -> Result:
        state = await in_thread(ask_service, socket_path)
        return replace(state.result, data={**state.result.data, "running": state.running})
    return check


def _clock(flag: Path) -> Callable[[], Awaitable[Result]]:
    async def check() -> Result:
        return judge_clock(flag.exists(), flag)
    return check


def _blocking(work: Callable[..., Result], *args: Any) -> Callable[[], Awaitable[Result]]:
    async def check() -> Result:
        return await in_thread(work, *args)
    return check


async def _hardware(config: Config, simulate: bool) -> dict[str, Result]:
    try:
        hw = await in_thread(hardware_for, config, simulate)
    except Exception as exc:
        return {name: fail(name, f"cannot set up the devices: {_describe_exception(exc)}",
                           "check the [audio], [camera] and [panel] sections") for name in HARDWARE}
    # The microphone first, then the speaker: a beep during the recording would hide a dead microphone.
    async def audio() -> list[Result]:
        return [await bounded("microphone", lambda: check_microphone(hw)),
                await bounded("speaker", lambda: check_speaker(hw))]

    sound, camera, gpio = await asyncio.gather(audio(), bounded("camera", lambda: check_camera(hw)),
                                               bounded("gpio", lambda: check_gpio(hw)))
    return {r.name: r for r in [*sound, camera, gpio]}


async def _homeserver(config: Config, secrets: list[str]) -> list[Result]:
    """reachable -> login -> sync -> room, turn; the first FAIL skips the ones that need it. Logs out at the end."""
    try:
        kind, secret = config.matrix.read_secret()
    except ConfigError as err:
        return [fail("homeserver", f"cannot read the door's credential: {err.problems[0]}",
                     _secret_fix(config))] + [skip(n, "no credential") for n in ("login", "sync", "room", "turn")]
    secrets.append(secret)
    probe = HomeserverProbe(config, kind, secret)
    results: list[Result] = []
    try:
        steps: list[tuple[str, Callable[[], Awaitable[Result]]]] = [
            ("homeserver", probe.reachable), ("login", probe.login), ("sync", probe.sync)]
        for name, step in steps:
            result = await bounded(name, step)
            results.append(result)
            if result.status is Status.FAIL:
                results += [skip(n, f"needs {name}") for n, _ in steps[len(results):]]
                results += [skip("room", f"needs {name}"), skip("turn", f"needs {name}")]
                return results

        async def room() -> Result:
            return probe.room()

        results.append(await bounded("room", room))
        results.append(await bounded("turn", probe.turn, hung="the TURN servers or the homeserver did not answer "
                                     "in time; tell the homeserver's admin"))
    finally:
        if probe.turn_password:
            secrets.append(probe.turn_password)
        try:
            async with asyncio.timeout(TIMEOUTS["logout"]):
                leftover = await probe.close()
        except TimeoutError:
            leftover = warn("logout", f"logging out the temporary device {probe.temporary_device} timed out",
                            f"remove the session named {DEVICE_NAME} from the door's account (Element: Settings > "
                            "Sessions, logged in as the door)")
        if leftover is not None:
            results.append(leftover)
    return results


def doctor_main(options: Options, out: TextIO, *, as_json: bool = False) -> int:
    """``intercom doctor``: print the report (or one JSON object with ``--json``) and return the exit status."""
    report = asyncio.run(run_doctor(options))
    if as_json:
        print(json.dumps(report.to_json(), indent=2), file=out)
    else:
        print(report.render(), file=out)
    return report.exit_code
