"""The control socket: a real Unix socket, a real client, permissions 0660."""

import asyncio
import json
import logging
import os
import socket
import stat

import pytest

from intercom.service.control import MAX_REQUEST, ControlError, ControlServer, send_command


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


def _talk(path, data: bytes, *, close_after_send: bool = False) -> bytes:
    """Send raw bytes to the socket and read the reply: one line (or what came before the server closed)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(path))
        sock.sendall(data)
        if close_after_send:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while not received.endswith(b"\n") and (chunk := sock.recv(65536)):
            received += chunk
        return received


async def _echo(command):
    return {"ok": True, "echo": command}


def _recorder():
    """A handler that answers ``{"ok": true}``, and the commands it was given."""
    seen = []

    async def handler(command):
        seen.append(command)
        return {"ok": True}

    return seen, handler


async def _active(server, count):
    """Wait until the server serves ``count`` connections (it counts them once it has accepted them)."""
    for _ in range(1000):
        if server.active == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{server.active} connections served, not {count}")


async def _run_capturing(main, caplog):
    """Run ``main()`` with the loop's exception handler captured: whatever reaches it is returned."""
    reached = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: reached.append(context))
    with caplog.at_level(logging.DEBUG):
        result = await main()
    await asyncio.sleep(0)  # let closed connections' callbacks run
    return result, reached


def test_no_process_wide_umask_change(tmp_path, monkeypatch):
    """The socket gets its mode without os.umask (which would change the mode of files other threads create)."""
    path = tmp_path / "control.sock"

    def no_umask(mask):
        raise AssertionError("os.umask called")

    monkeypatch.setattr(os, "umask", no_umask)

    async def main():
        server = ControlServer(path, _echo)
        await server.start()
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
            names = sorted(p.name for p in tmp_path.iterdir())
            reply = await asyncio.to_thread(send_command, "status", path)
        finally:
            await server.close()
        return mode, names, reply

    mode, names, reply = asyncio.run(main())
    assert mode == 0o660
    assert names == ["control.sock"]  # the temporary name was renamed into place
    assert reply == {"ok": True, "echo": "status"}


def test_socket_left_from_a_crash_is_replaced(tmp_path):
    path = tmp_path / "control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()

    async def main():
        server = ControlServer(path, _echo)
        await server.start()
        try:
            return stat.S_IMODE(path.stat().st_mode), await asyncio.to_thread(send_command, "status", path)
        finally:
            await server.close()

    assert asyncio.run(main()) == (0o660, {"ok": True, "echo": "status"})


def _refused_then_served(path, request: bytes, caplog, **options):
    """Send ``request``, which the server refuses, then an ordinary ``status``: the refusal (decoded) and whatever
    reached the loop's exception handler."""
    seen, handler = _recorder()

    async def main():
        server = ControlServer(path, handler, **options)
        await server.start()
        try:
            refused = await asyncio.to_thread(_talk, path, request)
            after = await asyncio.to_thread(send_command, "status", path)
        finally:
            await server.close()
        return refused, after

    (refused, after), reached = asyncio.run(_run_capturing(main, caplog))
    assert after == {"ok": True}  # the server still serves
    assert seen == ["status"]  # the refused request never reached the handler
    return json.loads(refused), reached


@pytest.mark.parametrize("size", [MAX_REQUEST + 10, 70 * 1024, 1024 * 1024])
def test_request_over_the_limit_gets_an_error_reply_and_nothing_reaches_the_loop(tmp_path, caplog, size):
    reply, reached = _refused_then_served(tmp_path / "control.sock", b"s" * size + b"\n", caplog)
    assert reply["ok"] is False and "too long" in reply["error"]
    assert reached == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_request_without_newline_is_served_when_the_client_stops_sending(tmp_path):
    path = tmp_path / "control.sock"

    async def main():
        server = ControlServer(path, _echo)
        await server.start()
        try:
            return await asyncio.to_thread(_talk, path, b"status", close_after_send=True)
        finally:
            await server.close()

    assert json.loads(asyncio.run(main())) == {"ok": True, "echo": "status"}


def test_connections_beyond_the_limit_are_told_busy_and_closed(tmp_path, caplog):
    path = tmp_path / "control.sock"

    async def main():
        server = ControlServer(path, _echo, max_connections=3)
        await server.start()
        held = []
        try:
            for _ in range(3):  # open, sending nothing yet: each holds a place until it sends or times out
                held.append(await asyncio.open_unix_connection(str(path)))
            await _active(server, 3)
            busy = await asyncio.to_thread(send_command, "status", path)
            reader, writer = held.pop()
            writer.write(b"status\n")
            served = await reader.readline()
            writer.close()
            await _active(server, 2)
            after = await asyncio.to_thread(send_command, "status", path)  # a place is free again
        finally:
            for _, writer in held:
                writer.close()
            await server.close()
        return busy, served, after

    (busy, served, after), reached = asyncio.run(_run_capturing(main, caplog))
    assert busy["ok"] is False and busy["error"].startswith("busy")
    assert json.loads(served) == {"ok": True, "echo": "status"}
    assert after == {"ok": True, "echo": "status"}
    assert reached == []


def test_slow_client_is_cut_off_by_the_read_timeout(tmp_path, caplog):
    """A client that never finishes its line is answered with an error and closed, and frees its place."""
    reply, reached = _refused_then_served(tmp_path / "control.sock", b"sta", caplog,  # no newline, no end
                                          max_connections=1, read_timeout=0.2)
    assert reply["ok"] is False and "no request within 0.2 s" in reply["error"]
    assert reached == []


def test_default_limits():
    server = ControlServer("/nonexistent/control.sock", _echo)
    assert (server.max_connections, server.read_timeout) == (8, 5.0)
