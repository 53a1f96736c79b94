"""Sending call events (MatrixAdapter.send): retries, 429s, giving up, order. nio's client is stood in for here:
the homeserver's part of sending is covered by test_matrix_adapter.py."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from nio import LocalProtocolError, RoomSendError, RoomSendResponse

from intercom.core import SendCallEvent
from intercom.matrix import Credential, MatrixAdapter, MatrixSettings, retry

ROOM = "!room:localhost"


def error(status: int, errcode: str = "M_UNKNOWN", retry_after_ms: int | None = None) -> RoomSendError:
    response = RoomSendError(f"HTTP {status}", errcode, retry_after_ms, room_id=ROOM)
    response.transport_response = SimpleNamespace(status=status)
    return response


OK = RoomSendResponse("$sent:localhost", ROOM)


class StandIn:
    """Answers room_send from a script; records each call."""

    def __init__(self, *script: Any):
        self.script = list(script)
        self.calls: list[dict[str, Any]] = []
        self.device_id = "DOOR"

    async def room_send(self, room_id, message_type, content, tx_id=None, ignore_unverified_devices=False):
        self.calls.append(dict(room_id=room_id, type=message_type, content=content, tx_id=tx_id,
                               ignore_unverified_devices=ignore_unverified_devices))
        step = self.script.pop(0) if self.script else OK
        if callable(step):
            step = await step()
        if isinstance(step, BaseException):
            raise step
        return step


@pytest.fixture
def slept(monkeypatch) -> list[float]:
    delays: list[float] = []

    async def no_wait(seconds: float) -> None:
        delays.append(seconds)

    monkeypatch.setattr(retry, "sleep", no_wait)
    return delays


def adapter_with(tmp_path, stand_in: StandIn) -> MatrixAdapter:
    adapter = MatrixAdapter(MatrixSettings(homeserver="http://127.0.0.1:1", user_id="@door:localhost", room_id=ROOM,
                                           state_dir=tmp_path, credential=Credential("password", "pw"),
                                           device_name="test door"), lambda event: None)
    adapter._client = stand_in  # type: ignore[assignment]
    return adapter


def hangup(call_id: str = "zCall", room_id: str = ROOM) -> SendCallEvent:
    return SendCallEvent(room_id=room_id, event_type="m.call.hangup",
                         content={"call_id": call_id, "party_id": "DOOR", "version": "1", "reason": "user_hangup"})


def test_transient_failures_are_retried_with_one_transaction_id(tmp_path, slept):
    stand_in = StandIn(aiohttp.ClientConnectionError("reset"), error(429, "M_LIMIT_EXCEEDED", 1500), error(502),
                       asyncio.TimeoutError(), OK)
    assert asyncio.run(adapter_with(tmp_path, stand_in).send(hangup())) is True
    assert len(stand_in.calls) == 5
    assert len({c["tx_id"] for c in stand_in.calls}) == 1  # the homeserver stores the event once
    assert all(c["ignore_unverified_devices"] for c in stand_in.calls)
    assert stand_in.calls[0]["content"] == hangup().content
    assert slept == [0.25, 1.5, 1.0, 2.0]  # the 429's retry_after_ms is honoured


def test_a_refusal_is_not_retried(tmp_path, slept):
    stand_in = StandIn(error(403, "M_FORBIDDEN"))
    assert asyncio.run(adapter_with(tmp_path, stand_in).send(hangup())) is False
    assert len(stand_in.calls) == 1 and slept == []


@pytest.mark.parametrize("problem", [LocalProtocolError("No such room"), ValueError("bad device keys")])
def test_local_failures_are_reported_not_raised(tmp_path, slept, problem):
    assert asyncio.run(adapter_with(tmp_path, StandIn(problem)).send(hangup())) is False


def test_sending_gives_up_within_its_budget(tmp_path, slept):
    stand_in = StandIn(*[error(503)] * 50)
    assert asyncio.run(adapter_with(tmp_path, stand_in).send(hangup())) is False
    assert 5 < len(stand_in.calls) <= retry.SEND.attempts
    assert sum(slept) <= retry.SEND.budget


def test_a_rate_limit_longer_than_the_budget_gives_up_at_once(tmp_path, slept):
    stand_in = StandIn(error(429, "M_LIMIT_EXCEEDED", 60_000))
    assert asyncio.run(adapter_with(tmp_path, stand_in).send(hangup())) is False
    assert len(stand_in.calls) == 1 and slept == []


def test_sends_go_out_one_at_a_time_in_order(tmp_path):
    async def main() -> list[str]:
        gate = asyncio.Event()
        order: list[str] = []

        async def slow_first() -> RoomSendResponse:
            order.append("first started")
            await gate.wait()
            order.append("first done")
            return OK

        stand_in = StandIn(slow_first)
        adapter = adapter_with(tmp_path, stand_in)
        first = asyncio.create_task(adapter.send(hangup("zFirst")))
        second = asyncio.create_task(adapter.send(hangup("zSecond")))
        await asyncio.sleep(0.05)
        order.append(f"calls so far: {len(stand_in.calls)}")
        gate.set()
        assert await first and await second
        return order + [c["content"]["call_id"] for c in stand_in.calls]

    assert asyncio.run(main()) == ["first started", "calls so far: 1", "first done", "zFirst", "zSecond"]


def test_sends_to_another_room_do_not_wait(tmp_path):
    """A ring group: the invite to one resident's room never waits for a slow send to another's."""
    async def main() -> list[str]:
        gate = asyncio.Event()

        async def slow_first() -> RoomSendResponse:
            await gate.wait()
            return OK

        stand_in = StandIn(slow_first, OK)
        adapter = adapter_with(tmp_path, stand_in)
        first = asyncio.create_task(adapter.send(hangup("zFirst")))
        await asyncio.sleep(0.01)
        other = asyncio.create_task(adapter.send(hangup("zOther", room_id="!other:localhost")))
        assert await asyncio.wait_for(other, 5)  # went out while the first room's send still waits
        assert not first.done()
        gate.set()
        assert await first
        return [c["content"]["call_id"] for c in stand_in.calls]

    assert asyncio.run(main()) == ["zFirst", "zOther"]


def test_send_before_start_is_refused(tmp_path):
    adapter = MatrixAdapter(MatrixSettings(homeserver="http://127.0.0.1:1", user_id="@door:localhost", room_id=ROOM,
                                           state_dir=tmp_path, credential=Credential("access_token", "t"),
                                           device_name="test door"), lambda event: None)
    assert asyncio.run(adapter.send(hangup())) is False


def test_settings_hold_exactly_one_credential_and_never_show_its_secret(tmp_path):
    """One credential by construction (the config file's check makes sure the user gave exactly one)."""
    for kind, secret in (("password", "pw"), ("access_token", "syt_t0ken")):
        settings = MatrixSettings(homeserver="h", user_id="@d:x", room_id=ROOM, state_dir=tmp_path,
                                  credential=Credential(kind, secret), device_name="test door")
        assert (settings.password, settings.access_token) == ((secret, None) if kind == "password" else (None, secret))
        assert secret not in repr(settings)
    for two_or_none in ({"password": "p", "access_token": "t"}, {}):
        with pytest.raises(TypeError):
            MatrixSettings(homeserver="h", user_id="@d:x", room_id=ROOM, state_dir=tmp_path, device_name="test door",
                           **two_or_none)


def test_reconnect_backoff():
    delays = [retry.backoff(n) for n in range(1, 10)]
    assert delays[0] == 0  # one lost request is retried at once
    assert 0.45 <= delays[1] <= 0.5
    assert all(a <= b * 1.2 for a, b in zip(delays, delays[1:]))
    assert max(delays) <= retry.BACKOFF_MAX <= 5.0  # back well within 10 s of the homeserver's return
