"""Trust in the owner's devices: the rules (intercom.core.trust) and what the door does with them in an encrypted
room (only encrypted events from trusted sessions count; the owner is told about the others)."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings, strategies as st

from intercom.core import (
    DeviceKeys,
    CallEnded,
    Ignored,
    ObservedKeys,
    OpenDoor,
    OwnerKeysObserved,
    Pins,
    PrepareAnswer,
    RoomMembersChanged,
    SendNotice,
    TextMessageReceived,
    TrustRequested,
    TrustUpdated,
)
from intercom.core import trust
from intercom.core.door import DoorCore

from .helpers import DOOR, OWNER, ROOM, make_core, invite, of, place_call, sends, answer

PHONE = DeviceKeys(device_id="PHONE", ed25519="ed-phone", name="Element on Pixel", signed=True)
LAPTOP = DeviceKeys(device_id="LAPTOP", ed25519="ed-laptop", name="Element Desktop", signed=True)
THIEF = DeviceKeys(device_id="THIEF", ed25519="ed-thief", name="nio", signed=False)
CROSS = ObservedKeys(master_key="master-1", devices=(PHONE, LAPTOP))
PLAIN = ObservedKeys(master_key=None, devices=(dataclasses.replace(PHONE, signed=False),))


# --- the rules --------------------------------------------------------------------------------------------------

def test_first_use_with_cross_signing_pins_the_master_key_and_trusts_signed_devices():
    verdict = trust.assess(None, ObservedKeys(master_key="master-1", devices=(PHONE, THIEF)))
    assert verdict.pins.master_key == "master-1" and not verdict.pins.devices
    assert verdict.trusted == {"PHONE"}
    assert verdict.untrusted == {"THIEF": "nio"} and verdict.new_untrusted == ("THIEF",)
    assert verdict.identity_problem is None


def test_first_use_without_cross_signing_pins_the_devices_there():
    verdict = trust.assess(None, PLAIN)
    assert verdict.pins.devices == {"PHONE": "ed-phone"} and verdict.trusted == {"PHONE"}
    later = trust.assess(verdict.pins, dataclasses.replace(PLAIN, devices=(*PLAIN.devices, THIEF)))
    assert later.trusted == {"PHONE"} and later.new_untrusted == ("THIEF",)


def test_an_account_without_any_keys_yet_is_pinned_when_its_first_session_appears():
    """The owner installs the door before signing in anywhere: first use is the first session, not the empty
    account (else the owner's own phone would be a stranger)."""
    assert trust.assess(None, ObservedKeys(master_key=None)).pins is None
    core, actions = encrypted_core(ObservedKeys(master_key=None))
    assert not of(actions, TrustUpdated) and core.trust_status()["trusted_devices"] == []
    (update,) = of(core.handle(OwnerKeysObserved(keys=PLAIN), 1.0), TrustUpdated)
    assert update.trusted == {"PHONE"} and update.pins.devices == {"PHONE": "ed-phone"}


def test_a_new_unsigned_device_is_not_trusted_and_is_announced_once():
    pins = trust.assess(None, CROSS).pins
    first = trust.assess(pins, dataclasses.replace(CROSS, devices=(PHONE, LAPTOP, THIEF)))
    assert "THIEF" not in first.trusted and first.new_untrusted == ("THIEF",)
    again = trust.assess(first.pins, dataclasses.replace(CROSS, devices=(PHONE, LAPTOP, THIEF)))
    assert again.new_untrusted == () and again.untrusted == {"THIEF": "nio"}


def test_a_device_the_owner_signs_later_becomes_trusted():
    pins = trust.assess(None, dataclasses.replace(CROSS, devices=(PHONE, THIEF))).pins
    signed = trust.assess(pins, dataclasses.replace(CROSS, devices=(PHONE, dataclasses.replace(THIEF, signed=True))))
    assert signed.trusted == {"PHONE", "THIEF"}


def test_signed_by_another_master_key_is_an_identity_problem_and_trusts_nothing():
    pins = trust.assess(None, CROSS).pins
    verdict = trust.assess(pins, dataclasses.replace(CROSS, master_key="master-2"))
    assert verdict.identity_problem and "changed" in verdict.identity_problem
    assert verdict.trusted == frozenset()
    # It stays until confirmed on the door, even if the old key comes back.
    assert trust.assess(verdict.pins, CROSS).identity_problem == verdict.identity_problem


def test_a_vanished_master_key_or_changed_device_key_is_an_identity_problem():
    pins = trust.assess(None, CROSS).pins
    assert "disappeared" in trust.assess(pins, dataclasses.replace(CROSS, master_key=None)).identity_problem
    plain = trust.assess(None, PLAIN).pins
    forged = ObservedKeys(master_key=None, devices=(dataclasses.replace(PHONE, ed25519="ed-forged"),))
    assert "PHONE" in trust.assess(plain, forged).identity_problem


def test_accepting_the_identity_clears_the_problem_and_keeps_unchanged_pinned_devices():
    pins = trust.confirm_device(trust.assess(None, CROSS).pins, THIEF)
    changed = dataclasses.replace(CROSS, master_key="master-2", devices=(PHONE, THIEF))
    problem = trust.assess(pins, changed)
    assert problem.identity_problem
    accepted = trust.accept_identity(problem.pins, changed)
    assert accepted.master_key == "master-2" and accepted.identity_problem is None
    assert trust.assess(accepted, changed).trusted == {"PHONE", "THIEF"}


def test_cross_signing_set_up_later_is_adopted_only_when_a_pinned_device_signed_it():
    pins = trust.assess(None, PLAIN).pins
    new_master = ObservedKeys(master_key="master-1", devices=(PHONE, THIEF))
    pending = trust.assess(pins, new_master)
    assert pending.identity_pending and pending.pins.master_key is None
    assert pending.trusted == {"PHONE"}  # the pinned device keeps working, signed THIEF is not trusted
    adopted = trust.assess(pins, dataclasses.replace(new_master, master_signed_by=frozenset({"PHONE"})))
    assert adopted.pins.master_key == "master-1" and not adopted.identity_pending


def test_pins_survive_json_and_reject_junk():
    pins = trust.assess(None, dataclasses.replace(CROSS, devices=(PHONE, THIEF))).pins
    pins = trust.confirm_device(pins, LAPTOP)
    assert Pins.from_json(pins.to_json()) == pins
    for junk in (None, [], {"version": 2}, {"version": 1, "devices": []},
                 {"version": 1, "master_key": 5, "devices": {}, "announced": []}):
        try:
            Pins.from_json(junk)
        except ValueError:
            continue
        raise AssertionError(f"accepted {junk!r}")


devices = st.builds(DeviceKeys, device_id=st.sampled_from(["A", "B", "C", "D"]),
                    ed25519=st.sampled_from(["k1", "k2"]), signed=st.booleans())
observations = st.builds(ObservedKeys, master_key=st.sampled_from([None, "m1", "m2"]),
                         devices=st.lists(devices, max_size=4, unique_by=lambda d: d.device_id).map(tuple),
                         master_signed_by=st.frozensets(st.sampled_from(["A", "B"])))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(observations, st.sampled_from(["observe", "confirm", "identity"]),
                          st.sampled_from(["A", "B", "C", "D"])), min_size=1, max_size=12))
def test_trust_only_follows_a_pin_or_a_signature_under_the_pinned_master(steps):
    pins = None
    for observed, what, device_id in steps:
        if what == "confirm" and pins is not None:
            device = next((d for d in observed.devices if d.device_id == device_id), None)
            if device is not None:
                pins = trust.confirm_device(pins, device)
        elif what == "identity":
            pins = trust.accept_identity(pins, observed)
        verdict = trust.assess(pins, observed)
        if verdict.pins is None:  # no keys at all yet: first use is still to come
            assert pins is None and not observed.devices and verdict.trusted == frozenset()
            continue
        pins = verdict.pins
        for d in observed.devices:
            if d.device_id in verdict.trusted:
                assert verdict.identity_problem is None
                assert pins.devices.get(d.device_id) == d.ed25519 or (
                    d.signed and observed.master_key is not None and observed.master_key == pins.master_key)
        assert verdict.trusted <= {d.device_id for d in observed.devices}
        assert not (verdict.trusted & set(verdict.untrusted))
        if pins.master_key is not None and observed.master_key != pins.master_key:
            assert verdict.trusted == frozenset()


# --- the door in an encrypted room -------------------------------------------------------------------------------

def encrypted_core(keys: ObservedKeys = CROSS, pins: Pins | None = None) -> tuple[DoorCore, list]:
    core = make_core(ready=True, pins=pins)
    core.handle(RoomMembersChanged(room_id=ROOM, joined=frozenset({DOOR, OWNER}), encrypted=True), 0.0)
    return core, core.handle(OwnerKeysObserved(keys=keys), 0.0)


def from_device(event, device_id: str | None = "PHONE", encrypted: bool = True):
    return dataclasses.replace(event, encrypted=encrypted, device_id=device_id)


def command(body: str, device_id: str | None = "PHONE", encrypted: bool = True, age_ms: int = 100):
    return TextMessageReceived(room_id=ROOM, sender=OWNER, body=body, age_ms=age_ms, event_id=None,
                               encrypted=encrypted, device_id=device_id)


def texts(actions) -> list[str]:
    return [a.text for a in of(actions, SendNotice)]


def test_the_first_keys_pin_and_tell_the_adapter_whom_to_give_keys():
    core, actions = encrypted_core(dataclasses.replace(CROSS, devices=(PHONE, THIEF)))
    (update,) = of(actions, TrustUpdated)
    assert update.trusted == update.key_holders == {"PHONE"} and update.untrusted == {"THIEF"}
    assert update.pins.master_key == "master-1"
    (notice,) = texts(actions)
    assert "THIEF" in notice and "intercom trust THIEF" in notice and "!trust THIEF" in notice
    assert core.trust_status()["untrusted_devices"] == {"THIEF": "nio"}


def test_a_trusted_sessions_call_is_answered():
    core, _ = encrypted_core()
    assert of(core.handle(from_device(invite("c1")), 1.0), PrepareAnswer)


def test_an_untrusted_sessions_call_is_refused_with_a_reason_and_the_owner_is_told():
    core, _ = encrypted_core(dataclasses.replace(CROSS, devices=(PHONE, THIEF)))
    actions = core.handle(from_device(invite("c1"), "THIEF"), 1.0)
    assert not of(actions, PrepareAnswer)
    assert sends(actions, "m.call.reject")
    (notice,) = texts(actions)
    assert "refused" in notice and "does not trust the session THIEF" in notice
    # A second try soon after is refused again, without another notice.
    again = core.handle(from_device(invite("c2"), "THIEF"), 5.0)
    assert sends(again, "m.call.reject") and not texts(again)


def test_plaintext_unknown_device_and_keys_not_read_are_all_refused():
    core, _ = encrypted_core()
    for event in (from_device(invite("p1"), encrypted=False, device_id=None), from_device(invite("p2"), None),
                  from_device(invite("p3"), "NOSUCH")):
        actions = core.handle(event, 1.0)
        assert not of(actions, PrepareAnswer) and sends(actions, "m.call.reject"), event
    fresh = make_core(ready=True)
    fresh.handle(RoomMembersChanged(room_id=ROOM, joined=frozenset({DOOR, OWNER}), encrypted=True), 0.0)
    actions = fresh.handle(from_device(invite("k1")), 1.0)
    assert not of(actions, PrepareAnswer) and sends(actions, "m.call.reject")
    assert any("not read your device keys" in t for t in texts(actions))


def test_in_an_unencrypted_room_the_account_is_enough_and_status_warns():
    core = make_core(ready=True)
    assert of(core.handle(invite("c1"), 1.0), PrepareAnswer)
    assert "not end-to-end encrypted" in core.trust_status()["warning"]


def test_require_encryption_makes_an_unencrypted_room_unusable():
    core = make_core(ready=False)
    core.settings = dataclasses.replace(core.settings, require_encryption=True)
    from intercom.core import HomeserverConnectionChanged
    core.handle(HomeserverConnectionChanged(online=True), 0.0)
    core.handle(RoomMembersChanged(room_id=ROOM, joined=frozenset({DOOR, OWNER})), 0.0)
    assert "require encryption" in core.room_problem()
    assert not of(core.handle(invite("c1"), 1.0), PrepareAnswer)
    core.handle(RoomMembersChanged(room_id=ROOM, joined=frozenset({DOOR, OWNER}), encrypted=True), 2.0)
    assert core.room_problem() is None


def open_after_ring(core: DoorCore, device_id: str | None = "PHONE", encrypted: bool = True, now: float = 3.0):
    call_id, _ = place_call(core, 1.0)
    return core.handle(command("!open", device_id, encrypted), now)


def test_open_from_a_trusted_session_during_a_ring_opens():
    core, _ = encrypted_core()
    assert of(open_after_ring(core), OpenDoor)


def test_plaintext_open_in_an_encrypted_room_is_refused_and_said_so():
    core, _ = encrypted_core()
    actions = open_after_ring(core, device_id=None, encrypted=False)
    assert not of(actions, OpenDoor)
    assert any("unencrypted" in t for t in texts(actions))


def test_open_from_an_untrusted_session_is_refused_until_it_is_confirmed_on_the_door():
    core, _ = encrypted_core(dataclasses.replace(CROSS, devices=(PHONE, THIEF)))
    actions = open_after_ring(core, "THIEF")
    assert not of(actions, OpenDoor) and any("THIEF" in t for t in texts(actions))
    confirmed = core.handle(TrustRequested(device_id="THIEF"), 4.0)
    (update,) = of(confirmed, TrustUpdated)
    assert "THIEF" in update.trusted and update.pins.devices == {"THIEF": "ed-thief"}
    assert any("now trusts" in t for t in texts(confirmed))
    assert of(core.handle(command("!open", "THIEF"), 5.0), OpenDoor)


def test_trust_command_from_a_trusted_session_confirms_another():
    core, _ = encrypted_core(dataclasses.replace(CROSS, devices=(PHONE, THIEF)))
    actions = core.handle(command("!trust THIEF", "PHONE"), 1.0)
    assert of(actions, TrustUpdated) and "THIEF" in core.trust_status()["trusted_devices"]
    # An untrusted session cannot vouch for itself or another.
    core2, _ = encrypted_core(dataclasses.replace(CROSS, devices=(PHONE, THIEF)))
    assert not of(core2.handle(command("!trust THIEF", "THIEF"), 1.0), TrustUpdated)


def test_a_changed_identity_stops_everything_until_confirmed_on_the_door():
    core, _ = encrypted_core()
    call_actions = core.handle(from_device(invite("c1")), 1.0)
    assert of(call_actions, PrepareAnswer)
    changed = dataclasses.replace(CROSS, master_key="master-2")
    actions = core.handle(OwnerKeysObserved(keys=changed), 2.0)
    assert any("Security warning" in t and "intercom trust --identity" in t for t in texts(actions))
    assert of(actions, CallEnded) and core.state.value == "idle", "the call in progress ends"
    (update,) = of(actions, TrustUpdated)
    assert update.trusted == frozenset() and update.key_holders == {"PHONE", "LAPTOP"}
    assert not of(core.handle(from_device(invite("c2")), 3.0), PrepareAnswer)
    # A trusted session's !trust cannot undo it; the door can.
    assert not of(core.handle(command("!trust PHONE"), 4.0), TrustUpdated)
    assert of(core.handle(TrustRequested(identity=True), 5.0), TrustUpdated)
    assert of(core.handle(from_device(invite("c3")), 6.0), PrepareAnswer)


def test_an_identity_problem_pinned_before_a_restart_stays():
    pins = trust.assess(trust.assess(None, CROSS).pins, dataclasses.replace(CROSS, master_key="m2")).pins
    core, actions = encrypted_core(CROSS, pins=pins)
    assert core.trust_status()["identity_problem"]
    assert not of(core.handle(from_device(invite("c1")), 1.0), PrepareAnswer)


def test_answer_to_the_doors_call_counts_only_from_a_trusted_session():
    core, _ = encrypted_core(dataclasses.replace(CROSS, devices=(PHONE, THIEF)))
    call_id, _ = place_call(core, 1.0)
    ignored = core.handle(from_device(answer(call_id), "THIEF"), 2.0)
    assert any("not from a session the door trusts" in a.reason for a in of(ignored, Ignored))
    assert core.state.value == "ringing"
    core.handle(from_device(answer(call_id), "PHONE"), 3.0)
    assert core.state.value != "ringing"


def test_trust_requests_that_cannot_be_done_say_why():
    core = make_core(ready=True)
    (ignored,) = of(core.handle(TrustRequested(device_id="PHONE"), 1.0), Ignored)
    assert "not read" in ignored.reason
    core, _ = encrypted_core()
    for device_id, why in (("NOSUCH", "no session NOSUCH"), ("PHONE", "trusted already"), ("bad id!", "device ID")):
        (ignored,) = of(core.handle(TrustRequested(device_id=device_id), 1.0), Ignored)
        assert why in ignored.reason
