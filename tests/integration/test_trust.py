"""Trust end to end, against the real Synapse: in an encrypted room only the owner's sessions the door trusts are
the owner. A second, real session of the owner's account (a fresh nio device, as a stolen password would give)
gets no auto-answered call, cannot open the door and cannot read the door's messages; the owner's trusted
session is told, and once the session is confirmed (``intercom trust DEVICE`` on the door, or the owner signing
it with their cross-signing key) both work. A changed cross-signing identity stops everything until confirmed.
"""

from __future__ import annotations

import asyncio

import pytest

from intercom.service.control import send_command
from intercom_dev.testbed import crosssigning

from .helpers import Setup, pin, running_door, send_text, wait_until

pytestmark = pytest.mark.integration

OPEN = {"msgtype": "m.text", "body": "!open"}


@pytest.fixture
def setup(homeserver, matrix_users, tmp_path):
    return Setup(homeserver, matrix_users, tmp_path, encrypted=True)


def notices(phone, text: str) -> list[str]:
    return [body for sender, body in phone.messages if text in body]


async def control(setup: Setup, command: str) -> dict:
    return await asyncio.to_thread(send_command, command, setup.tmp / "control.sock")


async def refused_call(door, caller, trusted_phone) -> str:
    """``caller`` calls the door; returns the call ID once the door refused it (never answered)."""
    before = door.orchestrator.last_call
    call_id = await caller.call(door.config.matrix.user_id)
    await wait_until(lambda: door.orchestrator.last_call is not before
                     and door.orchestrator.last_call.call_id == call_id, "the door to settle the call")
    assert door.orchestrator.last_call.outcome.value == "refused"
    await trusted_phone.wait_for("m.call.reject", lambda c: c["call_id"] == call_id, sender=door.config.matrix.user_id)
    assert not [c for kind, _, c in trusted_phone.events if kind == "m.call.answer" and c.get("call_id") == call_id]
    await caller.close_media()
    return call_id


def test_a_new_session_of_the_owner_is_neither_answered_nor_obeyed_until_confirmed_on_the_door(setup):
    async def main():
        phone = setup.phone()
        await phone.start()
        async with running_door(setup) as door:
            relay = pin(door, 27)
            await wait_until(lambda: door.core.trust_status()["trusted_devices"] == [phone.client.device_id],
                             "the door to pin the owner's session")
            second = setup.phone(name="second")
            await second.start()
            device = second.client.device_id
            await wait_until(lambda: device in door.core.trust_status()["untrusted_devices"],
                             "the door to see the new session", timeout=30)
            await wait_until(lambda: notices(phone, f"!trust {device}"), "the owner to be told of the new session")
            assert (await control(setup, "status"))["trust"]["untrusted_devices"].keys() == {device}

            # Its call is refused with a reason, and the owner's trusted session hears why.
            await refused_call(door, second, phone)
            await wait_until(lambda: notices(phone, f"does not trust the session {device}"), "the refusal notice")

            # During a visitor's ring: its !open opens nothing, and it cannot even read the ring.
            await door.press()
            invite = await phone.wait_for("m.call.invite", sender=setup.door.user_id)
            await second.client.room_send(setup.room_id, "m.room.message", OPEN, ignore_unverified_devices=True)
            # A plaintext !open from the owner's account in the encrypted room is refused too, and said so.
            send_text(setup.server, setup.owner, setup.room_id, "!open")
            await wait_until(lambda: notices(phone, "arrived unencrypted"), "the plaintext refusal")
            await asyncio.sleep(1.0)
            assert not any(s.state for s in relay.states)
            assert not [c for kind, _, c in second.events if kind == "m.call.invite"
                        and c.get("call_id") == invite["call_id"]], "the untrusted session could read the ring"

            # Confirmed on the door: now its !open works during the ring ...
            reply = await control(setup, f"trust {device}")
            assert reply["ok"] and device in reply["trust"]["trusted_devices"], reply
            await wait_until(lambda: notices(phone, "now trusts"), "the confirmation notice")
            await second.client.room_send(setup.room_id, "m.room.message", OPEN, ignore_unverified_devices=True)
            await wait_until(lambda: relay.state == 1, "the relay to pull in")
            await phone.send("m.call.reject", {"call_id": invite["call_id"]})
            await wait_until(lambda: door.core.state.value == "idle", "the ring to end")

            # ... and its call is answered, the answer readable by it (the room keys now reach it).
            call_id = await second.call(setup.door.user_id)
            answer = await second.wait_for("m.call.answer", lambda c: c["call_id"] == call_id, timeout=30)
            await second.accept_answer(answer)
            await wait_until(lambda: door.core.state.value == "connected", "the call to connect", timeout=30)
            await second.hangup()
            await wait_until(lambda: door.core.state.value == "idle", "the call to end")
            await second.close()
        await phone.close()

    asyncio.run(main())


def test_cross_signing_trusts_what_the_owner_signs_and_a_new_identity_stops_everything(setup):
    async def main():
        phone = setup.phone()
        await phone.start()
        identity = crosssigning.Identity(setup.owner.user_id)
        await crosssigning.upload_identity(phone.client, identity, setup.owner.password)
        await crosssigning.sign_and_upload_device(phone.client, identity, phone.client.device_id)
        second = setup.phone(name="second")
        await second.start()  # before the door starts: at first use it is there, unsigned
        async with running_door(setup) as door:
            device = second.client.device_id
            await wait_until(lambda: door.core.trust_status()["trusted_devices"] == [phone.client.device_id],
                             "the door to trust the signed session only")
            assert device in door.core.trust_status()["untrusted_devices"]
            await refused_call(door, second, phone)

            # The owner verifies the second session (signs it): the door trusts it and answers it.
            await crosssigning.sign_and_upload_device(phone.client, identity, device)
            await wait_until(lambda: device in door.core.trust_status()["trusted_devices"],
                             "the door to see the signature", timeout=30)
            call_id = await second.call(setup.door.user_id)
            await second.wait_for("m.call.answer", lambda c: c["call_id"] == call_id, timeout=30)
            await second.hangup()
            await wait_until(lambda: door.core.state.value == "idle", "the call to end")

            # A new identity (what a password thief resetting the keys makes) stops everything, and says so.
            thief = crosssigning.Identity(setup.owner.user_id)
            await crosssigning.upload_identity(second.client, thief, setup.owner.password)
            await crosssigning.sign_and_upload_device(second.client, thief, device)
            await wait_until(lambda: door.core.trust_status()["identity_problem"], "the identity warning", timeout=30)
            assert door.core.trust_status()["trusted_devices"] == []
            await wait_until(lambda: notices(phone, "Security warning"), "the owner's warning")
            await refused_call(door, second, phone)
            # No session can undo it from the room; only the door can.
            await phone.client.room_send(setup.room_id, "m.room.message", {"msgtype": "m.text",
                                         "body": f"!trust {device}"}, ignore_unverified_devices=True)
            await wait_until(lambda: [n for n in notices(phone, "refused a call or command") if phone.client.device_id in n],
                             "the refusal of !trust")
            assert door.core.trust_status()["identity_problem"]
            reply = await control(setup, "trust --identity")
            assert reply["ok"] and reply["trust"]["identity_problem"] is None, reply
            assert device in reply["trust"]["trusted_devices"]
            await second.close()
        await phone.close()

    asyncio.run(main())
