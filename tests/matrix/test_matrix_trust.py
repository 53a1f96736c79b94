"""The adapter's checks of the residents' keys (intercom.matrix.trust): every signature verified, forgeries left
out, pins kept privately and durably, each resident's apart."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from intercom.core import Pins
from intercom.matrix.trust import load_household_pins, load_pins, pins_file, read_keys, save_pins, signed_by
from intercom_dev.testbed.crosssigning import Identity, Signer, device_keys

OWNER = "@owner:example.org"


def answer(identity: Identity | None, *devices: dict, master: dict | None = None, ssk: dict | None = None) -> dict:
    body: dict = {"device_keys": {OWNER: {d["device_id"]: d for d in devices}}}
    if identity is not None:
        body["master_keys"] = {OWNER: master or identity.master_key}
        body["self_signing_keys"] = {OWNER: ssk or identity.self_signing_key}
    return body


def test_a_device_signed_through_the_chain_is_signed_and_others_are_not():
    identity = Identity(OWNER)
    phone = identity.sign_device(device_keys(OWNER, "PHONE", Signer(), "curve-phone", "Pixel"))
    stray = device_keys(OWNER, "STRAY", Signer(), "curve-stray")
    observed, verified = read_keys(answer(identity, phone, stray), OWNER)
    assert observed.master_key == identity.master.public
    assert {d.device_id: d.signed for d in observed.devices} == {"PHONE": True, "STRAY": False}
    assert observed.devices[0].name == "Pixel"
    assert verified["PHONE"][1] == "curve-phone"


def test_a_self_signing_key_not_signed_by_the_master_signs_nothing():
    identity, impostor = Identity(OWNER), Identity(OWNER)
    phone = impostor.sign_device(device_keys(OWNER, "PHONE", Signer(), "curve"))
    observed, _ = read_keys(answer(identity, phone, ssk=impostor.self_signing_key), OWNER)
    assert observed.master_key == identity.master.public
    assert not observed.devices[0].signed


def test_a_device_not_signed_by_its_own_key_is_left_out():
    key, other = Signer(), Signer()
    forged = device_keys(OWNER, "PHONE", key, "curve")
    forged["keys"]["ed25519:PHONE"] = other.public  # the server swapped the key
    observed, verified = read_keys(answer(None, forged), OWNER)
    assert observed.devices == () and verified == {}


def test_a_device_claiming_another_user_or_id_is_left_out():
    entry = device_keys("@mallory:example.org", "PHONE", Signer(), "curve")
    renamed = device_keys(OWNER, "OTHER", Signer(), "curve")
    body = {"device_keys": {OWNER: {"PHONE": entry, "PHONE2": renamed}}}
    assert read_keys(body, OWNER)[0].devices == ()


def test_device_signatures_on_the_master_key_are_found():
    identity, key = Identity(OWNER), Signer()
    phone = device_keys(OWNER, "PHONE", key, "curve")
    master = key.sign(identity.master_key, OWNER, "ed25519:PHONE")
    observed, _ = read_keys(answer(identity, phone, master=master), OWNER)
    assert observed.master_signed_by == {"PHONE"}


def test_junk_answers_give_nothing_and_never_raise():
    for body in (None, [], {"device_keys": []}, {"device_keys": {OWNER: {"X": "junk"}}},
                 {"master_keys": {OWNER: {"user_id": OWNER, "usage": ["master"], "keys": {"a": 1, "b": 2}}}},
                 {"device_keys": {OWNER: {"X": {"user_id": OWNER, "device_id": "X", "keys": {"ed25519:X": "!!"},
                                               "signatures": {OWNER: {"ed25519:X": "!!"}}}}}}):
        observed, verified = read_keys(body, OWNER)
        assert observed.master_key is None and observed.devices == () and verified == {}
    assert not signed_by({"signatures": {OWNER: {"ed25519:X": "bad"}}}, OWNER, "ed25519:X", "also bad")


def test_pins_are_written_privately_and_read_back(tmp_path: Path):
    pins = Pins(master_key="m", devices={"PHONE": "k"}, announced=frozenset({"X"}))
    save_pins(tmp_path, pins)
    path = tmp_path / "trust.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_pins(tmp_path) == pins
    assert load_pins(tmp_path / "none") is None


def test_a_damaged_pins_file_is_kept_aside_and_trusts_nothing(tmp_path: Path):
    (tmp_path / "trust.json").write_text(json.dumps({"version": 1, "devices": "junk"}))
    pins = load_pins(tmp_path)
    assert pins is not None and pins.identity_problem and "damaged" in pins.identity_problem
    assert (tmp_path / "trust.json.damaged").exists() and not (tmp_path / "trust.json").exists()


# --- a household: each resident's pins apart ------------------------------------------------------------------------

ALICE, BOB, CAROL = "@alice:example.org", "@bob:example.org", "@carol:example.org"


def pins_of(tag: str) -> Pins:
    return Pins(master_key=f"master-{tag}", devices={f"PHONE-{tag}": f"key-{tag}"})


def test_each_residents_pins_go_to_their_own_file_and_come_back_apart(tmp_path: Path):
    first = save_pins(tmp_path, pins_of("a"), ALICE, first=True)
    second = save_pins(tmp_path, pins_of("b"), BOB, first=False)
    assert first == tmp_path / "trust.json" and second == pins_file(tmp_path, BOB) != first
    assert second.name.startswith("trust-") and len(second.stem) == len("trust-") + 16
    assert json.loads(first.read_text())["user_id"] == ALICE and json.loads(second.read_text())["user_id"] == BOB
    assert {stat.S_IMODE(p.stat().st_mode) for p in (first, second)} == {0o600}
    assert load_household_pins(tmp_path, [ALICE, BOB, CAROL]) == {ALICE: pins_of("a"), BOB: pins_of("b"), CAROL: None}


def test_a_legacy_trust_file_is_the_first_residents_and_is_named_when_written_again(tmp_path: Path):
    (tmp_path / "trust.json").write_text(json.dumps(pins_of("old").to_json()))  # no user_id: before households
    assert load_household_pins(tmp_path, [ALICE, BOB]) == {ALICE: pins_of("old"), BOB: None}
    assert load_household_pins(tmp_path, [BOB, ALICE]) == {BOB: pins_of("old"), ALICE: None}  # whoever is first
    assert save_pins(tmp_path, pins_of("a"), ALICE, first=True) == tmp_path / "trust.json"
    assert json.loads((tmp_path / "trust.json").read_text())["user_id"] == ALICE


def test_a_new_order_of_the_residents_never_hands_one_residents_pins_to_another(tmp_path: Path):
    save_pins(tmp_path, pins_of("a"), ALICE, first=True)  # trust.json, naming Alice
    # Bob is first now: trust.json is still Alice's, so Bob's pins go to his own file and stay there.
    assert load_household_pins(tmp_path, [BOB, ALICE]) == {BOB: None, ALICE: pins_of("a")}
    assert save_pins(tmp_path, pins_of("b"), BOB, first=True) == pins_file(tmp_path, BOB)
    assert save_pins(tmp_path, pins_of("a2"), ALICE, first=False) == tmp_path / "trust.json"
    assert load_household_pins(tmp_path, [BOB, ALICE]) == {BOB: pins_of("b"), ALICE: pins_of("a2")}


def test_damaged_household_pins_are_kept_aside_and_trust_nothing(tmp_path: Path):
    pins_file(tmp_path, BOB).write_text("{not json")
    save_pins(tmp_path, pins_of("c"), CAROL, first=False)
    pins_file(tmp_path, CAROL).replace(pins_file(tmp_path, ALICE))  # Carol's pins under Alice's name
    (tmp_path / "trust.json").write_text("junk")
    loaded = load_household_pins(tmp_path, [ALICE, BOB, CAROL])
    assert all(p is not None and p.identity_problem for p in (loaded[ALICE], loaded[BOB]))
    # trust.json could have been anyone's: the first resident without a file of their own gets its problem.
    assert loaded[CAROL] is not None and loaded[CAROL].identity_problem
    assert {p.name for p in tmp_path.iterdir()} == {
        "trust.json.damaged", pins_file(tmp_path, ALICE).name + ".damaged", pins_file(tmp_path, BOB).name + ".damaged"}
