"""The local test homeserver (intercom_dev.testbed.synapse) against a real Synapse.

Most tests share the session's ``homeserver``; only the stop and command-line tests start servers of their own,
because they end them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
from nio import AsyncClient, LoginResponse, SyncResponse

from intercom_dev.testbed import synapse
from intercom_dev.testbed.synapse import Homeserver, MatrixAPIError, SynapseInstallError

from ..support import TURN_URIS


# -- without a server ----------------------------------------------------------------------------------------------


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INTERCOM_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert synapse.cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("INTERCOM_CACHE")
    assert synapse.cache_dir() == tmp_path / "xdg" / "intercom"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert synapse.cache_dir() == tmp_path / "home" / ".cache" / "intercom"


def test_a_failed_install_explains_itself_and_leaves_no_stamp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What the fixtures turn into a failure when the package index cannot be reached (simulated: venv fails)."""
    monkeypatch.setattr(sys, "executable", "false")
    with pytest.raises(SynapseInstallError, match="package index"):
        synapse.ensure_synapse(tmp_path)
    assert not (tmp_path / "synapse-venv" / ".intercom-synapse").exists()


# -- against the session's homeserver -----------------------------------------------------------------------------

@pytest.mark.integration
def test_server_answers_versions_on_loopback(homeserver: Homeserver) -> None:
    versions = homeserver.api("GET", "/_matrix/client/versions")
    assert any(v.startswith("v1.") for v in versions["versions"]), versions
    assert homeserver.url == f"http://127.0.0.1:{homeserver.port}"
    assert homeserver.server_name == "localhost"
    assert homeserver.pid is not None
    assert (homeserver.data_dir / "homeserver.log").exists()


@pytest.mark.integration
def test_registered_user_logs_in_with_nio_and_syncs(homeserver: Homeserver, matrix_users, tmp_path: Path) -> None:
    user = matrix_users("door")
    owner = matrix_users("owner")
    room_id = homeserver.create_dm_room(owner.access_token, user.user_id)

    async def login_and_sync() -> SyncResponse:
        client = AsyncClient(user.homeserver_url, user.user_id, store_path=str(tmp_path))
        try:
            login = await client.login(user.password, device_name="integration test")
            assert isinstance(login, LoginResponse), login
            sync = await client.sync(timeout=0)
            assert isinstance(sync, SyncResponse), sync
            return sync
        finally:
            await client.close()

    sync = asyncio.run(login_and_sync())
    assert room_id in sync.rooms.invite


@pytest.mark.integration
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_dm_room_has_two_members_after_the_door_joins(homeserver: Homeserver, matrix_users, encrypted: bool) -> None:
    owner, door = matrix_users("owner"), matrix_users("door")
    room_id = homeserver.create_dm_room(owner.access_token, door.user_id, encrypted=encrypted)
    homeserver.join_room(door.access_token, room_id)

    room = urllib.parse.quote(room_id, safe="")
    members = homeserver.api("GET", f"/_matrix/client/v3/rooms/{room}/joined_members", token=owner.access_token)
    assert set(members["joined"]) == {owner.user_id, door.user_id}
    encryption_path = f"/_matrix/client/v3/rooms/{room}/state/m.room.encryption/"
    if encrypted:
        assert homeserver.api("GET", encryption_path, token=door.access_token) == {"algorithm": "m.megolm.v1.aes-sha2"}
    else:
        with pytest.raises(MatrixAPIError) as err:
            homeserver.api("GET", encryption_path, token=door.access_token)
        assert err.value.status == 404


@pytest.mark.integration
def test_turn_homeserver_hands_out_coturn_style_credentials(turn_homeserver: Homeserver, matrix_users) -> None:
    user = matrix_users("door", on=turn_homeserver)
    before = time.time()
    turn = turn_homeserver.api("GET", "/_matrix/client/v3/voip/turnServer", token=user.access_token)

    assert turn["uris"] == turn_homeserver.turn_uris == TURN_URIS  # as configured, in that order
    assert turn["ttl"] == 3600
    expiry, mxid = turn["username"].split(":", 1)
    assert mxid == user.user_id
    assert before + 3600 - 5 <= int(expiry) <= time.time() + 3600 + 5
    # coturn's use-auth-secret checks exactly this: base64(HMAC-SHA1(secret, username)).
    expected = hmac.new(turn_homeserver.turn_shared_secret.encode(), turn["username"].encode(), hashlib.sha1).digest()
    assert turn["password"] == base64.b64encode(expected).decode()


@pytest.mark.integration
def test_plain_homeserver_has_no_turn(homeserver: Homeserver, matrix_users) -> None:
    user = matrix_users("door")
    assert homeserver.api("GET", "/_matrix/client/v3/voip/turnServer", token=user.access_token) == {}


@pytest.mark.integration
def test_restart_keeps_users_and_port(homeserver: Homeserver, matrix_users) -> None:
    user = matrix_users("door")
    port, pid = homeserver.port, homeserver.pid

    homeserver.restart()

    assert homeserver.port == port and homeserver.pid not in (None, pid)
    whoami = homeserver.api("GET", "/_matrix/client/v3/account/whoami", token=user.access_token)
    assert whoami["user_id"] == user.user_id and whoami["device_id"] == user.device_id
    login = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user.localpart}, "password": user.password}
    assert homeserver.api("POST", "/_matrix/client/v3/login", login)["user_id"] == user.user_id


# -- servers of their own --------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_stop_ends_the_process_and_closes_the_port(synapse_python: Path, tmp_path: Path) -> None:
    hs = Homeserver(tmp_path, synapse_python=synapse_python).start()
    pid, port = hs.pid, hs.port
    assert pid is not None and synapse.port_open(port)

    hs.stop()

    assert not synapse.pid_alive(pid)
    assert not synapse.port_open(port)
    assert hs.pid is None and not (tmp_path / synapse.PID_FILE).exists()
    hs.stop()  # Idempotent.


@pytest.mark.integration
def test_command_line_starts_a_detached_server_that_later_commands_find(synapse_python: Path, tmp_path: Path) -> None:
    def cli(*args: str) -> tuple[int, dict]:
        result = subprocess.run(
            [sys.executable, "-m", "intercom_dev.testbed.synapse", *args, "--data-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=90, env=os.environ,
        )
        assert "Traceback" not in result.stderr, result.stderr
        return result.returncode, json.loads(result.stdout) if result.stdout else {}

    try:
        code, started = cli("start")
        assert code == 0 and started["url"].startswith("http://127.0.0.1:"), started
        assert cli("status") == (0, {"running": True, "url": started["url"], "pid": started["pid"], "data_dir": str(tmp_path)})
        code, user = cli("register", "alice", "secret-pw")
        assert code == 0 and user["user_id"] == "@alice:localhost" and user["access_token"]
        assert cli("stop") == (0, {"stopped": started["pid"]})
        assert not synapse.pid_alive(started["pid"])
        assert cli("status")[0] == 1
    finally:
        Homeserver(tmp_path).stop()  # Whatever happened above, leave no server behind.
