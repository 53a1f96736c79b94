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
  encrypted (unencrypted is a warning, or a failure with ``matrix.require_encryption``), for each resident's
  configured room in a household (a room the door makes itself is fine); the homeserver hands out
  TURN credentials and a real allocation succeeds on one of its TURN servers (aioice's TURN client).
- **microphone**, **speaker**, **camera**, **gpio**: a second recorded through the configured ALSA device and its
  level; a short tone played; one camera frame's size and brightness; the panel's pins claimed with the configured
  pin factory and the button's level. Never the door relay: doctor does not open the door.
- **disk**: free space in the state directory; **clock**: whether the clock has been synchronised since boot.

Two choices keep doctor from disturbing a working door:

- *The door's own Matrix session is never used for syncing and its E2EE store is never opened*: doctor logs in
  as a temporary device and logs it out at the end, or uses an access token read-only
  (:mod:`~intercom.service.doctor_matrix`).
- *A running service owns the microphone, speaker, camera and pins.* When its control socket answers, doctor
  reports its status instead and marks those four checks WARN with how to test them (stop the service first);
  it does not fight the service for the devices.

This module runs the checks and prints the report; the homeserver's are in :mod:`.doctor_matrix`, the
hardware's in :mod:`.doctor_devices`.
"""

from __future__ import annotations

import asyncio
import enum
import json
import shutil
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO, TypeVar

from intercom.matrix.client import CLOCK_SYNCHRONISED
from intercom.service.config import Config, ConfigError, load_config
from intercom.service.control import ControlError, default_socket_path, send_command

T = TypeVar("T")

#: How long each check may take (seconds); one hanging check ends as FAIL and the others go on.
TIMEOUTS: dict[str, float] = {
    "config": 10, "service": 6, "homeserver": 10, "login": 20, "sync": 30, "room": 5, "turn": 25,
    "microphone": 8, "speaker": 8, "camera": 20, "gpio": 10, "disk": 5, "clock": 5, "logout": 10,
}

#: The order of the report.
CHECKS = ("config", "service", "homeserver", "login", "sync", "room", "turn", "microphone", "speaker", "camera",
          "gpio", "disk", "clock")
HARDWARE = ("microphone", "speaker", "camera", "gpio")

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
        return fail(name, f"failed: {describe_exception(exc)}",
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


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` of an exception, for a check's line."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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


def check_disk(state_dir: str) -> Result:
    """Free space where the state directory is (or, before it exists, where it will be)."""
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
    from .doctor_devices import device_checks
    from .doctor_matrix import homeserver_checks

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
    homeserver_task = asyncio.ensure_future(homeserver_checks(config, secrets))
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
        results.update(await device_checks(config, options.simulate))
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
    if not config.residents:
        serves = f"in {m.room_id}, owner {m.owner}"
    else:
        serves = f"serving {len(config.residents)} residents ({', '.join(r.user_id for r in config.residents)})"
    return ok("config", f"door {m.user_id} {serves}, homeserver {m.homeserver} ({m.credential_source})"), config


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


def doctor_main(options: Options, out: TextIO, *, as_json: bool = False) -> int:
    """``intercom doctor``: print the report (or one JSON object with ``--json``) and return the exit status."""
    report = asyncio.run(run_doctor(options))
    if as_json:
        print(json.dumps(report.to_json(), indent=2), file=out)
    else:
        print(report.render(), file=out)
    return report.exit_code