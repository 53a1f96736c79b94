"""The control socket: a real Unix socket, a real client, permissions 0660."""

import asyncio
import stat

import pytest

from intercom.service.control import ControlError, ControlServer, send_command


def test_command_round_trip_and_permissions(tmp_path):
    path = tmp_path / "run" / "control.sock"
    seen = []

    async def handler(command):
        seen.append(command)
        if command == "boom":
            raise RuntimeError("broken")
        return {"ok": True, "echo": command}

    async def main():
        server = ControlServer(path, handler)
        await server.start()
        mode = stat.S_IMODE(path.stat().st_mode)
        replies = [await asyncio.to_thread(send_command, c, path) for c in ("status", "boom")]
        await server.close()
        return mode, replies

    mode, (status, boom) = asyncio.run(main())
    assert mode == 0o660
    assert status == {"ok": True, "echo": "status"}
    assert boom["ok"] is False and "broken" in boom["error"]
    assert seen == ["status", "boom"]
    assert not path.exists()


def test_client_says_clearly_when_the_service_is_not_running(tmp_path):
    with pytest.raises(ControlError, match="is the intercom service running"):
        send_command("status", tmp_path / "missing.sock")
