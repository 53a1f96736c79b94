"""The local control socket: ``intercom press`` and ``intercom status`` from an ssh session or a test.

One request per connection: a command word on one line; one JSON object back. The socket is a Unix stream socket
(mode 0660, so only root and the service's group can use it) in the service's runtime directory. Whatever a client
does, the door is not disturbed: a request line is at most :data:`MAX_REQUEST` bytes and must arrive within
:data:`READ_TIMEOUT`, and at most :data:`MAX_CONNECTIONS` connections are served at once (more are told "busy").
"""

from __future__ import annotations

import asyncio
import errno
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
#: The longest request line read; a longer one is answered with an error and the connection closed.
MAX_REQUEST = 256
#: Connections served at once; more are answered "busy" at once and closed.
MAX_CONNECTIONS = 8
#: How long a client has to send its request line (all of it: a client trickling bytes is bounded too).
READ_TIMEOUT = 5.0

Handler = Callable[[str], Awaitable[dict[str, Any]]]


class ControlError(IntercomError, ConnectionError):
    """The control socket could not be reached or answered nonsense."""


def default_socket_path() -> str:
    return os.environ.get("INTERCOM_CONTROL_SOCKET", DEFAULT_SOCKET)


class ControlServer:
    """Serves the control socket; ``handler(command)`` returns the reply."""

    def __init__(self, path: str | os.PathLike, handler: Handler, *, max_connections: int = MAX_CONNECTIONS,
                 read_timeout: float = READ_TIMEOUT) -> None:
        self.path = Path(path)
        self._handler = handler
        self._server: asyncio.AbstractServer | None = None
        self.max_connections, self.read_timeout = max_connections, read_timeout
        self.active = 0  # connections being served now
        self._serving: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Listen on ``path`` with mode 0660 from the first moment it exists there.

        The socket is bound under a temporary name in the same directory, given its mode, and renamed into place
        before it listens; the process's umask is left alone (other threads create files meanwhile)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and not self.path.is_socket():
            raise FileExistsError(errno.EEXIST, "exists and is not a socket", str(self.path))
        temporary = self.path.with_name(f".{self.path.name}.new")
        temporary.unlink(missing_ok=True)  # left over from a crash
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(temporary))
            os.chmod(temporary, 0o660)  # srw-rw----; nobody can connect before listen() anyway
            os.replace(temporary, self.path)  # over a socket left from a crash, atomically
            self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_REQUEST)
        except BaseException:
            sock.close()
            temporary.unlink(missing_ok=True)
            raise

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request, one reply; whatever the client does, nothing is raised into the event loop."""
        if self.active >= self.max_connections:
            log.warning("control socket busy: %d connections open, one more refused", self.active)
            self._reply_and_close(writer, {"ok": False, "error": f"busy: {self.active} control connections are "
                                                                 "open; try again in a few seconds"})
            return
        self.active += 1
        task = asyncio.current_task()
        if task is not None:
            self._serving.add(task)
        try:
            await self._serve_one(reader, writer)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        except asyncio.CancelledError:  # close(): a cancelled callback task would reach the loop's handler
            pass
        except Exception:  # never into the loop's exception handler
            log.exception("control connection failed")
        finally:
            self.active -= 1
            self._serving.discard(task)  # type: ignore[arg-type]
            writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), timeout=self.read_timeout)
        except asyncio.IncompleteReadError as exc:  # closed before a newline: the bytes sent are the request
            if not exc.partial:
                return
            line = exc.partial
        except asyncio.LimitOverrunError:
            writer.write(json.dumps({"ok": False, "error": f"request too long (over {MAX_REQUEST} bytes)"}).encode()
                         + b"\n")
            await asyncio.wait_for(self._discard_line(reader), timeout=self.read_timeout)
            return
        except asyncio.TimeoutError:
            self._reply_and_close(writer, {"ok": False, "error": f"no request within {self.read_timeout:g} s"})
            return
        command = line.decode("utf-8", "replace").strip()
        try:
            reply = await self._handler(command)
        except Exception as exc:  # the door keeps running whatever a command does
            log.exception("control command %r failed", command)
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        writer.write(json.dumps(reply).encode() + b"\n")
        await asyncio.wait_for(writer.drain(), timeout=self.read_timeout)

    @staticmethod
    async def _discard_line(reader: asyncio.StreamReader) -> None:
        """Read and drop the rest of an over-long request (up to its newline or the client's end), so that the
        client, still sending, is not reset before it reads the reply."""
        while chunk := await reader.read(65536):
            if b"\n" in chunk:
                return

    @staticmethod
    def _reply_and_close(writer: asyncio.StreamWriter, reply: dict[str, Any]) -> None:
        """A short reply without waiting for the client to read it (it fits the socket's buffer), then close."""
        try:
            writer.write(json.dumps(reply).encode() + b"\n")
        except ConnectionError:
            pass
        writer.close()

    async def close(self) -> None:
        """Stop listening, end the connections being served, and remove the socket."""
        if self._server is not None:
            self._server.close()
            serving = list(self._serving)
            for task in serving:
                task.cancel()
            await asyncio.gather(*serving, return_exceptions=True)
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
            try:
                sock.sendall(command.encode() + b"\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the service may have answered already (busy) and closed: its reply is still to be read
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
