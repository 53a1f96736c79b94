"""``intercom doctor``'s homeserver checks: reachable, login, sync, room and TURN (credentials and a real relay).

The door's own session is never used for syncing, and its E2EE store is never opened: the client here has no
store and no encryption. With a password, doctor logs in as a separate, temporary device (:data:`DEVICE_NAME`),
syncs only the door's rooms, and logs that device out at the end. With an access token there is no password to
log in with, so the token is used read-only: ``whoami`` and one initial sync without a ``since`` token, which
acknowledges nothing (the homeserver deletes a device's to-device messages only when a later sync names an
earlier batch); it is never logged out, which would end the door's session.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from intercom.core.household import Resident
from intercom.service.config import Config, ConfigError

from .doctor import TIMEOUTS, Result, Status, bounded, describe_exception, fail, ok, skip, warn

#: The name of the temporary device doctor logs in as (with a password), so that a leftover one is recognisable.
DEVICE_NAME = "intercom doctor (temporary)"
#: How long one TURN allocation may take (they run side by side within the turn check's time).
ALLOCATION_TIMEOUT = 10.0


def judge_room(facts: Any | None, *, config: Config, invited: bool, resident: Resident | None = None) -> Result:
    """The room check from what a sync said about one resident's configured room (``facts``: the core's room facts,
    or None when the door is not in it). ``resident``: whose room (default: the first, the owner of the
    single-owner form)."""
    from intercom.core.door import UNENCRYPTED_WARNING
    from intercom.core.policy import RoomFacts, room_problem

    m = config.matrix
    if resident is None:
        resident = config.household()[0][0]
    person, room_id = resident.user_id, resident.room_id
    who, person_setting, room_setting = _settings_of(config, resident)
    if facts is None or m.user_id not in facts.joined:
        if invited:
            return warn("room", f"the door is invited to {room_id} but has not joined yet",
                        "start the service (sudo systemctl start intercom): it accepts the invite by itself")
        return fail("room", f"the door {m.user_id} is not in the room {room_id}",
                    f"from the {who}'s account, invite {m.user_id} to the room (Element: Room info > People > "
                    f"Invite), or correct {room_setting} in {config.path}")
    room = RoomFacts(joined=frozenset(facts.joined), join_rule=facts.join_rule, encrypted=bool(facts.encrypted))
    members = sorted(room.joined)
    data = {"members": members, "encrypted": room.encrypted, "join_rule": room.join_rule}
    problem = room_problem(room, user_id=m.user_id, owner=person, require_encryption=m.require_encryption)
    if problem is not None:
        if room.join_rule == "public":
            fix = "make the room private (Element: Room settings > Security & Privacy > Private)"
        elif m.require_encryption and not room.encrypted:
            fix = "turn on encryption in the room's settings (Security & Privacy > Encrypted)"
        elif person not in room.joined:
            fix = f"invite the {who} {person} to the room (or correct {person_setting} in {config.path})"
        else:
            fix = f"remove everyone but the door and the {who} from the room, or make a new room for the two"
        return fail("room", f"{room_id}: {problem}", fix, **data)
    if not room.encrypted:
        detail, _, fix = UNENCRYPTED_WARNING.partition(". ")
        return warn("room", f"{room_id} has the door and the {who}, but {detail}", fix, **data)
    return ok("room", f"{room_id}: the door and the {who}, encrypted", **data)


def _settings_of(config: Config, resident: Resident) -> tuple[str, str, str]:
    """What to call the person in messages, and the settings that name them and their room."""
    if not config.residents:
        return "owner", "matrix.owner", "matrix.room_id"
    index = next(i for i, r in enumerate(config.residents, 1) if r.user_id == resident.user_id)
    return "resident", f"residents[{index}].user_id", f"residents[{index}].room_id"


def judge_rooms(config: Config, judge: Callable[[Resident], Result]) -> Result:
    """The room check of every resident, as one line: the single owner's exactly as :func:`judge_room` says it; a
    household's with the worst status, each resident's finding and the fixes of those that need one. A resident
    without a configured room is fine: the door makes that room itself."""
    residents, _ = config.household()
    if not config.residents:
        return judge(residents[0])
    found = {r.user_id: judge(r) if r.room_id else ok("room", "the door makes this room itself")
             for r in residents}
    worst = next((s for s in (Status.FAIL, Status.WARN) if any(r.status is s for r in found.values())), Status.OK)
    detail = "; ".join(f"{user}: {r.detail}" for user, r in found.items())
    fixes = "; ".join(f"{user}: {r.fix}" for user, r in found.items() if r.fix)
    data = {"rooms": {user: {"status": r.status.value, **r.data} for user, r in found.items()}}
    return Result("room", worst, detail, fixes or None, data)


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
    return f"{where}: {describe_exception(exc)}", admin



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
        self._invited: set[str] = set()

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

        m, name = self.config.matrix, "login"
        if self.kind == "password":
            response = await self.client.login(password=self._secret, device_name=DEVICE_NAME)
            if not isinstance(response, LoginResponse):
                return _refused(response, f"the door's password for {m.user_id}",
                                f"{secret_fix(self.config)}, and check matrix.user_id")
            self.temporary_device = response.device_id
            return ok(name, f"{m.user_id} logged in with its password as the temporary device {response.device_id} "
                      "(logged out at the end)", device_id=response.device_id)
        self.client.access_token = self._secret
        who = await self.client.whoami()
        if not isinstance(who, WhoamiResponse):
            return _refused(who, "the door's access token",
                            f"log in as the door to get a new token, then {secret_fix(self.config)}")
        if who.user_id != m.user_id:
            return fail(name, f"the access token belongs to {who.user_id}, not to {m.user_id}",
                        f"use a token of {m.user_id}, or correct matrix.user_id in {self.config.path}")
        self.client.user_id, self.client.device_id = who.user_id, who.device_id or ""
        return ok(name, f"the access token is {m.user_id}'s (device {who.device_id}); used read-only",
                  device_id=who.device_id)

    async def sync(self) -> Result:
        from nio import SyncResponse

        from intercom.matrix.retry import Failure

        rooms = [r.room_id for r in self.config.household()[0] if r.room_id]
        only_the_room = {
            "room": {"rooms": rooms, "timeline": {"limit": 1}, "state": {"lazy_load_members": False},
                     "ephemeral": {"not_types": ["*"]}, "account_data": {"not_types": ["*"]}},
            "presence": {"not_types": ["*"]}, "account_data": {"not_types": ["*"]},
        }
        response = await self.client.sync(timeout=0, sync_filter=only_the_room, full_state=True)
        if not isinstance(response, SyncResponse):
            return fail("sync", f"the homeserver's sync failed: {Failure.of(response)}",
                        "the homeserver has trouble; try again in a minute, or tell its admin")
        self._invited = {room_id for room_id in rooms if room_id in response.rooms.invite}
        return ok("sync", f"a sync of the door's room{'s' if len(rooms) != 1 else ''} worked")

    def room(self) -> Result:
        from intercom.matrix.routing import room_facts

        def judge(resident: Resident) -> Result:
            room_id = resident.room_id
            room = self.client.rooms.get(room_id) if room_id else None
            facts = room_facts(room_id, room) if room is not None else None
            return judge_room(facts, config=self.config, invited=room_id in self._invited, resident=resident)

        return judge_rooms(self.config, judge)

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
    return describe_exception(cause)


def _reach_fix(exc: BaseException, config: Config) -> str:
    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return ("the homeserver's certificate is not accepted: check the door's clock (sudo timedatectl) and that "
                f"matrix.homeserver in {config.path} is the name on the certificate")
    return (f"check matrix.homeserver in {config.path}, the door's network (ping the homeserver's name) and that the "
            "homeserver is up")


def _refused(response: Any, what: str, fix: str) -> Result:
    """The login line for a homeserver's error answer: a refusal of ``what`` (with ``fix``), or trouble."""
    from intercom.matrix.retry import Failure

    failure = Failure.of(response)
    if failure.transient:
        return fail("login", f"the homeserver could not check {what}: {failure}",
                    "the homeserver has trouble; try again in a minute")
    return fail("login", f"the homeserver refused {what} ({failure})", fix)


def secret_fix(config: Config) -> str:
    m = config.matrix
    if m.password_file is not None:
        return f"write the door account's password into {m.password_file} (one line, nothing else)"
    if m.access_token_file is not None:
        return f"write the door's access token into {m.access_token_file}"
    return f"correct the credential in {config.path} (better: use matrix.password_file)"


async def homeserver_checks(config: Config, secrets: list[str]) -> list[Result]:
    """reachable -> login -> sync -> room, turn; the first FAIL skips the ones that need it. Logs out at the end."""
    try:
        kind, secret = config.matrix.read_secret()
    except ConfigError as err:
        return [fail("homeserver", f"cannot read the door's credential: {err.problems[0]}",
                     secret_fix(config))] + [skip(n, "no credential") for n in ("login", "sync", "room", "turn")]
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
