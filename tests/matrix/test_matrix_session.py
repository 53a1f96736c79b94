"""The saved session and the state directory (intercom.matrix.session)."""

from __future__ import annotations

import json
import stat

from intercom.matrix import session
from intercom.matrix.session import Session

SESSION = Session("https://matrix.example.org", "@door:example.org", "DOORDEVICE", "syt_secret")


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_session_round_trip_is_private(tmp_path):
    state = tmp_path / "state"
    session.save_session(state, SESSION)
    assert session.load_session(state) == SESSION
    assert mode(state) == 0o700 and mode(state / "session.json") == 0o600
    assert "syt_secret" not in repr(SESSION)


def test_saving_again_replaces_the_file(tmp_path):
    session.save_session(tmp_path, SESSION)
    newer = Session(SESSION.homeserver, SESSION.user_id, "OTHERDEVICE", "syt_other")
    session.save_session(tmp_path, newer)
    assert session.load_session(tmp_path) == newer
    assert sorted(p.name for p in tmp_path.iterdir()) == ["session.json"]


def test_unusable_session_files_mean_logging_in_again(tmp_path):
    assert session.load_session(tmp_path) is None
    path = tmp_path / "session.json"
    for text in ("{", "[]", json.dumps({"user_id": "@door:x"}),
                 json.dumps({"homeserver": "h", "user_id": "u", "device_id": "", "access_token": "t"}),
                 json.dumps({"homeserver": "h", "user_id": "u", "device_id": 5, "access_token": "t"})):
        path.write_text(text)
        assert session.load_session(tmp_path) is None, text
    session.forget_session(tmp_path)
    assert not path.exists()
    session.forget_session(tmp_path)  # idempotent


def test_state_directories_are_tightened(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    crypto = session.crypto_dir(state)
    assert crypto == state / "crypto" and mode(state) == 0o700 and mode(crypto) == 0o700
    (crypto / "door.db").write_text("")
    (crypto / "door.db").chmod(0o644)
    session.make_private(state)
    assert mode(crypto / "door.db") == 0o600


def test_the_stores_key_is_random_private_and_kept(tmp_path):
    key = session.crypto_key(tmp_path)
    assert len(key) >= 40 and key != session.NIO_DEFAULT_PICKLE_KEY
    assert mode(tmp_path / "crypto.key") == 0o600
    assert session.crypto_key(tmp_path) == key
    assert session.crypto_key(tmp_path / "other") != key


def test_a_store_made_before_the_key_keeps_nios_default_and_says_how_to_change(tmp_path, caplog):
    crypto = session.crypto_dir(tmp_path)
    (crypto / "@door:example.org_DOOR.db").write_bytes(b"")
    assert session.crypto_key(tmp_path) == session.NIO_DEFAULT_PICKLE_KEY
    assert not (tmp_path / "crypto.key").exists()
    assert "default key" in caplog.text and "remove" in caplog.text
