"""The doorbell end to end: the real service on simulated hardware, a real Synapse, a scripted owner's phone.

The door runs in this process (``intercom.app.Service`` with ``simulate=True``) so that its mock GPIO pins can be
read; the phone is matrix-nio plus a plain aiortc peer (``intercom_dev.testbed.phone``).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from .helpers import Setup, lit_time, media_flows, pin, running_door, send_text, wait_until

pytestmark = pytest.mark.integration


def test_press_rings_the_owner_media_flows_both_ways_and_hangup_ends_it(setup):
    async def main():
        phone = setup.phone()
        await phone.start()
        async with running_door(setup) as door:
            status_led = pin(door, 23)
            await door.press()
            assert door.core.led.value == "calling"
            invite = await phone.wait_for("m.call.invite", sender=setup.door.user_id)
            assert invite["invitee"] == setup.owner.user_id and invite["version"] == "1"
            await phone.answer(invite)
            await phone.wait_for("m.call.select_answer", lambda c: c["selected_party_id"] == phone.party_id)
            await media_flows(phone, door)
            assert door.core.state.value == "connected"
            assert pin(door, 22).state == 1 and status_led.state == 1  # in call: call LED steady on
            await phone.hangup()
            await wait_until(lambda: door.core.state.value == "idle", "the door to end the call")
            summary = door.orchestrator.last_call
            assert summary.outcome.value == "completed" and summary.duration > 1.5
        await phone.close()

    asyncio.run(main())


def test_owner_calls_and_the_door_answers_with_media(setup):
    async def main():
        phone = setup.phone()
        await phone.start()
        async with running_door(setup) as door:
            call_id = await phone.call(setup.door.user_id)
            answer = await phone.wait_for("m.call.answer", lambda c: c["call_id"] == call_id)
            await phone.accept_answer(answer)
            await media_flows(phone, door)
            assert door.core.call_id == call_id and door.core.led.value == "in_call"
            await phone.hangup()
            await wait_until(lambda: door.core.state.value == "idle", "the door to end the call")
        await phone.close()

    asyncio.run(main())


def test_a_strangers_call_is_refused_and_never_answered(setup, matrix_users):
    stranger = matrix_users("stranger")
    their_room = setup.room_with(stranger)

    async def main():
        phone = setup.phone(stranger, their_room, name="stranger")
        await phone.start()
        async with running_door(setup) as door:
            call_id = await phone.call(setup.door.user_id)
            await phone.wait_for("m.call.reject", lambda c: c["call_id"] == call_id, sender=setup.door.user_id)
            await asyncio.sleep(1.0)
            assert not [e for e in phone.events if e[0] == "m.call.answer"]
            assert door.core.state.value == "idle" and door.core.led.value == "idle"
        await phone.close()

    asyncio.run(main())


def test_no_answer_hangs_up_at_the_ring_timeout_and_shows_missed(homeserver, matrix_users, tmp_path):
    setup = Setup(homeserver, matrix_users, tmp_path, extra="[calls]\nring_timeout = 10\n")

    async def main():
        phone = setup.phone()
        await phone.start()
        async with running_door(setup) as door:
            await door.press()
            invite = await phone.wait_for("m.call.invite", sender=setup.door.user_id)
            started = time.monotonic()
            hangup = await phone.wait_for("m.call.hangup", lambda c: c["call_id"] == invite["call_id"], timeout=30)
            assert hangup["reason"] == "invite_timeout"
            assert 8 <= time.monotonic() - started <= 15
            await wait_until(lambda: door.core.led.value == "missed", "the missed pattern")
            call_led = pin(door, 22)
            call_led.clear_states()
            await asyncio.sleep(4.2)  # MISSED: a 0.1 s blip every 2 s on the call LED
            lit, blips = lit_time(call_led, 4.2)
            assert blips >= 2 and lit < 0.6, (lit, blips)
            assert door.orchestrator.last_call.outcome.value == "missed"
        await phone.close()

    asyncio.run(main())


@pytest.mark.parametrize("owner_first", [True, False], ids=["owner-calls-first", "door-calls-first"])
def test_glare_ends_in_one_call_with_media(setup, owner_first):
    async def main():
        phone = setup.phone()
        await phone.start()
        async with running_door(setup) as door:
            if owner_first:
                call_id = await phone.call(setup.door.user_id)
                await door.press()
            else:
                await door.press()
                await phone.wait_for("m.call.invite", sender=setup.door.user_id)
                call_id = await phone.call(setup.door.user_id)
            # The door yields (its call IDs sort last): it answers the owner's call.
            answer = await phone.wait_for("m.call.answer", lambda c: c["call_id"] == call_id)
            await phone.accept_answer(answer)
            await media_flows(phone, door)
            assert door.core.call_id == call_id and door.core.state.value == "connected"
            if not owner_first:
                door_invite = await phone.wait_for("m.call.invite", sender=setup.door.user_id)
                hangup = await phone.wait_for("m.call.hangup", lambda c: c["call_id"] == door_invite["call_id"])
                assert hangup["reason"] == "replaced"
            await phone.hangup()
        await phone.close()

    asyncio.run(main())


def test_open_command_pulses_the_relay_only_for_the_owner_in_the_window(setup, matrix_users):
    stranger = matrix_users("stranger")
    their_room = setup.room_with(stranger)

    async def main():
        phone = setup.phone()
        await phone.start()
        async with running_door(setup) as door:
            relay = pin(door, 27)
            # outside any call: refused, with a notice
            await phone.client.room_send(setup.room_id, "m.room.message", {"msgtype": "m.text", "body": "!open"})
            await wait_until(lambda: any("Not opened" in body for _, body in phone.messages), "the refusal notice")
            assert not any(s.state for s in relay.states)
            # during the owner's own call to the door: nobody rang, so nothing opens
            call_id = await phone.call(setup.door.user_id)
            await phone.accept_answer(await phone.wait_for("m.call.answer", lambda c: c["call_id"] == call_id))
            await wait_until(lambda: door.core.state.value == "connected", "the owner's call to connect")
            refusals = sum("Not opened" in body for _, body in phone.messages)
            await phone.client.room_send(setup.room_id, "m.room.message", {"msgtype": "m.text", "body": "!open"})
            await wait_until(lambda: sum("Not opened" in body for _, body in phone.messages) > refusals,
                             "the refusal during the owner's call")
            await phone.hangup()
            await wait_until(lambda: door.core.state.value == "idle", "the owner's call to end")
            assert not any(s.state for s in relay.states)
            # during a visitor's ring: a stranger (in their own room with the door) gets nothing; the owner opens it
            await door.press()
            invite = await phone.wait_for("m.call.invite", sender=setup.door.user_id)
            phone.new_call_stats()
            await phone.answer(invite)
            send_text(setup.server, stranger, their_room, "!open")
            await asyncio.sleep(2.0)
            assert not any(s.state for s in relay.states)
            await phone.client.room_send(setup.room_id, "m.room.message", {"msgtype": "m.text", "body": "!open"})
            await wait_until(lambda: relay.state == 1, "the relay to pull in")
            await wait_until(lambda: any("Door opened" in body for _, body in phone.messages), "the acknowledgement")
            await wait_until(lambda: relay.state == 0, "the relay to drop out", timeout=10)
            await phone.hangup()
        await phone.close()

    asyncio.run(main())


def test_a_rejected_sd_card_config_shows_the_error_pattern_and_the_door_still_rings(setup, tmp_path, monkeypatch):
    """The image's boot-time import leaves its errors in a file when the card's intercom.toml is wrong."""
    errors = tmp_path / "boot-config-errors"
    errors.write_text('matrix.owner: "bob" is not a Matrix user ID; write it as @bob:example.org\n')
    monkeypatch.setenv("INTERCOM_BOOT_CONFIG_ERRORS", str(errors))

    async def main():
        from intercom.app import Service
        from intercom.service.config import load_config

        phone = setup.phone()
        await phone.start()
        door = Service(load_config(setup.config_path), simulate=True, control_socket=setup.tmp / "control.sock")
        task = asyncio.ensure_future(door.run())
        try:
            await asyncio.wait_for(door.ready.wait(), 60)
            await wait_until(lambda: door.core.led.value == "error", "the error pattern")
            status = door.status()
            assert "matrix.owner" in status["fault"] and status["homeserver"] == "online"
            await door.press()  # the previous config still works: the owner is called
            await phone.wait_for("m.call.invite", sender=setup.door.user_id)
        finally:
            door.stop()
            await asyncio.wait_for(task, 30)
            await phone.close()

    asyncio.run(main())


def test_a_refused_password_is_logged_and_shown_and_retried_slowly(setup, caplog):
    """A wrong password in the config: a clear log line naming the setting (never the secret) and the error
    pattern, not an endless 'offline'; the door keeps running and tries again now and then (the account may be
    fixed on the homeserver)."""
    setup.config_path.with_name("password").write_text("not-the-password\n")

    async def main():
        from intercom.app import Service
        from intercom.service.config import load_config

        door = Service(load_config(setup.config_path), simulate=True, control_socket=setup.tmp / "control.sock")
        task = asyncio.ensure_future(door.run())
        try:
            await wait_until(lambda: getattr(door, "core", None) is not None and door.core.fault, "the fault",
                             timeout=30)
            assert door.core.led.value == "error" and "Matrix" in door.status()["fault"]
            assert "matrix.password_file" in door.status()["fault"]
            await asyncio.sleep(1.0)
            assert not task.done(), "the door gave up instead of retrying"
        finally:
            door.stop()
            await asyncio.wait_for(task, 30)

    asyncio.run(main())
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("refused the door's password" in e and "tries again" in e for e in errors), errors
    assert not any("not-the-password" in r.getMessage() for r in caplog.records)
