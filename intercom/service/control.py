"""The local control socket: ``intercom press`` and ``intercom status`` from an ssh session or a test.

One request per connection: a command word on one line; one JSON object back. The socket is a Unix stream socket
(mode 0660, so only root and the service's group can use it) in the service's runtime directory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from intercom.errors import IntercomError

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "/run/intercom/control.sock"
MAX_REQUEST = 256

Handler = Callable[[str], Awaitable[dict[str, Any]]]


class ControlError(IntercomError, ConnectionError):
    """The control socket could not be reached or answered nonsense."""


def default_socket_path() -> str:
    return os.environ.get("INTERCOM_CONTROL_SOCKET", DEFAULT_SOCKET)


class ControlServer:
    """Serves the control socket; ``handler(command)`` returns the reply."""

    def __init__(self, path: str | os.PathLike, handler: Handler) -> None:
        self.path = Path(path)
        self._handler = handler
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_socket():
            self.path.unlink()  # left over from a crash; systemd's RuntimeDirectory normally clears it
        old = os.umask(0o117)  # srw-rw----
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        finally:
            os.umask(old)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=5)
            command = line[:MAX_REQUEST].decode("utf-8", "replace").strip()
            try:
                reply = await self._handler(command)
            except Exception as exc:  # the door keeps running whatever a command does
                log.exception("control command %r failed", command)
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def send_command(command: str, path: str | os.PathLike | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """Send one command to a running service and return its reply (blocking; for the CLI)."""
    path = str(path or default_socket_path())
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(command.encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except FileNotFoundError:
        raise ControlError(f"{path} does not exist: is the intercom service running? (systemctl status intercom)")
    except PermissionError:
        raise ControlError(f"no permission to use {path}: run as root or as a member of the service's group")
    except OSError as exc:
        raise ControlError(f"could not talk to the intercom service at {path}: {exc}")
    try:
        return json.loads(data)
    except ValueError:
        raise ControlError(f"the service at {path} answered something that is not JSON: {data[:100]!r}")
